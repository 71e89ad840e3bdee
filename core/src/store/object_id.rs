//! Ray's 28-byte `ObjectID`.

use std::fmt;

/// Length of a Ray `ObjectID` in bytes.
pub const OBJECT_ID_LEN: usize = 28;

/// A Ray object id: 28 opaque bytes, shown as 56 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub [u8; OBJECT_ID_LEN]);

/// Why a text form was not an object id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object id {input:?}: expected {} hex digits", OBJECT_ID_LEN * 2)]
pub struct ParseObjectIdError {
    input: String,
}

impl ObjectId {
    pub const fn from_bytes(b: [u8; OBJECT_ID_LEN]) -> Self {
        ObjectId(b)
    }

    pub fn as_bytes(&self) -> &[u8; OBJECT_ID_LEN] {
        &self.0
    }

    /// The id as seven little-endian 32-bit words, as stored in a directory slot.
    pub fn words(&self) -> [u32; 7] {
        let mut w = [0u32; 7];
        for (i, c) in self.0.chunks_exact(4).enumerate() {
            w[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        w
    }

    pub fn from_words(w: [u32; 7]) -> Self {
        let mut b = [0u8; OBJECT_ID_LEN];
        for (i, word) in w.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        ObjectId(b)
    }

    /// A well-mixed 64-bit hash of all 28 bytes. Ray ids of one task differ only in their last
    /// four bytes (the object index), so every byte must count.
    pub fn hash64(&self) -> u64 {
        let w = self.words();
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        for pair in w.chunks(2) {
            let v = u64::from(pair[0]) | (u64::from(*pair.get(1).unwrap_or(&0)) << 32);
            h = (h ^ v).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h ^= h >> 31;
        }
        h = (h ^ (h >> 30)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    /// A fresh random id (for tests and tools).
    pub fn random() -> Self {
        use std::io::Read;
        let mut b = [0u8; OBJECT_ID_LEN];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .is_err()
        {
            let t = crate::clock::unix_ns();
            b[..16].copy_from_slice(&(t ^ u128::from(std::process::id()) << 64).to_le_bytes());
        }
        ObjectId(b)
    }

    /// A deterministic id derived from a number (for tests and benchmarks).
    pub fn from_u64(n: u64) -> Self {
        let mut b = [0u8; OBJECT_ID_LEN];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b[8..16].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        ObjectId(b)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl std::str::FromStr for ObjectId {
    type Err = ParseObjectIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseObjectIdError {
            input: s.to_string(),
        };
        let s = s.trim();
        if s.len() != OBJECT_ID_LEN * 2 || !s.is_ascii() {
            return Err(err());
        }
        let mut b = [0u8; OBJECT_ID_LEN];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).map_err(|_| err())?;
        }
        Ok(ObjectId(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trip(bytes in proptest::array::uniform28(any::<u8>())) {
            let id = ObjectId(bytes);
            prop_assert_eq!(id.to_string().parse::<ObjectId>().unwrap(), id);
            prop_assert_eq!(ObjectId::from_words(id.words()), id);
        }
    }

    #[test]
    fn rejects_bad_text() {
        assert!("abc".parse::<ObjectId>().is_err());
        assert!("zz".repeat(28).parse::<ObjectId>().is_err());
    }
}
