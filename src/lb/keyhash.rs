//! [`hash_bytes`]: the hash of a request's hash key (client IP, URI, header).
//!
//! It must be *stable* — the same bytes give the same value on every build,
//! platform and process, or a restart would remap every key of a consistent
//! hash — so it is a small fixed function here rather than `std`'s randomly
//! seeded `DefaultHasher`. It reads 8 bytes at a time (little-endian, on
//! every platform) with a folded 64×64→128 multiply per word, in the spirit
//! of wyhash, and ends with a murmur3-style finalizer so every output bit
//! depends on every input bit. Not DoS-resistant: a client who can choose
//! keys can only choose which backend it lands on, which it could do anyway.

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// murmur3's fmix64: a bijective avalanche of a 64-bit value.
#[inline]
pub fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Fast, stable 64-bit hash of `b`. Values are part of the on-disk/on-wire
/// contract of consistent hashing: changing this function remaps keys.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = P0 ^ (b.len() as u64).wrapping_mul(P1);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = fold_mul(h ^ u64::from_le_bytes(w), P1);
    }
    let rem = chunks.remainder();
    let mut w = [0u8; 8];
    w[..rem.len()].copy_from_slice(rem);
    h = fold_mul(h ^ u64::from_le_bytes(w) ^ P2, P1 ^ P0);
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_golden_values() {
        // If these change, every consistent-hash mapping in the field moves.
        assert_eq!(hash_bytes(b""), GOLDEN[0]);
        assert_eq!(hash_bytes(b"a"), GOLDEN[1]);
        assert_eq!(hash_bytes(b"/index.html"), GOLDEN[2]);
        assert_eq!(hash_bytes(b"192.168.1.10:80"), GOLDEN[3]);
    }

    const GOLDEN: [u64; 4] = [
        0xfc62_9663_c858_30ff,
        0x1830_29d3_af0b_3591,
        0x22e2_5b21_c80d_380b,
        0xdc37_d03d_ac70_5597,
    ];

    #[test]
    fn length_and_tail_bytes_matter() {
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
        assert_ne!(hash_bytes(b"\0"), hash_bytes(b"\0\0"));
        assert_ne!(hash_bytes(b"abcdefgh"), hash_bytes(b"abcdefgh\0"));
        assert_ne!(hash_bytes(b"abcdefghi"), hash_bytes(b"abcdefghj"));
    }

    #[test]
    fn similar_keys_spread_evenly() {
        let n = 64_000u32;
        let mut buckets = [0u32; 16];
        for k in 0..n {
            let h = hash_bytes(format!("/item/{k}").as_bytes());
            buckets[(h >> 60) as usize] += 1; // high bits
        }
        let mut low = [0u32; 16];
        for k in 0..n {
            let h = hash_bytes(format!("10.0.{}.{}", k / 256, k % 256).as_bytes());
            low[(h & 15) as usize] += 1; // low bits
        }
        for b in buckets.iter().chain(low.iter()) {
            assert!((3600..4400).contains(b), "{buckets:?} {low:?}");
        }
    }
}
