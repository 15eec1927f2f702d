//! floe's one stable hash: FNV-1a with a 64-bit finaliser. Used wherever a hash is persisted or must agree
//! across processes and deployments (sketches, dedup keys in the state store, pipeline fingerprints), so it is
//! fixed here instead of `std`'s, which may change between Rust releases.

/// Stable 64-bit hash of a value's canonical bytes.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // murmur3 fmix64: spreads FNV's weak high bits, which pick the register.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
