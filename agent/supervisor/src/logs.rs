//! Per-service logs: a bounded ring in memory, a broadcast for followers,
//! and files on data written in batches by one writer thread.
//!
//! Budgets (per service, see docs/containers.md):
//! - a rate limit: a token bucket of [`LogLimits::burst_bytes`] refilled
//!   at [`LogLimits::rate_bytes`] per second, each line costing its length
//!   plus [`LINE_COST`]. Over it, lines are dropped (not kept in the ring,
//!   not sent to followers, not written) and counted; at most once a second
//!   one marker line says how many: `… 12345 lines dropped (rate limit)`.
//!   The supervisor's own lines (started, exited) are never dropped.
//! - the file: `current.log` up to [`LogLimits::file_bytes`], then rotated
//!   to `current.log.1` ([`LogLimits::files`] rotated files kept).
//! - the disk: lines wait in memory (at most [`PENDING_MAX`] per service;
//!   more are dropped and counted like the rate limit's) and the writer
//!   thread writes each service's batch with one `write` every
//!   [`FLUSH_EVERY`], or sooner once [`FLUSH_AT`] bytes wait. The thread
//!   that reads the services' output never touches the disk.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// How long the reader of a service's output waits after a read whose
/// lines went over the rate limit: the pipe fills meanwhile and the
/// service blocks on its next write, so a service printing without end
/// costs the agent one read per pause, not a core.
pub const OVER_BUDGET_PAUSE: Duration = Duration::from_millis(20);

/// Longest line kept; longer output is split.
pub const MAX_LINE: usize = 8 * 1024;
/// What a line costs the rate limit besides its text (the file record's
/// timestamp and tag).
pub const LINE_COST: u64 = 24;
/// Most bytes of one service waiting for the writer.
pub const PENDING_MAX: usize = 64 * 1024;
/// Bytes waiting that wake the writer before its tick.
pub const FLUSH_AT: usize = 16 * 1024;
/// The writer's tick: waiting lines are written at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Least time between two "lines dropped" markers of one service.
pub const MARKER_EVERY: Duration = Duration::from_secs(1);

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

/// Limits of the memory ring, the rate and the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub ring_lines: usize,
    pub ring_bytes: usize,
    /// Largest `current.log` before it is rotated.
    pub file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub files: u32,
    /// Sustained rate, bytes per second (see [`LINE_COST`]).
    pub rate_bytes: u64,
    /// Burst above the rate, bytes.
    pub burst_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            ring_lines: 500,
            ring_bytes: 64 * 1024,
            file_bytes: 1 << 20,
            files: 1,
            rate_bytes: 16 * 1024,
            burst_bytes: 128 * 1024,
        }
    }
}

struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    next_seq: u64,
    /// Rate limit: tokens (bytes) left and when they were last refilled.
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the last marker.
    dropped: u64,
    marker_at: Option<Instant>,
}

struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
}

struct Shared {
    limits: LogLimits,
    ring: Mutex<Ring>,
    /// File records waiting for the writer.
    pending: Mutex<Vec<u8>>,
    file: Mutex<LogFile>,
    tx: broadcast::Sender<LogLine>,
}

/// The log of one service.
pub struct LogStore {
    shared: Arc<Shared>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The one writer thread for every service's log.
struct Writer {
    stores: Mutex<Vec<Weak<Shared>>>,
    wake: Mutex<bool>,
    cv: Condvar,
}

/// Stack of the writer thread: it only formats paths and writes buffers.
const WRITER_STACK: usize = 128 * 1024;

fn writer() -> &'static Writer {
    static WRITER: OnceLock<&'static Writer> = OnceLock::new();
    WRITER.get_or_init(|| {
        let w: &'static Writer = Box::leak(Box::new(Writer {
            stores: Mutex::new(Vec::new()),
            wake: Mutex::new(false),
            cv: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("nuvol-logs".into())
            .stack_size(WRITER_STACK)
            .spawn(move || w.run());
        if let Err(e) = spawned {
            // Lines still reach the ring and followers; files only on flush.
            eprintln!("nuvol: log writer thread: {e}");
        }
        w
    })
}

