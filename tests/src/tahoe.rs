//! Tahoe-LAFS's web API on a gateway (the `tahoe` recipe's port 3456), as a
//! user's program stores and reads files.

use std::net::SocketAddr;

/// Text of `len` bytes that no two runs of a broken store would share by
/// chance, and long enough to be stored as shares (Tahoe keeps files of 56
/// bytes or less inside the capability itself: a LIT cap, no storage).
pub fn payload(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 94) as u8)
        })
        .collect()
}

/// `PUT /uri`: the file's read capability, once the gateway answers 200
/// or 201 with one (until enough storage servers are known, Tahoe answers
/// 500).
pub fn put(gateway: SocketAddr, data: &str) -> Option<String> {
    let a = crate::rest::request(gateway, "PUT", "/uri", &[], Some(data))?;
    let cap = a.body.trim().to_string();
    ((a.status == 200 || a.status == 201) && cap.starts_with("URI:")).then_some(cap)
}

/// `GET /uri/<cap>`: the file, when the gateway answers 200.
pub fn get(gateway: SocketAddr, cap: &str) -> Option<String> {
    let a = crate::rest::request(gateway, "GET", &format!("/uri/{cap}"), &[], None)?;
    (a.status == 200).then_some(a.body)
}

/// The storage servers the gateway is connected to (`/?t=json`).
pub fn connected_servers(gateway: SocketAddr) -> usize {
    crate::rest::request(gateway, "GET", "/?t=json", &[], None)
        .and_then(|a| a.json())
        .and_then(|v| {
            Some(
                v["servers"]
                    .as_array()?
                    .iter()
                    .filter(|s| s["connection_status"] == "connected")
                    .count(),
            )
        })
        .unwrap_or(0)
}
