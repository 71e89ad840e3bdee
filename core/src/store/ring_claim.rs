//! One consumer per host event ring.
//!
//! A host's event ring (`events.rs`) is single-consumer: two runners popping it would each see
//! only some of the events and race on its `head`. Two runners share a ring when they share a
//! host identity — two raylets on one machine without distinct `GISMO_HOST`. So a runner
//! *claims* its host's ring before consuming it ([`Store::claim_event_ring`]):
//!
//! - The host entry's `consumer` word names the claiming client as `epoch:32 | (index + 1):32`
//!   (0 = unclaimed; the `+ 1` keeps client 0 at epoch 0 distinct from "none"). It is set by CAS.
//! - A claim held by a live client is refused with [`RingClaimError::Claimed`], naming the host,
//!   the holder and `GISMO_HOST`.
//! - A claim whose client is gone is taken over by CAS: its table entry is no longer active at
//!   that epoch (freed, reaped, reclaimed, quarantined), or — on this host and pid namespace —
//!   its process no longer runs (pid and start time), or — otherwise — this process has seen its
//!   heartbeat unchanged for the lease (a fresh claimant watches a full lease first). A crashed
//!   runner therefore never blocks its successor, and needs no reaper first.
//! - A clean stop releases the claim ([`Store::release_event_ring`]); a CAS from the holder's own
//!   value, so a claim already taken over is left alone.
//!
//! The claiming client must heartbeat (the runner loop does), or another host would judge it dead
//! after the lease.

#[cfg(not(loom))]
use crate::store::clients::{status, HostIdentity};
use crate::store::events::HostEntry;
use crate::sync::Ordering;

/// A client table entry at one epoch: who holds a ring's consumer claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerId {
    pub index: usize,
    pub epoch: u32,
}

impl ConsumerId {
    fn pack(self) -> u64 {
        u64::from(self.epoch) << 32 | (self.index as u64 + 1)
    }

    fn unpack(w: u64) -> Option<ConsumerId> {
        let low = w as u32;
        (low != 0).then(|| ConsumerId {
            index: low as usize - 1,
            epoch: (w >> 32) as u32,
        })
    }
}

/// The current holder of `host`'s consumer claim, if any.
pub fn ring_consumer(host: &HostEntry) -> Option<ConsumerId> {
    // Acquire: pairs with the AcqRel CAS of the claim.
    ConsumerId::unpack(host.consumer.load(Ordering::Acquire))
}

/// Claims `host`'s ring for `me`, taking over a claim whose holder `alive` says is gone.
///
/// # Errors
/// The live holder, if another client holds the claim.
pub fn claim_consumer(
    host: &HostEntry,
    me: ConsumerId,
    alive: impl Fn(ConsumerId) -> bool,
) -> Result<(), ConsumerId> {
    let mine = me.pack();
    // Acquire: pairs with the AcqRel CAS below (of an earlier claimant).
    let mut current = host.consumer.load(Ordering::Acquire);
    loop {
        if current == mine {
            return Ok(());
        }
        if let Some(holder) = ConsumerId::unpack(current) {
            if alive(holder) {
                return Err(holder);
            }
        }
        // AcqRel: pairs with the previous consumer's Release CAS in `release_consumer` (or its
        // own AcqRel claim, when we take a dead one's over): the claim orders our later pops
        // after the previous consumer's (its stores to `head` and the cells happen before its
        // claim was replaced).
        match host
            .consumer
            .compare_exchange(current, mine, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Ok(()),
            Err(actual) => current = actual,
        }
    }
}

/// Gives up `me`'s claim on `host`'s ring (no-op if it was taken over meanwhile).
pub fn release_consumer(host: &HostEntry, me: ConsumerId) {
    // Release: pairs with the next claimant's AcqRel CAS in `claim_consumer`: our pops happen
    // before its.
    let _ = host
        .consumer
        .compare_exchange(me.pack(), 0, Ordering::Release, Ordering::Relaxed);
}

/// Why a runner may not consume its host's ring.
#[derive(Debug, thiserror::Error)]
pub enum RingClaimError {
    #[error(
        "the event ring of host {host:?} is already consumed by client {client} (pid {pid}): \
         a second runner with the same host identity would split its events; give each runner \
         on this machine its own GISMO_HOST"
    )]
    Claimed {
        host: String,
        client: usize,
        pid: u32,
    },
    #[error("no host table entry {0}")]
    NoHost(usize),
}

