//! Cloudy (Clommunity avahi-ps with the Serf plug from package-serf)
//! service announcements: one Serf tag `services` whose value is
//! `base64 -w0` of `bzip2` of the line `echo` prints for a JSON array of
//! objects `{"s","d","m","i","p","e","t"}`, all strings.
//!
//! How avahi-ps (`usr/share/avahi-ps/plugs/avahi-ps-serf` in package-serf,
//! `avahi-ps` in avahi-ps) builds one object for `avahi-ps publish <d> <type>
//! <port> [txt]`:
//!
//! - `s`: the bare type word (`serf`, `syncthing`; mDNS gets `_<s>._tcp`);
//! - `d`: `echo $1 | sed 's/ /_/g'` — runs of blanks become one `_`;
//! - `m`: `${NODENAME}.${CLOUD_NAME}.local`, `uname -n` and `guifi`;
//! - `i`: the community-network IPv4 address;
//! - `p`: the port, as a JSON *string*;
//! - `e`: `DEVICE_NAME` (getinconf's tinc network name, else `demo`);
//! - `t`: the TXT argument with `&` turned into spaces;
//!
//! written without any whitespace between tokens, because every reader
//! word-splits the decoded list (`for i in $myServices`). The search
//! decodes with `base64 -d | bunzip2 | sed "s/'/\"/g" | jq -c .[]` (old
//! versions wrote single quotes).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::Value;
use std::io::{Read, Write};
use thiserror::Error;

/// The Serf tag name.
pub const TAG: &str = "services";
/// Largest decoded JSON accepted (bzip2 bombs are cut off here).
pub const MAX_JSON: usize = 64 * 1024;
/// avahi-ps's default `CLOUD_NAME` (the `m` field's domain).
pub const CLOUD_NAME: &str = "guifi";
/// avahi-ps's default `DEVICE_NAME` (the `e` field) on a box without
/// getinconf's tinc microcloud.
pub const DEVICE_NAME: &str = "demo";

/// One Cloudy service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudyService {
    /// type: Cloudy's bare word (`s`)
    pub service_type: String,
    /// description, blanks as `_` (`d`)
    pub description: String,
    /// host, `<node>.<cloud>.local` (`m`)
    pub host: String,
    /// IP address (`i`)
    pub ip: String,
    /// port (`p`, a string on the wire)
    pub port: u16,
    /// microcloud / tinc device (`e`)
    pub microcloud: String,
    /// TXT, attributes separated by spaces (`t`)
    pub txt: String,
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
}

/// `base64 -d` accepts input with or without padding.
const B64_READ: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decode a `services` tag value. Tolerant like Cloudy's own reader and
/// more: surrounding quotes and whitespace, bzip2 streams concatenated,
/// single-quoted objects (avahi-ps before 2018), whitespace between tokens,
/// `p` as a string or a number, missing fields (empty). Objects that are
/// not objects or whose port is not a port are skipped, not the whole list.
pub fn decode(tag: &str) -> Result<Vec<CloudyService>, CloudyError> {
    let t = tag.trim();
    let t = t
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(t);
    let clean: Vec<u8> = t.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let raw = B64_READ.decode(clean).map_err(|_| CloudyError::Base64)?;
    let mut json = Vec::new();
    bzip2::read::MultiBzDecoder::new(&raw[..])
        .take(MAX_JSON as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|_| CloudyError::Bzip2)?;
    if json.len() > MAX_JSON {
        return Err(CloudyError::Bzip2);
    }
    let value: Value = match serde_json::from_slice(&json) {
        Ok(v) => v,
        Err(first) => {
            // what Cloudy's search does to every list: sed "s/'/\"/g"
            let fixed: Vec<u8> = json
                .iter()
                .map(|&b| if b == b'\'' { b'"' } else { b })
                .collect();
            serde_json::from_slice(&fixed).map_err(|_| CloudyError::Json(first.to_string()))?
        }
    };
    let items = match value {
        Value::Array(a) => a,
        o @ Value::Object(_) => vec![o],
        _ => return Err(CloudyError::Json("not a JSON array".into())),
    };
    Ok(items.iter().filter_map(service_from).collect())
}

