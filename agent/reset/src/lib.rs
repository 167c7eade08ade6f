//! Factory reset: forget everything the box learnt and provision it again
//! from `nuvol.toml`, as on its first boot.
//!
//! Two halves, one file between them:
//!
//! - **The request** ([`request`]): the agent (panel, `nuvol ctl reset`,
//!   `POST /api/v1/reset`) writes [`REQUEST_FILE`] at the root of the data
//!   partition (temp file, fsync, rename, fsync of the directory) and only
//!   then asks PID 1 to reboot. Once the answer says "resetting", a power
//!   cut cannot lose the request.
//! - **The wipe** ([`at_boot`]): early in the next boot, before the agent
//!   starts, PID 1 finds the request, counts the attempt in it (durably),
//!   removes everything on the data partition but `lost+found` and the
//!   reset's own files ([`wipe`]), syncs, and removes the request last. A
//!   boot that stops in the middle (power cut) leaves the request, so the
//!   next boot wipes what is left. After [`MAX_ATTEMPTS`] boots that each
//!   started the wipe and never finished it, the request is renamed to
//!   [`FAILED_FILE`] and the box boots on what is left: it never loops
//!   resetting forever.
//!
//! A file named `factory-reset` (or `factory-reset.txt`, any case) put on
//! the boot partition from a laptop is turned into the same request at
//! boot, with its identity (size, time, content hash) kept in
//! [`BOOT_RECORD_FILE`]; after the wipe it is removed from the boot
//! partition (writable for that moment only). A file that cannot be
//! removed (a write-protected card) is recognised by its identity and not
//! honored a second time.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nuvol_durable::{write_atomic, Mode};

/// The request, at the root of the data partition.
pub const REQUEST_FILE: &str = "factory-reset";
/// The identity of the last boot-partition file turned into a request.
pub const BOOT_RECORD_FILE: &str = "factory-reset.boot-file";
/// A request given up after [`MAX_ATTEMPTS`] (kept for the owner to see).
pub const FAILED_FILE: &str = "factory-reset.failed";
/// Names of the boot partition's trigger file (matched ignoring case: a
/// laptop may add `.txt` or capitals).
pub const BOOT_FILES: [&str; 2] = ["factory-reset", "factory-reset.txt"];
/// Boots that may start the wipe before the request is given up.
pub const MAX_ATTEMPTS: u32 = 3;
/// The longest test pause honored (see [`Request::test_pause_secs`]).
pub const MAX_TEST_PAUSE_SECS: u32 = 300;
/// What the wipe leaves on the data partition.
pub const KEEP: [&str; 4] = ["lost+found", REQUEST_FILE, BOOT_RECORD_FILE, FAILED_FILE];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who asked for the reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The API: the panel, `nuvol ctl reset`, `POST /api/v1/reset`.
    Api,
    /// The `factory-reset` file on the boot partition.
    BootFile,
    /// A request file that does not say (written by hand).
    Unknown,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::BootFile => "boot-file",
            Origin::Unknown => "unknown",
        }
    }
    fn parse(s: &str) -> Origin {
        match s {
            "api" => Origin::Api,
            "boot-file" => Origin::BootFile,
            _ => Origin::Unknown,
        }
    }
    /// For the console.
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Api => "the API (panel or nuvol ctl)",
            Origin::BootFile => "the factory-reset file on the boot partition",
            Origin::Unknown => "a request file on the data partition",
        }
    }
}

/// A pending factory reset, as kept in [`REQUEST_FILE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub origin: Origin,
    /// Unix seconds.
    pub requested_at: u64,
    /// Boots that started the wipe so far.
    pub attempts: u32,
    /// Test hook (`POST /api/v1/debug/slow-reset`, honored only with
    /// `[debug] test_hooks = true`): on the first attempt, pause this long
    /// after the first removal, so a test can cut the power mid-wipe.
    pub test_pause_secs: u32,
}

impl Request {
    pub fn new(origin: Origin, requested_at: u64) -> Request {
        Request {
            origin,
            requested_at,
            attempts: 0,
            test_pause_secs: 0,
        }
    }