#[cfg(not(loom))]
impl crate::store::Store {
    /// Whether `c` is a live client: its entry is active at that epoch and the reaper's judgment
    /// ([`Store::judge`]: its pid on this host and pid namespace, else a heartbeat seen changing
    /// within `lease_ms` on our monotonic clock) does not declare it dead.
    fn consumer_alive(&self, c: ConsumerId, lease_ms: u64) -> bool {
        if c.index >= self.max_clients() {
            return false;
        }
        let w = self.client_entry(c.index).load_word();
        if w.status != status::ACTIVE || w.epoch != c.epoch {
            return false;
        }
        self.judge(c.index, HostIdentity::current().liveness_hash(), lease_ms)
            .is_none()
    }

    /// Claims host `host`'s event ring for `client` (see the module docs); `lease_ms` judges a
    /// holder on another host by its heartbeat.
    ///
    /// # Errors
    /// [`RingClaimError::Claimed`] while a live client holds it.
    pub fn claim_event_ring(
        &self,
        host: usize,
        client: &crate::store::Client,
        lease_ms: u64,
    ) -> Result<(), RingClaimError> {
        let entry = self.hosts().get(host).ok_or(RingClaimError::NoHost(host))?;
        let me = ConsumerId {
            index: client.index(),
            epoch: client.epoch(),
        };
        claim_consumer(entry, me, |c| self.consumer_alive(c, lease_ms)).map_err(|holder| {
            let e = self.client_entry(holder.index);
            RingClaimError::Claimed {
                host: host_name(entry),
                client: holder.index,
                pid: e.pid.load(Ordering::Relaxed) as u32,
            }
        })
    }

    /// Releases `client`'s claim on host `host`'s ring.
    pub fn release_event_ring(&self, host: usize, client: &crate::store::Client) {
        if let Some(entry) = self.hosts().get(host) {
            release_consumer(
                entry,
                ConsumerId {
                    index: client.index(),
                    epoch: client.epoch(),
                },
            );
        }
    }

    /// Who consumes host `host`'s ring.
    pub fn event_ring_consumer(&self, host: usize) -> Option<ConsumerId> {
        self.hosts().get(host).and_then(ring_consumer)
    }
}

/// The host entry's name (informational; NUL padding dropped).
#[cfg(not(loom))]
fn host_name(e: &HostEntry) -> String {
    let bytes: Vec<u8> = e
        .name
        .iter()
        .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
        .take_while(|b| *b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn host() -> HostEntry {
        HostEntry::new_free()
    }

    #[test]
    fn one_consumer_per_ring_and_a_dead_ones_claim_is_taken_over() {
        let h = host();
        let a = ConsumerId { index: 0, epoch: 7 };
        let b = ConsumerId { index: 3, epoch: 1 };
        assert_eq!(ring_consumer(&h), None);
        assert_eq!(claim_consumer(&h, a, |_| true), Ok(()));
        assert_eq!(
            claim_consumer(&h, a, |_| true),
            Ok(()),
            "claiming again is a no-op"
        );
        assert_eq!(ring_consumer(&h), Some(a));
        // A live holder is named; its claim stays.
        assert_eq!(claim_consumer(&h, b, |c| c == a), Err(a));
        assert_eq!(ring_consumer(&h), Some(a));
        // A dead holder's claim is taken over.
        assert_eq!(claim_consumer(&h, b, |_| false), Ok(()));
        assert_eq!(ring_consumer(&h), Some(b));
        // Only the holder's release clears the claim.
        release_consumer(&h, a);
        assert_eq!(ring_consumer(&h), Some(b));
        release_consumer(&h, b);
        assert_eq!(ring_consumer(&h), None);
        // Index 0 at epoch 0 is still a claim (the word is not 0).
        let zero = ConsumerId { index: 0, epoch: 0 };
        assert_eq!(claim_consumer(&h, zero, |_| true), Ok(()));
        assert_eq!(ring_consumer(&h), Some(zero));
    }
}
