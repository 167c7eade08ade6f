//! The community overlay's building blocks, independent of gossip:
//!
//! - [`Key`]: WireGuard (X25519) keys; the public key is computed here, the
//!   Diffie-Hellman is the kernel's.
//! - [`prefix_for`] / [`address_for`]: overlay addresses derived from keys:
//!   an IPv6 ULA /64 from the community's shared secret, the 64-bit
//!   interface id from a hash of the box's WireGuard public key (as
//!   Yggdrasil derives addresses from keys). Pinned as the peer's only
//!   AllowedIP, a member cannot take another box's address: the kernel drops
//!   packets whose source is not an AllowedIP of the peer they came from.
//! - [`proof`]: the admission proof carried in gossip (an HMAC of the key
//!   under the community secret).
//! - [`genl`]: kernel WireGuard configured over generic netlink, hand-built
//!   (no `wg` binary, no LGPL library in the static binary).

pub mod genl;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine;
use sha2::{Digest, Sha256};

/// Everything that can go wrong here.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error("WireGuard key: {0}")]
    Key(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("kernel WireGuard: {0}")]
    Kernel(String),
}

/// A 32-byte X25519 key (private or public).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// A new private key from the kernel's random source, clamped as
    /// WireGuard does.
    pub fn generate() -> Result<Key, WgError> {
        let mut k = [0u8; 32];
        getrandom::getrandom(&mut k).map_err(|e| WgError::Key(format!("random: {e}")))?;
        k[0] &= 248;
        k[31] = (k[31] & 127) | 64;
        Ok(Key(k))
    }

    /// The public key of this private key (X25519 base point multiplication).
    pub fn public(&self) -> Key {
        Key(curve25519_dalek::MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }

    /// Standard base64 (44 characters), as `wg` prints keys.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Parse the 44-character base64 form.
    pub fn from_base64(s: &str) -> Result<Key, WgError> {
        let s = s.trim();
        if s.len() != 44 {
            return Err(WgError::Key(format!(
                "expected 44 base64 characters, got {}",
                s.len()
            )));
        }
        let v = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| WgError::Key(format!("not base64: {e}")))?;
        let b: [u8; 32] = v
            .try_into()
            .map_err(|_| WgError::Key("not 32 bytes".into()))?;
        Ok(Key(b))
    }
}

impl fmt::Debug for Key {
    // Never print key bytes by accident (a private key is a Key too).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}…)", &self.to_base64()[..8])
    }
}

/// The community's overlay /64: `fd` + 40 bits of SHA-256 of the shared
/// secret + subnet 0. Two communities with different secrets get different
/// prefixes; everyone with the secret computes the same one.
pub fn prefix_for(secret: &[u8]) -> [u8; 8] {
    let h = Sha256::new()
        .chain_update(b"nuvol-overlay-prefix-v1\0")
        .chain_update(secret)
        .finalize();
    [0xfd, h[0], h[1], h[2], h[3], h[4], 0, 0]
}

/// The overlay address of the box whose WireGuard public key is `public`:
/// the community prefix and 64 bits of SHA-256 of the key.
pub fn address_for(prefix: &[u8; 8], public: &Key) -> Ipv6Addr {
    let h = Sha256::new()
        .chain_update(b"nuvol-overlay-address-v1\0")
        .chain_update(public.0)
        .finalize();
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(prefix);
    a[8..].copy_from_slice(&h[..8]);
    Ipv6Addr::from(a)
}

/// The overlay's IPv4 network: 100.64.0.0/10 (shared address space, as
/// other overlays use it), so that services that listen on IPv4 only
/// (the panel on 0.0.0.0, containers' published ports) are reachable
/// over the overlay too.
pub const V4_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(100, 64, 0, 0), 10);

