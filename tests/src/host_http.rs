//! An HTTP server on the host that a booted box downloads from (QEMU's
//! user network reaches the host's loopback at 10.0.2.2): honest, or an
//! attacker that lies, stalls, drips or never stops. Each connection is
//! served by its own thread; what each path got is counted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a path answers.
#[derive(Clone)]
pub enum Answer {
    /// These bytes, with their Content-Length.
    File(Vec<u8>),
    /// This status and a short body.
    Status(u16),
    /// Random-looking bytes without end, no Content-Length.
    Endless,
    /// These bytes, no Content-Length, then silence with the connection open.
    Stall(Vec<u8>),
    /// These bytes one per `Duration`, no Content-Length.
    Drip(Vec<u8>, Duration),
}

/// The server; it lives as long as the test process.
pub struct HostHttp {
    pub port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl HostHttp {
    pub fn serve(routes: Vec<(&str, Answer)>) -> HostHttp {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let routes: Arc<HashMap<String, Answer>> = Arc::new(
            routes
                .into_iter()
                .map(|(p, a)| (p.to_string(), a))
                .collect(),
        );
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let (routes, hits) = (routes.clone(), h.clone());
                std::thread::spawn(move || answer(s, &routes, &hits));
            }
        });
        HostHttp { port, hits }
    }

    /// The URL of `path` as the box sees it.
    pub fn url(&self, path: &str) -> String {
        format!("http://10.0.2.2:{}{path}", self.port)
    }

    /// How many requests `path` got.
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .map(|h| h.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

fn answer(
    mut s: std::net::TcpStream,
    routes: &HashMap<String, Answer>,
    hits: &Mutex<HashMap<String, usize>>,
) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(line) = nuvol_testkit::read_request_head(&mut s) else {
        return;
    };
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    if let Ok(mut h) = hits.lock() {
        *h.entry(path.clone()).or_default() += 1;
    }
    let head = |s: &mut std::net::TcpStream, len: Option<usize>| {
        let cl = len
            .map(|n| format!("Content-Length: {n}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "HTTP/1.1 200 OK\r\n{cl}Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        )
    };
    match routes.get(&path).cloned().unwrap_or(Answer::Status(404)) {
        Answer::File(b) => {
            let _ = head(&mut s, Some(b.len())).and_then(|()| s.write_all(&b));
        }
        Answer::Status(code) => {
            let _ = write!(
                s,
                "HTTP/1.1 {code} Nope\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope\n"
            );
        }
        Answer::Endless => {
            if head(&mut s, None).is_err() {
                return;
            }
            let mut x: u32 = 0x1234_5678;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                for c in chunk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *c = x as u8;
                }
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        Answer::Stall(b) => {
            if head(&mut s, None).and_then(|()| s.write_all(&b)).is_err() {
                return;
            }
            // Silence, the connection open, until the box gives up.
            let mut sink = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
            while let Ok(n) = s.read(&mut sink) {
                if n == 0 {
                    return;
                }
            }
        }
        Answer::Drip(b, every) => {
            if head(&mut s, None).is_err() {
                return;
            }
            for x in b {
                if s.write_all(&[x]).is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
        }
    }
}
