//! Ed25519 keys and detached signatures in the signify / minisign text formats.
//!
//! Both tools store a public key as two lines: `untrusted comment: …` and the
//! base64 of `"Ed" ‖ key id (8 bytes) ‖ public key (32 bytes)`. nuvol uses that
//! exact format, so a key made by `signify -G`, `minisign -G` or
//! `nuvol bundle keygen` is accepted by all three. Secret keys are read in
//! both tools' unencrypted formats and written in signify's.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use blake2::{Blake2b512, Digest as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::Sha512;

use crate::error::BundleError;

/// Largest key or signature file read (they are a few hundred bytes).
pub const MAX_KEY_FILE_BYTES: usize = 4096;

/// The 8-byte key number that signify and minisign put in front of keys and
/// signatures. Shown like minisign shows it: the little-endian u64 in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// Parse the 16-hex-digit form produced by [`KeyId`]'s `Display`.
    pub fn parse_hex(s: &str) -> Result<KeyId, BundleError> {
        let bad = || BundleError::KeyFormat(format!("{s:?} is not a 16-hex-digit key id"));
        if s.len() != 16 {
            return Err(bad());
        }
        let v = u64::from_str_radix(s, 16).map_err(|_| bad())?;
        Ok(KeyId(v.to_le_bytes()))
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Signature algorithm tag: ed25519 over the message itself (signify, legacy minisign).
pub const ALG_PURE: [u8; 2] = *b"Ed";
/// Signature algorithm tag: ed25519 over BLAKE2b-512 of the message (minisign default).
pub const ALG_PREHASHED: [u8; 2] = *b"ED";

/// A trusted publisher's public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: KeyId,
    pub key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id)
    }
}

/// Split a signify/minisign text file into (untrusted comment, base64 line, rest).
fn split_text(text: &str, what: &str) -> Result<(String, Vec<u8>, Vec<String>), BundleError> {
    let err = |m: &str| BundleError::KeyFormat(format!("{what}: {m}"));
    if text.len() > MAX_KEY_FILE_BYTES {
        return Err(err("file too large"));
    }
    let mut lines = text.lines();
    let first = lines.next().ok_or_else(|| err("empty file"))?;
    let comment = first
        .strip_prefix("untrusted comment: ")
        .ok_or_else(|| err("first line must start with \"untrusted comment: \""))?
        .to_string();
    let b64 = lines
        .next()
        .ok_or_else(|| err("missing base64 line"))?
        .trim();
    let bytes = B64
        .decode(b64)
        .map_err(|e| err(&format!("bad base64: {e}")))?;
    Ok((comment, bytes, lines.map(str::to_string).collect()))
}

impl PublicKey {
    /// Parse a signify or minisign public key file.
    pub fn from_text(text: &str) -> Result<PublicKey, BundleError> {
        let (_, bytes, _) = split_text(text, "public key")?;
        PublicKey::from_raw(&bytes)
    }

    /// Parse the raw 42-byte `"Ed" ‖ key id ‖ key` blob (also minisign's `-P` string).
    pub fn from_raw(bytes: &[u8]) -> Result<PublicKey, BundleError> {
        if bytes.len() != 42 {
            return Err(BundleError::KeyFormat(format!(
                "public key blob is {} bytes, want 42",
                bytes.len()
            )));
        }
        if bytes[..2] != ALG_PURE {
            return Err(BundleError::KeyFormat(
                "public key algorithm is not \"Ed\"".into(),
            ));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[2..10]);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&bytes[10..42]);
        let key = VerifyingKey::from_bytes(&pk)
            .map_err(|_| BundleError::KeyFormat("not a valid ed25519 point".into()))?;
        Ok(PublicKey {
            key_id: KeyId(id),
            key,
        })
    }

    /// Parse the bare base64 line (minisign `-P` form).
    pub fn from_base64(s: &str) -> Result<PublicKey, BundleError> {
        let bytes = B64
            .decode(s.trim())
            .map_err(|e| BundleError::KeyFormat(format!("bad base64: {e}")))?;
        PublicKey::from_raw(&bytes)
    }

    /// The base64 of the raw blob (second line of the file).
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(&ALG_PURE);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(self.key.as_bytes());
        B64.encode(raw)
    }

    /// The two-line file readable by signify and minisign.
    pub fn to_text(&self, comment: &str) -> String {
        format!(
            "untrusted comment: {}\n{}\n",
            one_line(comment),
            self.to_base64()
        )
    }

    /// Check a signature block against `message`.
    pub fn verify(&self, sig: &SignatureBlock, message: &[u8]) -> Result<(), BundleError> {
        if sig.key_id != self.key_id {
            return Err(BundleError::UnknownKey(sig.key_id.to_string()));
        }
        let signature = ed25519_dalek::Signature::from_bytes(&sig.signature);
        let ok = match sig.algorithm {
            ALG_PURE => self.key.verify_strict(message, &signature).is_ok(),
            ALG_PREHASHED => {
                let h = Blake2b512::digest(message);
                self.key.verify_strict(&h, &signature).is_ok()
            }
            other => return Err(BundleError::UnsupportedSignatureAlgorithm(other)),
        };
        if ok {
            Ok(())
        } else {
            Err(BundleError::BadSignature(self.key_id.to_string()))
        }
    }
}

