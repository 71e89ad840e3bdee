//! Latency samples and their summary (mean and percentiles, not only means).

use std::time::Duration;

/// Per-operation latencies, in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<u64>);

/// What a run of one operation came to.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean_ns: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    /// Bytes per operation (0 for operations that move none).
    pub bytes: u64,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_nanos() as u64);
    }

    pub fn summary(&self, bytes: u64) -> Summary {
        let mut v = self.0.clone();
        v.sort_unstable();
        let pct = |p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[i] as f64
        };
        Summary {
            count: v.len(),
            mean_ns: if v.is_empty() {
                0.0
            } else {
                v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
            },
            p50_ns: pct(0.50),
            p99_ns: pct(0.99),
            p999_ns: pct(0.999),
            bytes,
        }
    }
}

impl Summary {
    /// GB/s (10^9 bytes per second) at the mean.
    pub fn gbps(&self) -> f64 {
        if self.mean_ns == 0.0 {
            0.0
        } else {
            self.bytes as f64 / self.mean_ns
        }
    }

    /// GB/s at the median (robust to the preemptions of a shared machine).
    pub fn gbps_p50(&self) -> f64 {
        if self.p50_ns == 0.0 {
            0.0
        } else {
            self.bytes as f64 / self.p50_ns
        }
    }

    /// Operations per second at the mean.
    pub fn ops(&self) -> f64 {
        if self.mean_ns == 0.0 {
            0.0
        } else {
            1e9 / self.mean_ns
        }
    }
}

/// A duration in the unit that reads best.
pub fn human_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A byte count with a binary unit.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, unit) in UNITS {
        if b >= unit && b % unit == 0 {
            return format!("{} {name}", b / unit);
        }
    }
    format!("{b} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_exact_on_known_data() {
        let s = Samples((1..=1000).collect());
        let m = s.summary(10);
        assert_eq!(m.count, 1000);
        assert_eq!(m.p50_ns, 500.0);
        assert_eq!(m.p99_ns, 990.0);
        assert_eq!(m.p999_ns, 999.0);
        assert!((m.mean_ns - 500.5).abs() < 1e-9);
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_ns(1500.0), "1.5 µs");
    }
}
