//! Per-service logs: a bounded ring in memory, rotating files on data, and
//! a broadcast for followers.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Longest line kept; longer output is split.
pub const MAX_LINE: usize = 8 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines the supervisor writes itself (started, exited, restarting).
    Supervisor,
}

/// One line of a service's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Increases by one per line, per service.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub ts_ms: u64,
    pub stream: Stream,
    pub text: String,
}

/// Limits of the memory ring and the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub ring_lines: usize,
    pub ring_bytes: usize,
    pub file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            ring_lines: 500,
            ring_bytes: 64 * 1024,
            file_bytes: 1 << 20,
            files: 3,
        }
    }
}

struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    next_seq: u64,
}

struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
}

/// The log of one service.
pub struct LogStore {
    limits: LogLimits,
    ring: Mutex<Ring>,
    file: Mutex<LogFile>,
    tx: broadcast::Sender<LogLine>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LogStore {
    /// Logs kept in `dir/current.log` (+ `.1` … `.N`).
    pub fn new(dir: &Path, limits: LogLimits) -> Self {
        let path = dir.join("current.log");
        let _ = fs::create_dir_all(dir);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (tx, _) = broadcast::channel(256);
        LogStore {
            limits,
            ring: Mutex::new(Ring {
                lines: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
            }),
            file: Mutex::new(LogFile {
                path,
                file: None,
                size,
            }),
            tx,
        }
    }

    /// Append one line (split if longer than [`MAX_LINE`]).
    pub fn push(&self, stream: Stream, text: &str) {
        let mut rest = text;
        loop {
            let mut cut = rest.len().min(MAX_LINE);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (part, tail) = rest.split_at(cut);
            self.push_one(stream, part);
            if tail.is_empty() {
                break;
            }
            rest = tail;
        }
    }

    fn push_one(&self, stream: Stream, text: &str) {
        let line = {
            let mut r = match self.ring.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let line = LogLine {
                seq: r.next_seq,
                ts_ms: now_ms(),
                stream,
                text: text.to_string(),
            };
            r.next_seq += 1;
            r.bytes += line.text.len();
            r.lines.push_back(line.clone());
            while r.lines.len() > self.limits.ring_lines || r.bytes > self.limits.ring_bytes {
                match r.lines.pop_front() {
                    Some(old) => r.bytes -= old.text.len(),
                    None => break,
                }
            }
            line
        };
        self.write_file(&line);
        let _ = self.tx.send(line);
    }

    fn write_file(&self, line: &LogLine) {
        let mut f = match self.file.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let tag = match line.stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
            Stream::Supervisor => "sup",
        };
        let rec = format!("{} {tag} {}\n", line.ts_ms, line.text);
        if f.size + rec.len() as u64 > self.limits.file_bytes && f.size > 0 {
            f.file = None;
            // current.log.(N-1) → .N, …, current.log → .1
            for i in (1..self.limits.files).rev() {
                let from = PathBuf::from(format!("{}.{i}", f.path.display()));
                let to = PathBuf::from(format!("{}.{}", f.path.display(), i + 1));
                let _ = fs::rename(from, to);
            }
            if self.limits.files > 0 {
                let _ = fs::rename(&f.path, format!("{}.1", f.path.display()));
            } else {
                let _ = fs::remove_file(&f.path);
            }
            f.size = 0;
        }
        if f.file.is_none() {
            f.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&f.path)
                .ok();
        }
        let ok = f
            .file
            .as_mut()
            .map(|file| file.write_all(rec.as_bytes()).is_ok())
            .unwrap_or(false);
        if ok {
            f.size += rec.len() as u64;
        } else {
            f.file = None;
        }
    }

    /// The lines still in memory, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        match self.ring.lock() {
            Ok(g) => g.lines.iter().cloned().collect(),
            Err(p) => p.into_inner().lines.iter().cloned().collect(),
        }
    }

    /// Every line in memory, then new lines as they come.
    pub fn follow(&self) -> LogFollower {
        let rx = self.tx.subscribe();
        let backlog: VecDeque<LogLine> = self.snapshot().into();
        let last = backlog.back().map(|l| l.seq).unwrap_or(0);
        LogFollower {
            backlog,
            rx,
            last,
            missed: 0,
        }
    }
}

/// A live view of a service's log.
pub struct LogFollower {
    backlog: VecDeque<LogLine>,
    rx: broadcast::Receiver<LogLine>,
    last: u64,
    missed: u64,
}

impl LogFollower {
    /// The next line; `None` once the service has been removed.
    pub async fn next(&mut self) -> Option<LogLine> {
        if let Some(l) = self.backlog.pop_front() {
            return Some(l);
        }
        loop {
            match self.rx.recv().await {
                Ok(l) if l.seq <= self.last => continue,
                Ok(l) => {
                    self.last = l.seq;
                    return Some(l);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Lines of the backlog (the ring at `follow` time) not yet returned.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Lines skipped because this follower was too slow.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_files_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            ring_lines: 10,
            ring_bytes: 1000,
            file_bytes: 500,
            files: 2,
        };
        let s = LogStore::new(dir.path(), limits);
        for i in 0..100 {
            s.push(Stream::Stdout, &format!("line {i:04} {}", "x".repeat(20)));
        }
        let snap = s.snapshot();
        assert_eq!(snap.len(), 10);
        assert_eq!(snap[0].seq, 91);
        assert!(snap[9].text.starts_with("line 0099"));
        assert!(fs::metadata(dir.path().join("current.log")).unwrap().len() <= 500);
        assert!(dir.path().join("current.log.1").exists());
        assert!(dir.path().join("current.log.2").exists());
        assert!(!dir.path().join("current.log.3").exists());
        let cur = fs::read_to_string(dir.path().join("current.log")).unwrap();
        assert!(cur
            .trim_end()
            .ends_with(&format!("line 0099 {}", "x".repeat(20))));
        // Long lines are split, not dropped.
        s.push(Stream::Stderr, &"y".repeat(MAX_LINE + 5));
        let snap = s.snapshot();
        assert_eq!(snap[snap.len() - 1].text, "yyyyy");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn follow_gives_backlog_then_live_lines() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(LogStore::new(dir.path(), LogLimits::default()));
        s.push(Stream::Stdout, "old");
        let mut f = s.follow();
        s.push(Stream::Stdout, "new");
        assert_eq!(f.next().await.unwrap().text, "old");
        assert_eq!(f.next().await.unwrap().text, "new");
        let s2 = s.clone();
        tokio::spawn(async move { s2.push(Stream::Stderr, "later") });
        let l = f.next().await.unwrap();
        assert_eq!((l.text.as_str(), l.stream), ("later", Stream::Stderr));
    }
}
