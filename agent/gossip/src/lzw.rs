//! LZW as Go's `compress/lzw` does it with `LSB` order and literal width 8
//! (what memberlist's `compressMsg` carries): clear code 256, end code 257,
//! codes start 9 bits wide and grow to 12; when the table is full the
//! decoder stops adding entries until the next clear code, and the encoder
//! emits a clear code instead of growing further.

use std::collections::HashMap;
use thiserror::Error;

const CLEAR: u16 = 256;
const EOF: u16 = 257;
const MAX_WIDTH: u32 = 12;
const TABLE: usize = 1 << MAX_WIDTH;
const INVALID: u16 = u16::MAX;

/// Why a buffer did not decompress.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LzwError {
    /// A code that does not exist yet.
    #[error("lzw: invalid code")]
    InvalidCode,
    /// The stream ended without the end code.
    #[error("lzw: truncated stream")]
    Truncated,
    /// Output would exceed the caller's limit.
    #[error("lzw: output exceeds {0} bytes")]
    TooLarge(usize),
}

/// Decompress `input`, refusing to produce more than `limit` bytes.
pub fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, LzwError> {
    let mut prefix = vec![0u16; TABLE];
    let mut suffix = vec![0u8; TABLE];
    let mut out: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::with_capacity(TABLE);
    let mut width: u32 = 9;
    let mut hi: u16 = EOF;
    let mut overflow: u16 = 1 << width;
    let mut last: u16 = INVALID;
    let mut bits: u32 = 0;
    let mut nbits: u32 = 0;
    let mut pos = 0usize;
    loop {
        while nbits < width {
            let Some(&b) = input.get(pos) else {
                return Err(LzwError::Truncated);
            };
            pos += 1;
            bits |= u32::from(b) << nbits;
            nbits += 8;
        }
        let code = (bits & ((1 << width) - 1)) as u16;
        bits >>= width;
        nbits -= width;
        if code < CLEAR {
            out.push(code as u8);
            if last != INVALID {
                suffix[usize::from(hi)] = code as u8;
                prefix[usize::from(hi)] = last;
            }
        } else if code == CLEAR {
            width = 9;
            hi = EOF;
            overflow = 1 << width;
            last = INVALID;
            continue;
        } else if code == EOF {
            return Ok(out);
        } else if code <= hi {
            scratch.clear();
            let mut c = code;
            if code == hi {
                if last == INVALID {
                    return Err(LzwError::InvalidCode);
                }
                // KwKwK: the last expansion followed by its own first byte
                let mut h = last;
                while h >= CLEAR {
                    h = prefix[usize::from(h)];
                }
                scratch.push(h as u8);
                c = last;
            }
            while c >= CLEAR {
                scratch.push(suffix[usize::from(c)]);
                c = prefix[usize::from(c)];
                if scratch.len() > TABLE {
                    return Err(LzwError::InvalidCode);
                }
            }
            scratch.push(c as u8);
            out.extend(scratch.iter().rev());
            if last != INVALID {
                suffix[usize::from(hi)] = c as u8;
                prefix[usize::from(hi)] = last;
            }
        } else {
            return Err(LzwError::InvalidCode);
        }
        if out.len() > limit {
            return Err(LzwError::TooLarge(limit));
        }
        last = code;
        hi += 1;
        if hi >= overflow {
            if width == MAX_WIDTH {
                last = INVALID;
                hi -= 1;
            } else {
                width += 1;
                overflow = 1 << width;
            }
        }
    }
}

struct BitWriter {
    out: Vec<u8>,
    bits: u32,
    nbits: u32,
}

impl BitWriter {
    fn put(&mut self, code: u16, width: u32) {
        self.bits |= u32::from(code) << self.nbits;
        self.nbits += width;
        while self.nbits >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.nbits -= 8;
        }
    }
    fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            self.out.push(self.bits as u8);
        }
        self.out
    }
}

/// Compress `input` in the same format (decodable by Go's `lzw.NewReader`).
pub fn compress(input: &[u8]) -> Vec<u8> {
    let mut w = BitWriter {
        out: Vec::with_capacity(input.len() / 2 + 8),
        bits: 0,
        nbits: 0,
    };
    let mut width: u32 = 9;
    let mut hi: u16 = EOF;
    let mut overflow: u16 = 1 << width;
    let mut table: HashMap<(u16, u8), u16> = HashMap::new();
    w.put(CLEAR, width);
    let mut iter = input.iter();
    let Some(&first) = iter.next() else {
        w.put(EOF, width);
        return w.finish();
    };
    let mut saved: u16 = u16::from(first);
    for &b in iter {
        if let Some(&code) = table.get(&(saved, b)) {
            saved = code;
            continue;
        }
        w.put(saved, width);
        // mirror the decoder: it bumps `hi` after every code it reads
        hi += 1;
        let mut full = false;
        if hi >= overflow {
            if width == MAX_WIDTH {
                hi -= 1;
                full = true;
            } else {
                width += 1;
                overflow = 1 << width;
            }
        }
        if full {
            w.put(CLEAR, width);
            width = 9;
            hi = EOF;
            overflow = 1 << width;
            table.clear();
        } else {
            // the decoder stores (saved, b) at `hi` when it reads the next code
            table.insert((saved, b), hi);
        }
        saved = u16::from(b);
    }
    w.put(saved, width);
    hi += 1;
    if hi >= overflow && width < MAX_WIDTH {
        width += 1;
    }
    w.put(EOF, width);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_various() {
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"TOBEORNOTTOBEORTOBEORNOT".to_vec(),
            vec![0u8; 100_000],
        ];
        let mut x: u32 = 12345;
        let noisy: Vec<u8> = (0..200_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8 % 7
            })
            .collect();
        inputs.push(noisy);
        for inp in inputs {
            let c = compress(&inp);
            assert_eq!(decompress(&c, usize::MAX).unwrap(), inp);
        }
    }

    #[test]
    fn starts_with_clear_code_like_go_writer() {
        // Go's writer emits a clear code (256, 9 bits LSB-first) before data
        let c = compress(b"hello hello hello");
        assert_eq!(c[0], 0x00); // low 8 bits of clear code 256
        assert_eq!(c[1] & 1, 1); // 9th bit of the clear code
        assert_eq!(decompress(&c, 1000).unwrap(), b"hello hello hello");
    }

    #[test]
    fn limits_and_garbage() {
        let c = compress(&vec![7u8; 50_000]);
        assert_eq!(decompress(&c, 1000), Err(LzwError::TooLarge(1000)));
        assert_eq!(
            decompress(&c[..c.len() / 2], usize::MAX),
            Err(LzwError::Truncated)
        );
        // a code far beyond the table right after clear
        assert!(decompress(&[0x00, 0xff, 0xff, 0xff], 1000).is_err());
    }
}