impl Writer {
    fn run(&self) {
        loop {
            {
                let mut woken = lock(&self.wake);
                if !*woken {
                    woken = match self.cv.wait_timeout(woken, FLUSH_EVERY) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                *woken = false;
            }
            let live: Vec<Arc<Shared>> = {
                let mut v = lock(&self.stores);
                v.retain(|w| w.strong_count() > 0);
                v.iter().filter_map(Weak::upgrade).collect()
            };
            for s in live {
                s.tick();
                s.flush();
            }
        }
    }

    fn poke(&self) {
        let mut w = lock(&self.wake);
        if !*w {
            *w = true;
            self.cv.notify_one();
        }
    }
}

impl LogStore {
    /// Logs kept in `dir/current.log` (+ `.1` … `.N`).
    pub fn new(dir: &Path, limits: LogLimits) -> Self {
        let path = dir.join("current.log");
        let _ = fs::create_dir_all(dir);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (tx, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            limits,
            ring: Mutex::new(Ring {
                lines: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
                tokens: limits.burst_bytes as f64,
                refilled: Instant::now(),
                dropped: 0,
                marker_at: None,
            }),
            pending: Mutex::new(Vec::new()),
            file: Mutex::new(LogFile {
                path,
                file: None,
                size,
            }),
            tx,
        });
        lock(&writer().stores).push(Arc::downgrade(&shared));
        LogStore { shared }
    }

    /// Append one line (split if longer than [`MAX_LINE`]), unless over
    /// the rate limit. `false` when (a part of) it was dropped: the reader
    /// then slows down ([`OVER_BUDGET_PAUSE`]).
    pub fn push(&self, stream: Stream, text: &str) -> bool {
        let mut rest = text;
        let mut kept = true;
        loop {
            let mut cut = rest.len().min(MAX_LINE);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (part, tail) = rest.split_at(cut);
            kept &= self.shared.push_one(stream, part);
            if tail.is_empty() {
                return kept;
            }
            rest = tail;
        }
    }

    /// Write what waits to the file now, on this thread (the writer thread
    /// does it every [`FLUSH_EVERY`]).
    pub fn flush(&self) {
        self.shared.flush();
    }

    /// Lines dropped (rate limit, writer behind) and not yet reported by a
    /// marker line.
    pub fn dropped(&self) -> u64 {
        lock(&self.shared.ring).dropped
    }

