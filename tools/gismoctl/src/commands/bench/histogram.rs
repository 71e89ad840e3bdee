//! Latency histogram: log-linear buckets (16 per power of two, ~4% wide), mergeable across
//! processes, small enough to send as one JSON line.

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two.
const SUB: u64 = 16;
/// Buckets: values up to 2^40 ns (~18 minutes).
const BUCKETS: usize = 41 * SUB as usize;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
    /// Sum of every recorded value, for the mean (exact, unlike the buckets).
    sum_ns: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            sum_ns: 0,
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let log = 63 - u64::from(ns.leading_zeros()); // >= 4
    let sub = (ns >> (log - 4)) & (SUB - 1);
    ((log - 3) * SUB + sub).min(BUCKETS as u64 - 1) as usize
}

/// The smallest value in bucket `b` (what percentiles report: a lower bound within ~4%).
fn value_of(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let log = b / SUB + 3;
    (1 << log) | (b % SUB) << (log - 4)
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket_of(ns)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// The mean in ns; 0 when empty.
    pub fn mean(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum_ns as f64 / n as f64,
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) in ns; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value_of(b);
            }
        }
        value_of(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for ns in [0u64, 1, 15, 16, 17, 100, 1_000, 65_537, 1 << 30] {
            let b = bucket_of(ns);
            assert!(b >= last);
            last = b;
            let v = value_of(b);
            assert!(v <= ns && ns - v <= ns / 16 + 1, "{ns} -> {v}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for ns in 1..=1000 {
            h.record(ns);
        }
        let p50 = h.quantile(0.5);
        assert!((470..=500).contains(&p50), "{p50}");
        assert!(h.quantile(0.999) >= 940);
        assert_eq!(Histogram::default().quantile(0.5), 0);
        assert!((h.mean() - 500.5).abs() < 1e-9);
        let mut merged = Histogram::default();
        merged.merge(&h);
        merged.merge(&h);
        assert_eq!(merged.count(), 2000);
        assert!((merged.mean() - 500.5).abs() < 1e-9);
    }
}