    pub fn to_text(&self) -> String {
        format!(
            "# nuvol factory reset: PID 1 wipes the data partition at the next boot\n\
             origin={}\nrequested_at={}\nattempts={}\ntest_pause_secs={}\n",
            self.origin.as_str(),
            self.requested_at,
            self.attempts,
            self.test_pause_secs
        )
    }

    /// Read a request file. The file's presence is the request: lines that
    /// do not parse keep their defaults (a file made with `touch` is a
    /// request from [`Origin::Unknown`]).
    pub fn parse(text: &str) -> Request {
        let mut r = Request::new(Origin::Unknown, 0);
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "origin" => r.origin = Origin::parse(v),
                "requested_at" => r.requested_at = v.parse().unwrap_or(0),
                "attempts" => r.attempts = v.parse().unwrap_or(0),
                "test_pause_secs" => r.test_pause_secs = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        r
    }
}

/// Record a factory reset request on the data partition mounted at `data`,
/// durably (temp file, fsync, rename, fsync of the directory). A pending
/// request is kept as it is (with its attempts); a given-up one
/// ([`FAILED_FILE`]) is cleared: this is a new request.
pub fn request(data: &Path, origin: Origin, now: u64, test_pause_secs: u32) -> Result<(), Error> {
    let path = data.join(REQUEST_FILE);
    if pending(data)?.is_none() {
        let mut r = Request::new(origin, now);
        r.test_pause_secs = test_pause_secs.min(MAX_TEST_PAUSE_SECS);
        write_atomic(&path, r.to_text().as_bytes(), Mode::Private).map_err(io_err(&path))?;
    }
    let failed = data.join(FAILED_FILE);
    match fs::remove_file(&failed) {
        Ok(()) => nuvol_durable::fsync_dir(data).map_err(io_err(data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&failed)(e)),
    }
}