    /// The lines still in memory, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        lock(&self.shared.ring).lines.iter().cloned().collect()
    }

    /// Every line in memory, then new lines as they come.
    pub fn follow(&self) -> LogFollower {
        let rx = self.shared.tx.subscribe();
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

impl Drop for LogStore {
    fn drop(&mut self) {
        // The service is gone: nothing more comes, write out what waits.
        self.shared.tick_now();
        self.shared.flush();
    }
}

/// Write every service's waiting lines now (the agent calls it on stop).
pub fn flush_all() {
    let live: Vec<Arc<Shared>> = lock(&writer().stores)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for s in live {
        s.tick_now();
        s.flush();
    }
}

fn record(line: &LogLine) -> String {
    let tag = match line.stream {
        Stream::Stdout => "out",
        Stream::Stderr => "err",
        Stream::Supervisor => "sup",
    };
    format!("{} {tag} {}\n", line.ts_ms, line.text)
}

impl Shared {
    fn push_one(&self, stream: Stream, text: &str) -> bool {
        let now = Instant::now();
        let mut r = lock(&self.ring);
        let l = self.limits;
        let elapsed = now.saturating_duration_since(r.refilled).as_secs_f64();
        r.tokens = (r.tokens + elapsed * l.rate_bytes as f64).min(l.burst_bytes as f64);
        r.refilled = now;
        let cost = (text.len() as u64 + LINE_COST) as f64;
        let marker_due = r.dropped > 0 && r.marker_at.is_none_or(|t| now - t >= MARKER_EVERY);
        if stream != Stream::Supervisor && r.tokens < cost {
            r.dropped += 1;
            if marker_due {
                self.marker(&mut r, now);
            }
            return false;
        }
        if marker_due {
            self.marker(&mut r, now);
        }
        if stream != Stream::Supervisor {
            r.tokens -= cost;
        }
        if !self.append(&mut r, stream, text.to_string()) {
            r.dropped += 1;
            return false;
        }
        true
    }

    /// The "lines dropped" marker line, and the count starts again.
    fn marker(&self, r: &mut Ring, now: Instant) {
        let n = std::mem::take(&mut r.dropped);
        r.marker_at = Some(now);
        let text = format!("… {n} lines dropped (rate limit)");
        if !self.append(r, Stream::Supervisor, text) {
            r.dropped += n; // told next time
        }
    }

    /// A marker for drops nobody has been told about for a while (the
    /// service went quiet after a flood).
    fn tick(&self) {
        let now = Instant::now();
        let mut r = lock(&self.ring);
        if r.dropped > 0 && r.marker_at.is_none_or(|t| now - t >= MARKER_EVERY) {
            self.marker(&mut r, now);
        }
    }

    fn tick_now(&self) {
        let mut r = lock(&self.ring);
        if r.dropped > 0 {
            self.marker(&mut r, Instant::now());
        }
    }

    /// Into the ring, the writer's queue and the followers; `false` (and
    /// nowhere) when the writer is [`PENDING_MAX`] behind.
    fn append(&self, r: &mut Ring, stream: Stream, text: String) -> bool {
        let line = LogLine {
            seq: r.next_seq,
            ts_ms: now_ms(),
            stream,
            text,
        };
        let rec = record(&line);
        let queued = {
            let mut p = lock(&self.pending);
            let file = usize::try_from(self.limits.file_bytes).unwrap_or(usize::MAX);
            let max = PENDING_MAX.min(file.max(1));
            if p.len() + rec.len() > max && !p.is_empty() {
                None
            } else {
                p.extend_from_slice(rec.as_bytes());
                Some(p.len())
            }
        };
        let Some(waiting) = queued else {
            writer().poke();
            return false;
        };
        if waiting >= FLUSH_AT {
            writer().poke();
        }
        r.next_seq += 1;
        r.bytes += line.text.len();
        r.lines.push_back(line.clone());
        while r.lines.len() > self.limits.ring_lines || r.bytes > self.limits.ring_bytes {
            match r.lines.pop_front() {
                Some(old) => r.bytes -= old.text.len(),
                None => break,
            }
        }
        let _ = self.tx.send(line);
        true
    }

    /// Write the waiting records with one write, rotating first when they
    /// would take the file past its size.
    fn flush(&self) {
        let buf = std::mem::take(&mut *lock(&self.pending));
        if buf.is_empty() {
            return;
        }
        let mut f = lock(&self.file);
        if f.size + buf.len() as u64 > self.limits.file_bytes && f.size > 0 {
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
            .is_some_and(|file| file.write_all(&buf).is_ok());
        if ok {
            f.size += buf.len() as u64;
        } else {
            f.file = None;
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

    fn limits(file_bytes: u64, files: u32) -> LogLimits {
        LogLimits {
            ring_lines: 10,
            ring_bytes: 1000,
            file_bytes,
            files,
            rate_bytes: 1 << 30,
            burst_bytes: 1 << 30,
        }
    }

    #[test]
    fn ring_is_bounded_and_files_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::new(dir.path(), limits(500, 2));
        for i in 0..100 {
            s.push(Stream::Stdout, &format!("line {i:04} {}", "x".repeat(20)));
            s.flush();
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
        let s = LogStore::new(&dir.path().join("long"), limits(1 << 20, 1));
        s.push(Stream::Stderr, &"y".repeat(MAX_LINE + 5));
        let snap = s.snapshot();
        assert_eq!(snap[snap.len() - 1].text, "yyyyy");
    }

    #[test]
    fn lines_reach_the_file_without_an_explicit_flush() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::new(dir.path(), LogLimits::default());
        s.push(Stream::Stdout, "hello");
        let path = dir.path().join("current.log");
        let t0 = Instant::now();
        while !fs::read_to_string(&path)
            .unwrap_or_default()
            .contains(" out hello\n")
        {
            assert!(
                t0.elapsed() < FLUSH_EVERY * 5,
                "not written by the writer thread"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_flood_is_cut_to_the_rate_with_a_counted_marker() {
        let dir = tempfile::tempdir().unwrap();
        let l = LogLimits {
            rate_bytes: 100,
            burst_bytes: 2000,
            ..LogLimits::default()
        };
        let s = LogStore::new(dir.path(), l);
        // 10 000 lines of 76 bytes (cost 100) at once: the burst lets 20 in,
        // and `push` says which were dropped (the reader then pauses).
        let pushed: Vec<bool> = (0..10_000)
            .map(|i| s.push(Stream::Stdout, &format!("{i:076}")))
            .collect();
        assert!(pushed[..20].iter().all(|&k| k));
        assert!(!pushed[20]);
        // The supervisor's own lines are never dropped.
        s.push(Stream::Supervisor, "exited");
        let kept = s
            .snapshot()
            .iter()
            .filter(|l| l.stream == Stream::Stdout)
            .count();
        assert_eq!(kept, 20);
        assert!(s.dropped() > 9_000, "{}", s.dropped());
        drop(s); // reports the drops in a marker and writes everything
        let text = fs::read_to_string(dir.path().join("current.log")).unwrap();
        let counts: Vec<u64> = text
            .lines()
            .filter_map(|l| l.split(" sup … ").nth(1))
            .filter_map(|m| m.strip_suffix(" lines dropped (rate limit)"))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!((1..=3).contains(&counts.len()), "{text}");
        assert_eq!(counts.iter().sum::<u64>(), 10_000 - 20, "{text}");
        assert!(text.contains(" sup exited\n"));
        assert_eq!(text.lines().count(), 21 + counts.len(), "{text}");
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