fn one_line(s: &str) -> String {
    s.chars().filter(|c| *c != '\n' && *c != '\r').collect()
}

/// A publisher's secret key (never leaves the workstation).
pub struct SecretKey {
    pub key_id: KeyId,
    pub signing: SigningKey,
}

impl SecretKey {
    /// A fresh key with a random key id.
    pub fn generate() -> Result<SecretKey, BundleError> {
        let mut seed = [0u8; 32];
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut seed)
            .and_then(|_| getrandom::getrandom(&mut id))
            .map_err(|e| BundleError::KeyFormat(format!("no randomness: {e}")))?;
        Ok(SecretKey {
            key_id: KeyId(id),
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.signing.verifying_key(),
        }
    }

    /// Sign `message` with the pure ed25519 scheme (signify compatible).
    pub fn sign(&self, message: &[u8]) -> SignatureBlock {
        SignatureBlock {
            algorithm: ALG_PURE,
            key_id: self.key_id,
            signature: self.signing.sign(message).to_bytes(),
        }
    }

    /// Sign `message` minisign-style: prehashed with BLAKE2b-512.
    pub fn sign_prehashed(&self, message: &[u8]) -> SignatureBlock {
        let h = Blake2b512::digest(message);
        SignatureBlock {
            algorithm: ALG_PREHASHED,
            key_id: self.key_id,
            signature: self.signing.sign(&h).to_bytes(),
        }
    }

    /// Parse an unencrypted signify (`signify -G -n`) or minisign
    /// (`minisign -G -W`) secret key file.
    pub fn from_text(text: &str) -> Result<SecretKey, BundleError> {
        let (_, bytes, _) = split_text(text, "secret key")?;
        let err = |m: &str| BundleError::KeyFormat(format!("secret key: {m}"));
        match bytes.len() {
            104 => {
                // signify: Ed BK kdfrounds(be32) salt(16) checksum(8) keynum(8) seckey(64)
                if bytes[..4] != *b"EdBK" {
                    return Err(err("not a signify ed25519 key"));
                }
                if bytes[4..8] != [0, 0, 0, 0] {
                    return Err(err(
                        "signify key is passphrase-protected; nuvol reads only keys made with `signify -G -n`",
                    ));
                }
                let seckey = &bytes[40..104];
                let sum = Sha512::digest(seckey);
                if sum[..8] != bytes[24..32] {
                    return Err(err("checksum mismatch"));
                }
                let mut id = [0u8; 8];
                id.copy_from_slice(&bytes[32..40]);
                SecretKey::from_nacl(KeyId(id), seckey)
            }
            158 => {
                // minisign: Ed kdf(2) B2 salt(32) ops(8) mem(8) keynum(8) sk(64) chk(32)
                if bytes[..2] != *b"Ed" || bytes[4..6] != *b"B2" {
                    return Err(err("not a minisign ed25519 key"));
                }
                if bytes[2..4] != [0, 0] {
                    return Err(err(
                        "minisign key is password-protected; nuvol reads only keys made with `minisign -G -W`",
                    ));
                }
                let keynum = &bytes[54..62];
                let sk = &bytes[62..126];
                let chk = &bytes[126..158];
                let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
                h.update(&bytes[..2]);
                h.update(keynum);
                h.update(sk);
                // minisign 0.11 leaves the checksum zero in `-W` keys; the
                // seed/public-key consistency check below still applies.
                if chk.iter().any(|b| *b != 0) && h.finalize()[..] != *chk {
                    return Err(err("checksum mismatch"));
                }
                let mut id = [0u8; 8];
                id.copy_from_slice(keynum);
                SecretKey::from_nacl(KeyId(id), sk)
            }
            n => Err(err(&format!(
                "{n} bytes is neither a signify nor a minisign key"
            ))),
        }
    }

    fn from_nacl(key_id: KeyId, sk: &[u8]) -> Result<SecretKey, BundleError> {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&sk[..32]);
        let signing = SigningKey::from_bytes(&seed);
        if signing.verifying_key().as_bytes()[..] != sk[32..64] {
            return Err(BundleError::KeyFormat(
                "secret key: public half does not match the seed".into(),
            ));
        }
        Ok(SecretKey { key_id, signing })
    }

    /// The unencrypted signify secret key file (`signify -G -n` format).
    pub fn to_text(&self, comment: &str) -> String {
        let mut nacl = Vec::with_capacity(64);
        nacl.extend_from_slice(self.signing.as_bytes());
        nacl.extend_from_slice(self.signing.verifying_key().as_bytes());
        let sum = Sha512::digest(&nacl);
        let mut raw = Vec::with_capacity(104);
        raw.extend_from_slice(b"EdBK");
        raw.extend_from_slice(&[0, 0, 0, 0]); // kdfrounds 0: not encrypted
        raw.extend_from_slice(&[0u8; 16]); // salt unused
        raw.extend_from_slice(&sum[..8]);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&nacl);
        format!(
            "untrusted comment: {}\n{}\n",
            one_line(comment),
            B64.encode(raw)
        )
    }

    /// A complete minisign signature file for `message` (prehashed, with a
    /// trusted comment and its global signature), verifiable with `minisign -V`.
    pub fn minisign_signature(&self, message: &[u8], trusted_comment: &str) -> String {
        let sig = self.sign_prehashed(message);
        let tc = one_line(trusted_comment);
        let mut global_msg = Vec::with_capacity(64 + tc.len());
        global_msg.extend_from_slice(&sig.signature);
        global_msg.extend_from_slice(tc.as_bytes());
        let global = self.signing.sign(&global_msg).to_bytes();
        format!(
            "untrusted comment: signature from nuvol secret key\n{}\ntrusted comment: {}\n{}\n",
            B64.encode(sig.to_bytes()),
            tc,
            B64.encode(global)
        )
    }
}

