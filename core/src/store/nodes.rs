//! The owner-node table: the raylet id and IP address of the nodes that own objects, stored once
//! per node instead of once per object (a directory slot keeps only the index).
//!
//! Insert-only and lock-free: an entry is claimed by CAS on its state word, written, then published
//! (`Release`); readers `Acquire` the word. Keys are found by linear probing from their hash;
//! two racing inserts of the same node may both publish, which only costs an entry.

use crate::sync::{AtomicU64, Ordering};

/// Ray's NodeID length.
pub const NODE_ID_LEN: usize = 28;

const EMPTY: u64 = 0;
const CLAIMED: u64 = 1;
const READY: u64 = 2;

/// One entry: 64 bytes.
#[repr(C)]
pub struct NodeEntry {
    state: AtomicU64,
    /// Raylet id (28 bytes) then IP (up to 28 bytes, NUL-padded), as 7 words.
    data: [AtomicU64; 7],
}

#[cfg(not(loom))]
static_assertions::const_assert_eq!(
    std::mem::size_of::<NodeEntry>() as u64,
    crate::format::layout::NODE_ENTRY_SIZE
);
// SAFETY: repr(C), integer atomics only, every bit pattern valid, no pointers.
#[cfg(not(loom))]
unsafe impl crate::shm::RegionSafe for NodeEntry {}

/// An owner's node: raylet id and IP address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerNode {
    pub raylet_id: [u8; NODE_ID_LEN],
    pub ip: String,
}

impl OwnerNode {
    fn encode(&self) -> [u64; 7] {
        let mut b = [0u8; 56];
        b[..28].copy_from_slice(&self.raylet_id);
        let ip = self.ip.as_bytes();
        let n = ip.len().min(28);
        b[28..28 + n].copy_from_slice(&ip[..n]);
        std::array::from_fn(|i| {
            u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]))
        })
    }

    fn decode(w: [u64; 7]) -> OwnerNode {
        let mut b = [0u8; 56];
        for (i, x) in w.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
        }
        let mut raylet_id = [0u8; NODE_ID_LEN];
        raylet_id.copy_from_slice(&b[..28]);
        let ip = &b[28..];
        let end = ip.iter().position(|&c| c == 0).unwrap_or(ip.len());
        OwnerNode {
            raylet_id,
            ip: String::from_utf8_lossy(&ip[..end]).into_owned(),
        }
    }
}

/// The table.
pub struct NodeTable<'a> {
    entries: &'a [NodeEntry],
}

impl<'a> NodeTable<'a> {
    pub fn new(entries: &'a [NodeEntry]) -> NodeTable<'a> {
        NodeTable { entries }
    }

    fn start(&self, words: &[u64; 7]) -> usize {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for w in words {
            h = (h ^ w).wrapping_mul(0x0100_0000_01b3);
        }
        (h as usize) % self.entries.len().max(1)
    }

    /// The index of `node`, inserting it if absent; `None` if the table is full.
    pub fn intern(&self, node: &OwnerNode) -> Option<u32> {
        let words = node.encode();
        let n = self.entries.len();
        let start = self.start(&words);
        for k in 0..n {
            let i = (start + k) % n;
            let e = &self.entries[i];
            loop {
                // Acquire: pairs with the Release publish below.
                match e.state.load(Ordering::Acquire) {
                    READY => {
                        if e.data
                            .iter()
                            .zip(&words)
                            .all(|(a, b)| a.load(Ordering::Relaxed) == *b)
                        {
                            return Some(i as u32);
                        }
                        break;
                    }
                    EMPTY => {
                        // Acquire: pairs with nothing but the format's zeroing of the entry
                        // (entries are never freed; the superblock's Release/Acquire publishes
                        // the zeroing): Relaxed would do; it keeps the data stores after the claim.
                        if e.state
                            .compare_exchange(EMPTY, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                        {
                            for (d, w) in e.data.iter().zip(words) {
                                d.store(w, Ordering::Relaxed);
                            }
                            // Release: pairs with the Acquire loads of `state` in `get` and
                            // `intern`'s scan; publishes the data words.
                            e.state.store(READY, Ordering::Release);
                            return Some(i as u32);
                        }
                    }
                    // Being written, or garbage from a crashed writer: skip it.
                    _ => break,
                }
            }
        }
        None
    }

    /// Entries neither empty nor published, with their state word: `CLAIMED` by a writer that
    /// never published (killed in the few instructions between its claim and its publish), or
    /// garbage. Each costs one entry for good unless fsck's repair frees it.
    pub fn stuck(&self) -> Vec<(usize, u64)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                // Relaxed: a report; the repair's CAS decides.
                let w = e.state.load(Ordering::Relaxed);
                (w != EMPTY && w != READY).then_some((i, w))
            })
            .collect()
    }

    /// Frees entry `index` if its state word is still `state` (fsck's repair of a stuck entry; a
    /// writer that was only slow publishes over it, which is harmless: its data words are its
    /// own, and no slot names an entry that was never published). Returns whether it was freed.
    pub fn free_stuck(&self, index: usize, state: u64) -> bool {
        let Some(e) = self.entries.get(index) else {
            return false;
        };
        if state == EMPTY || state == READY {
            return false;
        }
        // Relaxed: the entry holds nothing anyone reads (never published); the next claimer's
        // CAS from EMPTY is what orders its own writes.
        e.state
            .compare_exchange(state, EMPTY, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The node at `index`, if published.
    pub fn get(&self, index: u32) -> Option<OwnerNode> {
        let e = self.entries.get(index as usize)?;
        // Acquire: pairs with the Release store of READY in `intern`: the data words read next are
        // the published ones.
        if e.state.load(Ordering::Acquire) != READY {
            return None;
        }
        Some(OwnerNode::decode(std::array::from_fn(|i| {
            e.data[i].load(Ordering::Relaxed)
        })))
    }
}
