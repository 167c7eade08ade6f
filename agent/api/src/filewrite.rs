//! A file written (and optionally hashed) on the blocking pool at a lower
//! CPU priority ([`crate::bulk`]), so the runtime thread that serves HTTP
//! never waits on the disk nor for a core: an 800 MB upload must not
//! delay `/api/v1/status`.
//!
//! Chunks travel through a channel of [`QUEUE`] chunks (a few hundred KiB
//! at most in flight: a fast client is slowed to the disk's pace, not
//! buffered in memory).

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use sha2::Digest;

/// Chunks in flight between the runtime and the writer.
pub const QUEUE: usize = 4;

/// What the writer did.
#[derive(Debug)]
pub struct Written {
    pub bytes: u64,
    /// SHA-256 of the bytes, hex, when asked for.
    pub sha256: Option<String>,
}

/// A file being written on the blocking pool (created at once).
pub struct BlockingWriter {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: tokio::task::JoinHandle<std::io::Result<Written>>,
    queued: u64,
}

impl BlockingWriter {
    /// Create `path` and write what [`BlockingWriter::write`] is given;
    /// hash it too if `hash`.
    pub fn create(path: &Path, hash: bool) -> BlockingWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
        let path = path.to_path_buf();
        let task = crate::bulk::spawn(move || {
            let mut f = std::fs::File::create(&path)?;
            let mut h = hash.then(sha2::Sha256::new);
            let mut bytes = 0u64;
            while let Some(b) = rx.blocking_recv() {
                f.write_all(&b)?;
                if let Some(h) = h.as_mut() {
                    h.update(&b);
                }
                bytes += b.len() as u64;
            }
            f.sync_all()?;
            Ok(Written {
                bytes,
                sha256: h.map(|h| nuvol_bundle::format::hex(&h.finalize())),
            })
        });
        BlockingWriter {
            tx: Some(tx),
            task,
            queued: 0,
        }
    }

    /// Queue one chunk (waits while the writer is [`QUEUE`] chunks
    /// behind). An error is the writer's (disk full, ...).
    pub async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        let n = chunk.len() as u64;
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            self.queued += n;
            return Ok(());
        }
        self.tx = None;
        match (&mut self.task).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(std::io::Error::other("the file writer stopped")),
            Err(e) => Err(std::io::Error::other(format!(
                "the file writer failed: {e}"
            ))),
        }
    }

    /// Bytes handed over so far.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Write out what is queued, fsync, and say how much was written.
    pub async fn finish(mut self) -> std::io::Result<Written> {
        self.tx = None;
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(format!(
                "the file writer failed: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn writes_hashes_and_reports_errors() {
        let dir = std::env::temp_dir().join(format!("nuvol-filewrite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let mut w = BlockingWriter::create(&p, true);
        for _ in 0..10 {
            w.write(Bytes::from_static(b"abc")).await.unwrap();
        }
        let got = w.finish().await.unwrap();
        assert_eq!(got.bytes, 30);
        assert_eq!(std::fs::read(&p).unwrap(), b"abc".repeat(10));
        let want = nuvol_bundle::format::hex(&sha2::Sha256::digest(b"abc".repeat(10)));
        assert_eq!(got.sha256, Some(want));
        // A file that cannot be created: the error comes back on write.
        let mut w = BlockingWriter::create(&dir.join("no/such/dir/f"), false);
        let mut err = None;
        for _ in 0..10 {
            if let Err(e) = w.write(Bytes::from_static(b"x")).await {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err.unwrap().kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
