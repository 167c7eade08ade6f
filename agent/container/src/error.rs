//! Errors of the container runtime.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while validating, creating or running a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The container description is unusable; the message says which field and why.
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    /// A capability name is not known to this runtime.
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    /// An OCI `config.json` could not be read or uses something unsupported.
    #[error("oci bundle {path}: {msg}")]
    Oci { path: PathBuf, msg: String },
    /// A cgroup file could not be created, read or written.
    #[error("cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: io::Error },
    /// The controllers the runtime needs are not available.
    #[error("cgroups unavailable: {0}")]
    CgroupsUnavailable(String),
    /// Attaching a loop device for a filesystem image failed.
    #[error("loop device for {path}: {source}")]
    Loop { path: PathBuf, source: io::Error },
    /// Building the seccomp filter failed.
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    /// The container process failed during setup, before running the entrypoint.
    #[error("container setup failed at step {step} ({what}): {source}")]
    Setup {
        step: usize,
        what: String,
        source: io::Error,
    },
    /// The created container process was not started in time and gave up
    /// (it exits on its own rather than wait forever).
    #[error("container process was not started within {after:?} and gave up")]
    NotStarted { after: std::time::Duration },
    /// A system call in the runtime itself failed.
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: io::Error,
    },
}

impl ContainerError {
    pub(crate) fn sys(what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| ContainerError::Sys { what, source }
    }
    pub(crate) fn last_os(what: &'static str) -> Self {
        ContainerError::Sys {
            what,
            source: io::Error::last_os_error(),
        }
    }
    pub(crate) fn cgroup(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ContainerError::Cgroup { path, source }
    }
}

/// Result alias for the runtime.
pub type Result<T, E = ContainerError> = std::result::Result<T, E>;