/// Length of a signature block: `alg(2) ‖ key id(8) ‖ ed25519 signature(64)`.
pub const SIG_BLOCK_LEN: usize = 74;

/// A signature as signify and minisign encode it (the base64 line of a `.sig`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignatureBlock {
    pub algorithm: [u8; 2],
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

impl SignatureBlock {
    /// Decode the 74-byte blob. All zeroes means "not signed yet".
    pub fn from_bytes(b: &[u8; SIG_BLOCK_LEN]) -> Result<SignatureBlock, BundleError> {
        if b.iter().all(|x| *x == 0) {
            return Err(BundleError::Unsigned);
        }
        let algorithm = [b[0], b[1]];
        if algorithm != ALG_PURE && algorithm != ALG_PREHASHED {
            return Err(BundleError::UnsupportedSignatureAlgorithm(algorithm));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[2..10]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[10..74]);
        Ok(SignatureBlock {
            algorithm,
            key_id: KeyId(id),
            signature,
        })
    }

    /// The 74-byte blob.
    pub fn to_bytes(&self) -> [u8; SIG_BLOCK_LEN] {
        let mut out = [0u8; SIG_BLOCK_LEN];
        out[..2].copy_from_slice(&self.algorithm);
        out[2..10].copy_from_slice(&self.key_id.0);
        out[10..].copy_from_slice(&self.signature);
        out
    }

    /// Parse a detached signature file: signify's `.sig` or minisign's
    /// `.minisig` (the trusted comment lines are ignored: nuvol signs the
    /// bundle header, which already carries everything worth trusting).
    pub fn from_text(text: &str) -> Result<SignatureBlock, BundleError> {
        let (_, bytes, _) = split_text(text, "signature").map_err(|e| match e {
            BundleError::KeyFormat(m) => BundleError::SignatureFormat(m),
            other => other,
        })?;
        let arr: [u8; SIG_BLOCK_LEN] = bytes.as_slice().try_into().map_err(|_| {
            BundleError::SignatureFormat(format!(
                "signature blob is {} bytes, want {SIG_BLOCK_LEN}",
                bytes.len()
            ))
        })?;
        SignatureBlock::from_bytes(&arr)
    }

    /// A signify-format detached signature file.
    pub fn to_text(&self, comment: &str) -> String {
        format!(
            "untrusted comment: {}\n{}\n",
            one_line(comment),
            B64.encode(self.to_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trip() {
        let sk = SecretKey::generate().unwrap();
        let sk2 = SecretKey::from_text(&sk.to_text("t")).unwrap();
        assert_eq!(sk2.key_id, sk.key_id);
        assert_eq!(sk2.signing.as_bytes(), sk.signing.as_bytes());
        let pk = PublicKey::from_text(&sk.public().to_text("p")).unwrap();
        assert_eq!(pk, sk.public());
        assert_eq!(KeyId::parse_hex(&pk.key_id.to_string()).unwrap(), pk.key_id);
    }

    #[test]
    fn sign_verify_both_algorithms() {
        let sk = SecretKey::generate().unwrap();
        let pk = sk.public();
        pk.verify(&sk.sign(b"m"), b"m").unwrap();
        pk.verify(&sk.sign_prehashed(b"m"), b"m").unwrap();
        assert!(matches!(
            pk.verify(&sk.sign(b"m"), b"n"),
            Err(BundleError::BadSignature(_))
        ));
        let other = SecretKey::generate().unwrap();
        assert!(matches!(
            pk.verify(&other.sign(b"m"), b"m"),
            Err(BundleError::UnknownKey(_))
        ));
    }

    #[test]
    fn rejects_garbage_key_files() {
        assert!(PublicKey::from_text("").is_err());
        assert!(PublicKey::from_text("untrusted comment: x\n!!!\n").is_err());
        assert!(PublicKey::from_text("untrusted comment: x\nRWQ=\n").is_err());
        assert!(SecretKey::from_text("hello\nworld\n").is_err());
        let big = "a".repeat(MAX_KEY_FILE_BYTES + 1);
        assert!(PublicKey::from_text(&big).is_err());
    }
}
