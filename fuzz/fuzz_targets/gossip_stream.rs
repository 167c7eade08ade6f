//! A memberlist stream (push/pull, ping, user message; clear, AES-GCM or
//! labelled) read by the node's incremental stream reader, arriving in
//! pieces whose sizes the input chooses; and the resumable msgpack scanner
//! on its own.
//!
//! Checks beyond "no panic, no OOM, no hang": the reader gives the same
//! answer however the bytes are cut into pieces; the scanner, fed piece by
//! piece, finds the end exactly where `decode` does, and never accepts what
//! `decode` refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_gossip::msgpack::{decode, DecodeError, Scanner};
use nuvol_gossip::node::read_stream_message;
use nuvol_gossip::wire::{Framing, Keyring};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Hands out `data` in pieces of the given sizes (cycled), like a peer
/// trickling bytes.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    n: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let want = if self.sizes.is_empty() {
            self.data.len()
        } else {
            usize::from(self.sizes[self.n % self.sizes.len()]).max(1)
        };
        self.n += 1;
        let k = want.min(self.data.len()).min(buf.remaining());
        let (head, tail) = self.data.split_at(k);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
}

fn read(framing: &Framing, data: &[u8], sizes: &[u8]) -> Result<(u8, Vec<u8>), String> {
    let mut r = Pieces { data, sizes, n: 0 };
    RT.with(|rt| rt.block_on(read_stream_message(framing, &mut r)))
        .map_err(|e| e.to_string())
}

fn scan_in_pieces(data: &[u8], sizes: &[u8]) -> Result<Option<usize>, DecodeError> {
    let mut sc = Scanner::new();
    let mut have = 0;
    let mut i = 0;
    loop {
        let step = usize::from(*sizes.get(i % sizes.len().max(1)).unwrap_or(&255)).max(1);
        i += 1;
        have = (have + step).min(data.len());
        match sc.scan(&data[..have])? {
            Some(n) => return Ok(Some(n)),
            None if have == data.len() => return Ok(None),
            None => {}
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let cut = usize::from(mode >> 4).min(rest.len());
    let (sizes, data) = rest.split_at(cut);

    // the scanner against decode
    let scanned = scan_in_pieces(data, sizes);
    match decode(data) {
        Ok((_, used)) => assert_eq!(scanned, Ok(Some(used))),
        Err(_) => assert!(!matches!(scanned, Ok(Some(_))), "{scanned:?}"),
    }
    if let Ok(Some(n)) = scanned {
        assert_eq!(decode(&data[..n]).map(|x| x.1), Ok(n));
    }

    // the stream reader: same answer in pieces and at once
    let framing = match mode % 3 {
        0 => Framing::default(),
        1 => Framing {
            keyring: Keyring::new(vec![vec![7u8; 16]]).expect("key"),
            ..Framing::default()
        },
        _ => Framing {
            label: "nuvol".into(),
            ..Framing::default()
        },
    };
    let whole = read(&framing, data, &[]);
    let trickled = read(&framing, data, sizes);
    assert_eq!(whole.is_ok(), trickled.is_ok(), "{whole:?} / {trickled:?}");
    if let (Ok(a), Ok(b)) = (&whole, &trickled) {
        assert_eq!(a, b);
    }
});
