//! Cloudy (Clommunity avahi-ps + Serf plug) service announcements: one
//! Serf tag `services` whose value is base64(bzip2(JSON array)) of objects
//! `{"s": type, "d": description, "m": host, "i": IP, "p": port,
//! "e": microcloud/device, "t": TXT}`, kept under Serf's 512-byte limit.

use base64::Engine;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use thiserror::Error;

/// The Serf tag name.
pub const TAG: &str = "services";
/// Largest decoded JSON accepted (bzip2 bombs are cut off here).
pub const MAX_JSON: usize = 64 * 1024;
/// Largest tag value we publish (Serf's whole tag map must fit in 512
/// bytes; leave room for the other tags).
pub const MAX_TAG: usize = 400;

/// One Cloudy service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudyService {
    /// DNS-SD type
    #[serde(rename = "s", default)]
    pub service_type: String,
    /// description
    #[serde(rename = "d", default)]
    pub description: String,
    /// host name
    #[serde(rename = "m", default)]
    pub host: String,
    /// IP address
    #[serde(rename = "i", default)]
    pub ip: String,
    /// port (Cloudy writes it as a string or a number)
    #[serde(rename = "p", default, deserialize_with = "port_any")]
    pub port: u16,
    /// microcloud / device
    #[serde(rename = "e", default)]
    pub microcloud: String,
    /// TXT
    #[serde(rename = "t", default)]
    pub txt: String,
}

fn port_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum P {
        N(u16),
        S(String),
    }
    match P::deserialize(d)? {
        P::N(n) => Ok(n),
        P::S(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// Why a tag could not be read or written.
#[derive(Debug, Error)]
pub enum CloudyError {
    /// not base64
    #[error("services tag is not base64")]
    Base64,
    /// not bzip2, or too large
    #[error("services tag is not bzip2 data of at most {MAX_JSON} bytes")]
    Bzip2,
    /// not the JSON we expect
    #[error("services tag JSON: {0}")]
    Json(String),
    /// too many services for one tag
    #[error("services tag would be {0} bytes, more than {MAX_TAG}")]
    TooLarge(usize),
}

/// Decode a `services` tag value.
pub fn decode(tag: &str) -> Result<Vec<CloudyService>, CloudyError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(tag.trim())
        .map_err(|_| CloudyError::Base64)?;
    let mut json = Vec::new();
    bzip2::read::BzDecoder::new(&raw[..])
        .take(MAX_JSON as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|_| CloudyError::Bzip2)?;
    if json.len() > MAX_JSON {
        return Err(CloudyError::Bzip2);
    }
    serde_json::from_slice(&json).map_err(|e| CloudyError::Json(e.to_string()))
}

/// Encode services as a `services` tag value.
pub fn encode(services: &[CloudyService]) -> Result<String, CloudyError> {
    let json = serde_json::to_vec(services).map_err(|e| CloudyError::Json(e.to_string()))?;
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    enc.write_all(&json).map_err(|_| CloudyError::Bzip2)?;
    let bz = enc.finish().map_err(|_| CloudyError::Bzip2)?;
    let tag = base64::engine::general_purpose::STANDARD.encode(bz);
    if tag.len() > MAX_TAG {
        return Err(CloudyError::TooLarge(tag.len()));
    }
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<CloudyService> {
        vec![CloudyService {
            service_type: "_http._tcp".into(),
            description: "nuvol panel".into(),
            host: "nuvol1".into(),
            ip: "10.228.1.2".into(),
            port: 80,
            microcloud: "guifi".into(),
            txt: "path=/".into(),
        }]
    }

    fn sh(script: &str, input: &[u8]) -> Vec<u8> {
        let mut c = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write");
        let o = c.wait_with_output().expect("wait");
        assert!(o.status.success());
        o.stdout
    }

    #[test]
    fn reads_what_bzip2_and_base64_tools_write() {
        // what avahi-ps does in shell: JSON | bzip2 | base64
        let json = br#"[{"s":"_ssh._tcp","d":"ssh","m":"cloudy7","i":"10.0.0.7","p":"22","e":"guifi","t":""}]"#;
        let tag = String::from_utf8(sh("bzip2 -c | base64 -w0", json)).expect("utf8");
        let s = decode(&tag).expect("decode");
        assert_eq!(s[0].port, 22);
        assert_eq!(s[0].host, "cloudy7");
    }

    #[test]
    fn tools_read_what_we_write() {
        let tag = encode(&sample()).expect("encode");
        let json = sh("base64 -d | bzip2 -dc", tag.as_bytes());
        let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(v[0]["s"], "_http._tcp");
        assert_eq!(v[0]["p"], 80);
        assert_eq!(decode(&tag).expect("roundtrip"), sample());
    }

    #[test]
    fn garbage_and_bombs_are_rejected() {
        assert!(decode("%%%").is_err());
        assert!(decode("aGVsbG8=").is_err());
        // a tiny bzip2 of 1 MiB of zeros exceeds MAX_JSON
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        enc.write_all(&vec![b'0'; 1 << 20]).expect("write");
        let bomb = base64::engine::general_purpose::STANDARD.encode(enc.finish().expect("finish"));
        assert!(matches!(decode(&bomb), Err(CloudyError::Bzip2)));
        let many: Vec<CloudyService> = (0..40)
            .map(|i| CloudyService {
                description: format!("svc number {i} with a long text {}", i * 7919),
                ..sample()[0].clone()
            })
            .collect();
        assert!(matches!(encode(&many), Err(CloudyError::TooLarge(_))));
    }
}
