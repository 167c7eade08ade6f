//! Bulk work off the runtime thread at a lower CPU priority.
//!
//! Writing an upload to disk, reading a shared bundle out and building the
//! share's index are throughput work: nobody waits on one of their steps
//! the way a client waits on `/api/v1/status`. On a two-core box they run
//! on the blocking pool at nice [`NICE`], so when the CPU is short the
//! kernel gives it to the runtime thread (the API, the accept loop) and the
//! gossip thread first, and the bulk work takes what is left. The thread
//! goes back to its old priority when the work ends (the blocking pool
//! reuses threads, and container starts fork from them).

use tokio::task::JoinHandle;

/// The niceness of bulk work (0 is the agent's own, 19 the lowest).
pub const NICE: i32 = 10;

/// The niceness of the agent's discovery thread (gossip acks and probes,
/// mDNS): above services and the API, so a busy box still answers its
/// peers' probes in time and is not suspected dead by the community.
pub const DISCOVERY_NICE: i32 = -5;

/// Set the calling thread's niceness (Linux keeps it per thread): `false`
/// when the kernel refused (raising priority needs CAP_SYS_NICE). Threads
/// this one creates inherit it.
pub fn set_this_thread(nice: i32) -> bool {
    set(nice)
}

/// [`tokio::task::spawn_blocking`] at nice [`NICE`].
pub fn spawn<T, F>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _nice = Niced::new(NICE);
        f()
    })
}

/// This thread at another niceness until dropped.
struct Niced {
    old: Option<i32>,
}

impl Niced {
    fn new(nice: i32) -> Niced {
        let old = get();
        if old.is_some() && set(nice) {
            Niced { old }
        } else {
            Niced { old: None }
        }
    }
}

impl Drop for Niced {
    fn drop(&mut self) {
        if let Some(old) = self.old {
            // Back up needs CAP_SYS_NICE, which the agent has (root).
            if !set(old) {
                tracing::debug!("bulk work: could not restore niceness {old}");
            }
        }
    }
}

fn tid() -> libc::id_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as libc::id_t }
}

/// This thread's niceness (Linux: per thread for PRIO_PROCESS and a tid).
fn get() -> Option<i32> {
    // SAFETY: plain syscalls on this thread's own id; errno is thread-local.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS as _, tid());
        (n != -1 || *libc::__errno_location() == 0).then_some(n)
    }
}

fn set(nice: i32) -> bool {
    // SAFETY: setpriority on this thread's own id.
    unsafe { libc::setpriority(libc::PRIO_PROCESS as _, tid(), nice) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn runs_niced_and_restores() {
        let before = tokio::task::spawn_blocking(get).await.unwrap();
        assert_eq!(before, Some(0), "the test runs at niceness 0");
        assert_eq!(spawn(get).await.unwrap(), Some(NICE));
        // The pool thread afterwards is back at 0 (root, as the agent and
        // these tests run: lowering niceness needs CAP_SYS_NICE).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(tokio::task::spawn_blocking(get).await.unwrap(), Some(0));
        }
    }
}