fn service_from(v: &Value) -> Option<CloudyService> {
    let o = v.as_object()?;
    let field = |k: &str| match o.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let port = match o.get("p") {
        Some(Value::Number(n)) => u16::try_from(n.as_u64()?).ok()?,
        Some(Value::String(s)) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(CloudyService {
        service_type: field("s"),
        description: field("d"),
        host: field("m"),
        ip: field("i"),
        port,
        microcloud: field("e"),
        txt: field("t"),
    })
}

/// A JSON string as avahi-ps's `"...\"$_Desc\"..."` would give for
/// values that need no escaping; values that do are escaped so the list
/// stays JSON, and `'` (which Cloudy's reader turns into `"`) becomes `_`.
fn json_str(s: &str) -> String {
    let s: String = s.chars().map(|c| if c == '\'' { '_' } else { c }).collect();
    serde_json::Value::String(s).to_string()
}

/// One object exactly as avahi-ps's `setToMyServices` writes it.
pub fn object(s: &CloudyService) -> String {
    format!(
        "{{\"s\":{},\"d\":{},\"m\":{},\"i\":{},\"p\":\"{}\",\"e\":{},\"t\":{}}}",
        json_str(&no_blanks(&s.service_type)),
        json_str(&description(&s.description)),
        json_str(&no_blanks(&s.host)),
        json_str(&no_blanks(&s.ip)),
        s.port,
        json_str(&no_blanks(&s.microcloud)),
        json_str(&s.txt),
    )
}

fn no_blanks(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join("_")
}

/// `d` as avahi-ps makes it: `echo $1 | sed 's/ /_/g'` (the unquoted
/// `$1` is word-split, so runs of blanks become one `_`, none at the ends).
pub fn description(d: &str) -> String {
    no_blanks(d)
}

/// `m` as avahi-ps makes it from the host name (`uname -n`).
pub fn host(hostname: &str) -> String {
    format!("{hostname}.{CLOUD_NAME}.local")
}

/// Cloudy's bare type word for a DNS-SD type: `_http._tcp` → `http`
/// (avahi-ps's mDNS plug publishes `_<word>._tcp`). Other types (`_udp`)
/// are kept whole.
pub fn bare_type(dns_sd: &str) -> String {
    match dns_sd
        .strip_prefix('_')
        .and_then(|x| x.strip_suffix("._tcp"))
    {
        Some(w) if !w.is_empty() && !w.contains('.') => w.to_string(),
        _ => dns_sd.to_string(),
    }
}

/// The DNS-SD type for a Cloudy type word: `http` → `_http._tcp`; a value
/// that already is a DNS-SD type (`_x._udp`) is kept.
pub fn dns_sd_type(word: &str) -> String {
    if word.starts_with('_') || word.is_empty() {
        word.to_string()
    } else {
        format!("_{word}._tcp")
    }
}

/// The JSON line avahi-ps feeds to bzip2: the list as `echo` prints it,
/// with its newline.
pub fn list_json(services: &[CloudyService]) -> String {
    let objs: Vec<String> = services.iter().map(object).collect();
    format!("[{}]\n", objs.join(","))
}

/// Encode services as a `services` tag value, byte for byte what
/// `echo "[...]" | bzip2 - | base64 -w 0` gives (bzip2's default `-9`).
/// The caller keeps the whole tag map under Serf's 512 bytes.
pub fn encode(services: &[CloudyService]) -> Result<String, CloudyError> {
    let json = list_json(services);
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    enc.write_all(json.as_bytes())
        .map_err(|_| CloudyError::Bzip2)?;
    let bz = enc.finish().map_err(|_| CloudyError::Bzip2)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bz))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> CloudyService {
        CloudyService {
            service_type: "http".into(),
            description: "webby_on_box1".into(),
            host: "box1.guifi.local".into(),
            ip: "10.228.1.2".into(),
            port: 8080,
            microcloud: "demo".into(),
            txt: String::new(),
        }
    }

    /// Run a bash script with arguments, stdin → stdout.
    fn bash(script: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut c = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("bash")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bash");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write");
        let o = c.wait_with_output().expect("wait");
        assert!(o.status.success(), "{script}");
        o.stdout
    }

    /// A first service published the way avahi-ps-serf publishes it (our
    /// script, from a reading of it): the description passed through an
    /// unquoted `echo` (blank runs collapse, ends trimmed) with blanks as
    /// `_`, `&` in TXT as blanks, `m` = `<node>.guifi.local`, `e` = `demo`,
    /// then `echo "[…]"` (with its newline) into `bzip2 | base64 -w 0`.
    /// Arguments: node, ip, description, type word, port, TXT.
    const PUBLISH: &str = r#"
        d=$(echo $3 | tr ' ' _)
        t=$(echo "$6" | tr '&' ' ')
        one=$(printf '{"s":"%s","d":"%s","m":"%s.guifi.local","i":"%s","p":"%s","e":"demo","t":"%s"}' "$4" "$d" "$1" "$2" "$5" "$t")
        echo "[$one]" | bzip2 | base64 -w 0
    "#;

    #[test]
    fn writes_byte_for_byte_what_avahi_ps_publishes() {
        for (d, ty, port, txt) in [
            ("webby on box1", "_http._tcp", 8080u16, ""),
            ("SERF instance running", "_serf._tcp", 5000, ""),
            ("  two   blanks  ", "_ssh._tcp", 22, "path=/&v=2"),
        ] {
            let ours = encode(&[CloudyService {
                service_type: bare_type(ty),
                description: description(d),
                host: host("box1"),
                ip: "10.228.1.2".into(),
                port,
                microcloud: DEVICE_NAME.into(),
                txt: txt.replace('&', " "),
            }])
            .expect("encode");
            let port = port.to_string();
            let word = bare_type(ty);
            let theirs = bash(PUBLISH, &["box1", "10.228.1.2", d, &word, &port, txt], b"");
            assert_eq!(ours.as_bytes(), &theirs[..], "{d}");
        }
        let json = list_json(&[sample()]);
        assert_eq!(
            json,
            "[{\"s\":\"http\",\"d\":\"webby_on_box1\",\"m\":\"box1.guifi.local\",\
             \"i\":\"10.228.1.2\",\"p\":\"8080\",\"e\":\"demo\",\"t\":\"\"}]\n"
        );
    }

    #[test]
    fn reads_what_avahi_ps_publishes() {
        let tag = bash(
            PUBLISH,
            &[
                "cloudy7",
                "10.0.0.7",
                "Syncthing instance running",
                "syncthing",
                "22000",
                "node_id=ABC&x=1",
            ],
            b"",
        );
        let s = decode(std::str::from_utf8(&tag).expect("utf8")).expect("decode");
        assert_eq!(
            s,
            vec![CloudyService {
                service_type: "syncthing".into(),
                description: "Syncthing_instance_running".into(),
                host: "cloudy7.guifi.local".into(),
                ip: "10.0.0.7".into(),
                port: 22000,
                microcloud: "demo".into(),
                txt: "node_id=ABC x=1".into(),
            }]
        );
    }

    fn tag_of(json: &str) -> String {
        String::from_utf8(bash("bzip2 - | base64 -w 0", &[], json.as_bytes())).expect("utf8")
    }

    #[test]
    fn tolerant_reader() {
        // the list as addMyService builds it after several publishes, an
        // old single-quoted last object, a numeric port, whitespace,
        // missing fields, and entries that are skipped
        let json = "[{\"s\":\"serf\",\"d\":\"SERF_instance_running\",\"m\":\"c1.guifi.local\",\
                    \"i\":\"10.1.1.1\",\"p\":\"5000\",\"e\":\"demo\",\"t\":\"\"},\
                    {'s':'ssh','d':'ssh','m':'c1.guifi.local','i':'10.1.1.1','p':'22','e':'demo','t':''}]\n";
        let s = decode(&tag_of(json)).expect("decode");
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].port, s[1].port), (5000, 22));
        assert_eq!(s[1].service_type, "ssh");

        let json = "[ { \"s\" : \"http\", \"p\" : 80 },\n {\"s\":\"x\",\"p\":\"\"}, 7, {\"s\":\"y\",\"p\":70000}, {\"s\":\"z\",\"p\":\" 81 \",\"i\":10} ]";
        let s = decode(&tag_of(json)).expect("decode");
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!((s[0].service_type.as_str(), s[0].port), ("http", 80));
        assert_eq!(s[0].host, "");
        assert_eq!((s[1].port, s[1].ip.as_str()), (81, "10"));

        // as `jq -c .tags.services` prints it, quoted, and without padding
        let t = tag_of("[{\"s\":\"a\",\"p\":\"1\"}]");
        assert_eq!(decode(&format!("\"{t}\"")).expect("quoted").len(), 1);
        assert_eq!(decode(t.trim_end_matches('=')).expect("unpadded").len(), 1);
        // two bzip2 streams, as `cat a.bz2 b.bz2` (bunzip2 reads both)
        let two = bash(
            "{ echo '[{\"s\":' | bzip2; echo '\"a\",\"p\":1}]' | bzip2; } | base64 -w0",
            &[],
            b"",
        );
        assert_eq!(
            decode(std::str::from_utf8(&two).expect("utf8"))
                .expect("multi")
                .len(),
            1
        );
    }

    #[test]
    fn values_cloudys_reader_would_break_on_are_made_safe() {
        let s = CloudyService {
            description: description("Bob's \"quoted\"\tpanel"),
            txt: "a=1".into(),
            ..sample()
        };
        let json = list_json(std::slice::from_ref(&s));
        assert!(!json.contains('\''), "{json}");
        // Cloudy's search pipeline reads it back as one object
        let tag = encode(&[s]).expect("encode");
        let out = bash(
            r#"printf '%s' "$1" | base64 -d | bunzip2 | sed "s/'/\"/g" | jq -c '.[]' | wc -l"#,
            &[&tag],
            b"",
        );
        assert_eq!(String::from_utf8_lossy(&out).trim(), "1");
        assert_eq!(
            decode(&tag).expect("decode")[0].description,
            "Bob_s_\"quoted\"_panel"
        );
    }

    #[test]
    fn types_map_both_ways() {
        assert_eq!(bare_type("_http._tcp"), "http");
        assert_eq!(bare_type("_dns._udp"), "_dns._udp");
        assert_eq!(bare_type("serf"), "serf");
        assert_eq!(dns_sd_type("syncthing"), "_syncthing._tcp");
        assert_eq!(dns_sd_type("_dns._udp"), "_dns._udp");
        assert_eq!(host("box"), "box.guifi.local");
        assert_eq!(description(" a  b "), "a_b");
    }

    #[test]
    fn garbage_and_bombs_are_rejected() {
        assert!(decode("%%%").is_err());
        assert!(decode("aGVsbG8=").is_err());
        assert!(matches!(
            decode(&tag_of("\"just a string\"")),
            Err(CloudyError::Json(_))
        ));
        assert!(matches!(
            decode(&tag_of("[{\"s\":")),
            Err(CloudyError::Json(_))
        ));
        // a tiny bzip2 of 1 MiB of zeros exceeds MAX_JSON
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        enc.write_all(&vec![b'0'; 1 << 20]).expect("write");
        let bomb = base64::engine::general_purpose::STANDARD.encode(enc.finish().expect("finish"));
        assert!(matches!(decode(&bomb), Err(CloudyError::Bzip2)));
    }
}
