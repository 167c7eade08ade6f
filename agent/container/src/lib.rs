//! nuvol's container runtime: namespaces, cgroups, overlayfs, pivot_root,
//! capabilities, no_new_privs and seccomp, straight on the kernel's
//! interfaces, no daemon. See `docs/containers.md`.

pub mod cgroup;
pub mod error;
mod exec;
mod launch;
pub mod loopdev;
pub mod oci;
mod plan;
pub mod seccomp;
mod setup;
pub mod spec;

pub use cgroup::{Cgroup, CgroupRoot};
pub use error::{ContainerError, Result};
pub use exec::{ExecProcess, ExecTarget};
pub use launch::{
    create, create_with_timeout, pipe, spawn, spawn_with, Container, Created, ExitStatus, Stdio,
    START_TIMEOUT,
};
pub use spec::{ContainerSpec, Limits, Mount, NetworkMode, RootSource, RootWrite, Rootfs};
