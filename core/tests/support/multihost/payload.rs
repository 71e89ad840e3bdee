//! Self-describing object payloads: a getter can check any object it finds without shared state.
//!
//! An object's data is a pattern of little-endian 64-bit words: word 0 is the id's hash, word 1 the
//! data length, every other word a mix of a seed and the word's index (truncated to the length, so
//! 0- to 15-byte objects carry a prefix of that header). Its metadata is a [`Header`] naming the
//! id, the length, the seed and the checksum of the data. A getter recomputes the checksum over the
//! bytes it was handed and compares: a payload copied from the wrong place, written by another
//! object's creator, freed and reused, or torn shows up as a mismatch.
//!
//! The checksum is FNV-1a over the data's words (the last one zero-padded), then xor'ed with the
//! length. Each step `h -> (h ^ w) * P` is a bijection of `h`, so any single wrong word always
//! changes the result.

use gismo_core::store::ObjectId;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// `"GISMO-MH"`, little endian: marks metadata written by these tests.
const HEADER_MAGIC: u64 = u64::from_le_bytes(*b"GISMO-MH");

/// The metadata of every test object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id_hash: u64,
    pub len: u64,
    pub seed: u64,
    pub checksum: u64,
}

impl Header {
    pub const SIZE: usize = 40;

    /// The header of an object of `len` bytes with `seed`'s pattern.
    pub fn new(id: &ObjectId, len: u64, seed: u64) -> Header {
        let id_hash = id.hash64();
        Header {
            id_hash,
            len,
            seed,
            checksum: pattern_checksum(id_hash, len, seed),
        }
    }

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        for (i, w) in [
            HEADER_MAGIC,
            self.id_hash,
            self.len,
            self.seed,
            self.checksum,
        ]
        .iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Header, String> {
        if bytes.len() != Self::SIZE {
            return Err(format!(
                "metadata is {} bytes, not {}",
                bytes.len(),
                Self::SIZE
            ));
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        if word(0) != HEADER_MAGIC {
            return Err(format!("bad metadata magic {:#x}", word(0)));
        }
        Ok(Header {
            id_hash: word(1),
            len: word(2),
            seed: word(3),
            checksum: word(4),
        })
    }
}

/// The seed test 1 and the scripted children use: a pure function of id and length, so the
/// parent can predict every byte.
pub fn deterministic_seed(id: &ObjectId, len: u64) -> u64 {
    id.hash64() ^ len.rotate_left(32) ^ 0x5eed
}

/// Word `i` of the pattern.
fn pattern_word(id_hash: u64, len: u64, seed: u64, i: u64) -> u64 {
    match i {
        0 => id_hash,
        1 => len,
        _ => (seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9),
    }
}

fn fnv_step(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(FNV_PRIME)
}

/// The checksum of the pattern, computed without materialising it.
pub fn pattern_checksum(id_hash: u64, len: u64, seed: u64) -> u64 {
    let full = len / 8;
    let mut h = FNV_OFFSET;
    for i in 0..full {
        h = fnv_step(h, pattern_word(id_hash, len, seed, i));
    }
    let rem = len % 8;
    if rem != 0 {
        let mask = (1u64 << (rem * 8)) - 1;
        h = fnv_step(h, pattern_word(id_hash, len, seed, full) & mask);
    }
    h ^ len
}

/// The checksum of `data` (equal to [`pattern_checksum`] for an intact pattern).
pub fn checksum(data: &[u8]) -> u64 {
    let split = data.len() / 8 * 8;
    let (words, tail) = data.split_at(split);
    let mut h = FNV_OFFSET;
    // Fast path for the usual 8-aligned payloads: the debug build spends most of its time here.
    if let Ok(aligned) = bytemuck::try_cast_slice::<u8, u64>(words) {
        for &w in aligned {
            h = fnv_step(h, u64::from_le(w));
        }
    } else {
        for c in words.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            h = fnv_step(h, u64::from_le_bytes(b));
        }
    }
    if !tail.is_empty() {
        let mut b = [0u8; 8];
        b[..tail.len()].copy_from_slice(tail);
        h = fnv_step(h, u64::from_le_bytes(b));
    }
    h ^ data.len() as u64
}

/// Writes the pattern of `header` into `data` (`data.len() == header.len`).
pub fn fill(data: &mut [u8], header: &Header) {
    assert_eq!(data.len() as u64, header.len, "buffer length");
    let (id_hash, len, seed) = (header.id_hash, header.len, header.seed);
    let split = data.len() / 8 * 8;
    let (words, tail) = data.split_at_mut(split);
    if let Ok(aligned) = bytemuck::try_cast_slice_mut::<u8, u64>(words) {
        for (i, w) in aligned.iter_mut().enumerate() {
            *w = pattern_word(id_hash, len, seed, i as u64).to_le();
        }
    } else {
        for (i, c) in words.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&pattern_word(id_hash, len, seed, i as u64).to_le_bytes());
        }
    }
    if !tail.is_empty() {
        let last = pattern_word(id_hash, len, seed, (split / 8) as u64).to_le_bytes();
        let n = tail.len();
        tail.copy_from_slice(&last[..n]);
    }
}

/// Checks an object handed out for `id`: its metadata is a header naming `id` and the data's
/// length, and the data's checksum matches. Returns the checksum.
pub fn verify(id: &ObjectId, data: &[u8], metadata: &[u8]) -> Result<u64, String> {
    let header = Header::decode(metadata)?;
    if header.id_hash != id.hash64() {
        return Err(format!(
            "object {id}: metadata names id hash {:#x}, expected {:#x}",
            header.id_hash,
            id.hash64()
        ));
    }
    if header.len != data.len() as u64 {
        return Err(format!(
            "object {id}: metadata says {} bytes, the data has {}",
            header.len,
            data.len()
        ));
    }
    let sum = checksum(data);
    if sum != header.checksum {
        let first_bad = (0..data.len()).find(|&p| {
            let w = pattern_word(header.id_hash, header.len, header.seed, (p / 8) as u64);
            data[p] != w.to_le_bytes()[p % 8]
        });
        return Err(format!(
            "object {id} ({} bytes): checksum {sum:#x}, expected {:#x}; first wrong byte at {:?}",
            data.len(),
            header.checksum,
            first_bad
        ));
    }
    Ok(sum)
}

#[cfg(test)]
mod self_test {
    use super::*;

    #[test]
    fn payload_round_trip_at_every_length_and_alignment() {
        for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 100, 4096 + 3] {
            for shift in [0usize, 1, 3] {
                let id = ObjectId::from_u64(len as u64);
                let header = Header::new(&id, len as u64, 42);
                let mut buf = vec![0u8; len + shift];
                fill(&mut buf[shift..], &header);
                assert_eq!(checksum(&buf[shift..]), header.checksum);
                assert_eq!(
                    verify(&id, &buf[shift..], &header.encode()),
                    Ok(header.checksum)
                );
                if len > 0 {
                    buf[shift + len - 1] ^= 1;
                    assert!(verify(&id, &buf[shift..], &header.encode()).is_err());
                }
            }
        }
    }
}