/// The pending request on the data partition at `data`, if any.
pub fn pending(data: &Path) -> Result<Option<Request>, Error> {
    let path = data.join(REQUEST_FILE);
    match fs::read(&path) {
        Ok(b) => Ok(Some(Request::parse(&String::from_utf8_lossy(&b)))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// The dashboard's alert while a given-up request ([`FAILED_FILE`]) is on
/// the data partition at `data`: the owner asked for a reset and did not
/// get it. A new request clears it.
pub fn given_up_alert(data: &Path) -> Option<String> {
    let text = fs::read_to_string(data.join(FAILED_FILE)).ok()?;
    let r = Request::parse(&text);
    Some(format!(
        "A factory reset was given up after {} attempts (each boot stopped during the wipe): the box runs on what was left of its data. Ask for it again (Settings) or see {}.",
        r.attempts,
        data.join(FAILED_FILE).display()
    ))
}

/// The trigger file on the boot partition mounted at `boot`, if any.
pub fn find_boot_file(boot: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(boot)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_ascii_lowercase();
            BOOT_FILES.contains(&n.as_str())
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// What tells one trigger file from another: size, modification time and
/// an FNV-1a hash of its first 64 KiB. A new file put there from a laptop
/// differs at least in its time.
pub fn identity(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let mut buf = Vec::new();
    fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut buf)?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in buf {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("size={} mtime={mtime} fnv1a={h:016x}", meta.len()))
}

/// How a wipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiped {
    /// Everything is gone; this many entries were removed.
    Done(usize),
    /// `after` asked to stop (a host test's power cut).
    Stopped,
}

/// Remove everything on the data partition at `data` but [`KEEP`]: each
/// top-level entry, a directory's children first (sorted, one by one),
/// then the directory. Entries already gone count as removed (a wipe
/// resumed after a power cut). `after(n, path)` is called after the n-th
/// removal (from 1); `false` stops the wipe there. Removal goes on past a
/// failing entry; the first error is returned at the end.
pub fn wipe(data: &Path, mut after: impl FnMut(usize, &Path) -> bool) -> Result<Wiped, Error> {
    let mut plan = Vec::new();
    for top in sorted_entries(data)? {
        let keep = top
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| KEEP.contains(&n));
        if keep {
            continue;
        }
        let is_dir = fs::symlink_metadata(&top).is_ok_and(|m| m.is_dir());
        if is_dir {
            plan.extend(sorted_entries(&top)?);
        }
        plan.push(top);
    }
    let mut first_err = None;
    for (i, p) in plan.iter().enumerate() {
        if let Err(e) = remove(p) {
            first_err.get_or_insert(io_err(p)(e));
        }
        if !after(i + 1, p) {
            return Ok(Wiped::Stopped);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(Wiped::Done(plan.len())),
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn remove(p: &Path) -> io::Result<()> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// What [`at_boot`] needs from PID 1.
pub trait Env {
    /// One console line.
    fn say(&mut self, msg: &str);
    /// Make the boot partition writable (`true`) or read-only again.
    fn boot_writable(&mut self, rw: bool) -> io::Result<()>;
    /// Flush the data partition to the disk.
    fn sync(&mut self);
    /// The test hook's pause; `false`: stop here (host tests cut the power).
    fn pause(&mut self, secs: u32) -> bool;
    /// Unix seconds now.
    fn now(&self) -> u64;
}

/// Where things are at boot.
#[derive(Debug, Clone)]
pub struct Boot<'a> {
    /// The data partition's mount point; `None` when it is not mounted.
    pub data: Option<&'a Path>,
    /// The boot partition's mount point; `None` when it is not mounted.
    pub boot: Option<&'a Path>,
    /// `[debug] test_hooks` in nuvol.toml: the test pause is honored only then.
    pub test_hooks: bool,
}

/// What [`at_boot`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No request.
    Nothing,
    /// The data partition was wiped.
    Wiped,
    /// The wipe failed; the request stays for the next boot.
    Failed,
    /// Too many attempts: the request was given up.
    GaveUp,
    /// The test pause said stop (only in host tests).
    Stopped,
}

/// The boot step, before the agent starts: turn a trigger file on the boot
/// partition into a request, carry out a pending request, consume the
/// trigger file. Never panics; every problem is said on the console.
pub fn at_boot(b: &Boot<'_>, env: &mut impl Env) -> Outcome {
    let boot_file = b.boot.and_then(find_boot_file);
    let Some(data) = b.data else {
        if let Some(f) = &boot_file {
            env.say(&format!(
                "factory reset: {} ignored: no data partition to reset",
                f.display()
            ));
        }
        return Outcome::Nothing;
    };
    // The trigger file: a request first, then the record that it was seen
    // (in this order: a power cut between the two repeats the request,
    // which is kept as it is, instead of losing it).
    let mut consume = None;
    if let Some(f) = boot_file {
        match boot_file_request(data, &f, env) {
            Ok(c) => consume = c.then_some(f),
            Err(e) => env.say(&format!(
                "factory reset: {} not honored: {e} (it is tried again at the next boot)",
                f.display()
            )),
        }
    }
    let outcome = match pending(data) {
        Ok(None) => Outcome::Nothing,
        Ok(Some(r)) => carry_out(data, r, b.test_hooks, env),
        Err(e) => {
            env.say(&format!("factory reset: reading the request: {e}"));
            Outcome::Failed
        }
    };
    if let (Some(f), Outcome::Wiped | Outcome::GaveUp | Outcome::Nothing) = (consume, outcome) {
        remove_boot_file(&f, env);
    }
    outcome
}

/// Turn the trigger file into a request unless it was honored already.
/// `Ok(true)`: remove it once the request is carried out.
fn boot_file_request(data: &Path, f: &Path, env: &mut impl Env) -> Result<bool, Error> {
    let id = identity(f).map_err(io_err(f))?;
    let record = data.join(BOOT_RECORD_FILE);
    let seen = fs::read_to_string(&record).ok();
    if seen.as_deref().map(str::trim) == Some(id.as_str()) && pending(data)?.is_none() {
        env.say(&format!(
            "factory reset: {} was honored already (the same file as at the last reset) and is ignored; delete it from a laptop",
            f.display()
        ));
        return Ok(true);
    }
    env.say(&format!(
        "factory reset requested by {} ({})",
        Origin::BootFile.describe(),
        f.display()
    ));
    request(data, Origin::BootFile, env.now(), 0)?;
    write_atomic(&record, format!("{id}\n").as_bytes(), Mode::Private).map_err(io_err(&record))?;
    Ok(true)
}

fn carry_out(data: &Path, mut r: Request, test_hooks: bool, env: &mut impl Env) -> Outcome {
    let path = data.join(REQUEST_FILE);
    if r.attempts >= MAX_ATTEMPTS {
        let failed = data.join(FAILED_FILE);
        let text = format!(
            "{}# given up: {} boots started the wipe and none finished it\n",
            r.to_text(),
            r.attempts
        );
        let gone = write_atomic(&failed, text.as_bytes(), Mode::Private)
            .and_then(|()| fs::remove_file(&path))
            .and_then(|()| nuvol_durable::fsync_dir(data));
        env.say(&format!(
            "factory reset: GAVE UP after {} attempts (each boot stopped during the wipe); the box boots on what is left of its data; see {}{}",
            r.attempts,
            failed.display(),
            match gone {
                Ok(()) => String::new(),
                Err(e) => format!(" (recording that failed: {e})"),
            }
        ));
        return Outcome::GaveUp;
    }
    let pause = if test_hooks && r.attempts == 0 {
        r.test_pause_secs.min(MAX_TEST_PAUSE_SECS)
    } else {
        0
    };
    r.attempts += 1;
    if let Err(e) = write_atomic(&path, r.to_text().as_bytes(), Mode::Private) {
        // Without the count a wipe that crashes the box could repeat
        // forever: do not start it.
        env.say(&format!(
            "factory reset: cannot count the attempt in {}: {e}; not wiping",
            path.display()
        ));
        return Outcome::Failed;
    }
    env.say(&format!(
        "factory reset requested by {} at {}: wiping the data partition (attempt {} of {MAX_ATTEMPTS})",
        r.origin.describe(),
        if r.requested_at == 0 { "an unknown time".to_string() } else { nuvol_human::utc(r.requested_at) },
        r.attempts
    ));
    let started = Instant::now();
    let res = wipe(data, |n, p| {
        if n == 1 && pause > 0 {
            env.sync();
            env.say(&format!(
                "factory reset: test hook: pausing {pause} s in the middle of the wipe (removed {})",
                p.display()
            ));
            if !env.pause(pause) {
                return false;
            }
        }
        true
    });
    env.sync();
    match res {
        Ok(Wiped::Stopped) => Outcome::Stopped,
        Ok(Wiped::Done(n)) => {
            let done = fs::remove_file(&path).and_then(|()| nuvol_durable::fsync_dir(data));
            if let Err(e) = done {
                env.say(&format!(
                    "factory reset: wiped, but removing {}: {e} (the next boot wipes again)",
                    path.display()
                ));
                return Outcome::Failed;
            }
            env.say(&format!(
                "factory reset: done: {n} entries removed in {:.1} s; the box provisions itself from nuvol.toml as on its first boot",
                started.elapsed().as_secs_f64()
            ));
            Outcome::Wiped
        }
        Err(e) => {
            env.say(&format!(
                "factory reset: wipe failed: {e}; the request stays and the next boot tries again (attempt {} of {MAX_ATTEMPTS} done)",
                r.attempts
            ));
            Outcome::Failed
        }
    }
}

fn remove_boot_file(f: &Path, env: &mut impl Env) {
    if let Err(e) = env.boot_writable(true) {
        env.say(&format!(
            "factory reset: cannot remove {} (boot partition not writable: {e}); it is not honored again (recorded on the data partition); delete it from a laptop",
            f.display()
        ));
        return;
    }
    let removed = fs::remove_file(f).and_then(|()| match f.parent() {
        Some(d) => nuvol_durable::fsync_dir(d),
        None => Ok(()),
    });
    match removed {
        Ok(()) => env.say(&format!("factory reset: removed {}", f.display())),
        Err(e) => env.say(&format!(
            "factory reset: cannot remove {}: {e}; it is not honored again (recorded on the data partition); delete it from a laptop",
            f.display()
        )),
    }
    if let Err(e) = env.boot_writable(false) {
        env.say(&format!(
            "factory reset: boot partition back to read-only: {e}"
        ));
    }
}

#[cfg(test)]
mod tests;