/// The IPv4 overlay address of the box whose key is `public`: 22 bits of
/// SHA-256 of the key under 100.64.0.0/10 (never the network's first or
/// last address). Two keys can collide (a community of 100 boxes: about
/// 1 in 1000); the overlay then routes the address to one of them only.
pub fn address4_for(public: &Key) -> Ipv4Addr {
    let h = Sha256::new()
        .chain_update(b"nuvol-overlay-address4-v1\0")
        .chain_update(public.0)
        .finalize();
    let host = u32::from_be_bytes([0, h[0], h[1], h[2]]) & 0x003f_ffff;
    let host = host.clamp(1, 0x003f_fffe);
    Ipv4Addr::from(u32::from(V4_NET.0) | host)
}

/// Bytes of [`proof`] carried in gossip.
pub const PROOF_LEN: usize = 16;

/// The admission proof for `public` announced under gossip name `node`:
/// HMAC-SHA-256 under the community secret, cut to [`PROOF_LEN`] bytes.
/// Only holders of the secret can make it.
pub fn proof(secret: &[u8], node: &str, public: &Key) -> [u8; PROOF_LEN] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&k);
    ctx.update(b"nuvol-overlay-admission-v1\0");
    ctx.update(node.as_bytes());
    ctx.update(b"\0");
    ctx.update(&public.0);
    let tag = ctx.sign();
    let mut out = [0u8; PROOF_LEN];
    out.copy_from_slice(&tag.as_ref()[..PROOF_LEN]);
    out
}

/// Whether `got` is the proof for `public` under `node` (constant time).
pub fn proof_ok(secret: &[u8], node: &str, public: &Key, got: &[u8]) -> bool {
    let want = proof(secret, node, public);
    got.len() == PROOF_LEN && want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_rfc7748() {
        // RFC 7748 section 6.1, Alice's keys.
        let hex = |s: &str| -> [u8; 32] {
            let v: Vec<u8> = (0..32)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            v.try_into().unwrap()
        };
        let private = Key(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            private.public(),
            Key(hex(
                "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
            ))
        );
    }

    #[test]
    fn keys_round_trip_and_bad_ones_are_named() {
        let k = Key::generate().unwrap();
        assert_eq!(Key::from_base64(&k.to_base64()).unwrap(), k);
        assert_ne!(Key::generate().unwrap(), k);
        let e = Key::from_base64("short").unwrap_err().to_string();
        assert!(e.contains("44 base64"), "{e}");
        let e = Key::from_base64(&"!".repeat(44)).unwrap_err().to_string();
        assert!(e.contains("not base64"), "{e}");
        assert!(!format!("{k:?}").contains(&k.to_base64()));
    }

    #[test]
    fn addresses_come_from_keys_and_secret() {
        let p1 = prefix_for(b"community one");
        let p2 = prefix_for(b"community two");
        assert_eq!(p1[0], 0xfd);
        assert_ne!(p1, p2);
        let a = Key::generate().unwrap().public();
        let b = Key::generate().unwrap().public();
        let aa = address_for(&p1, &a);
        assert_eq!(aa, address_for(&p1, &a), "stable");
        assert_ne!(aa, address_for(&p1, &b));
        assert_eq!(aa.octets()[..8], p1);
        assert!(aa.to_string().starts_with("fd"));
        let v4 = address4_for(&a);
        assert_eq!(v4, address4_for(&a));
        assert_ne!(v4, address4_for(&b));
        assert_eq!(u32::from(v4) >> 22, u32::from(V4_NET.0) >> 22, "{v4}");
    }

    #[test]
    fn proofs_need_the_secret_and_the_name() {
        let k = Key::generate().unwrap().public();
        let p = proof(b"secret", "box1", &k);
        assert!(proof_ok(b"secret", "box1", &k, &p));
        assert!(!proof_ok(b"other", "box1", &k, &p));
        assert!(!proof_ok(b"secret", "box2", &k, &p));
        assert!(!proof_ok(b"secret", "box1", &Key([9; 32]), &p));
        assert!(!proof_ok(b"secret", "box1", &k, &p[..8]));
    }
}
