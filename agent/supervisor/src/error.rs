//! Supervisor errors.

/// What the supervisor refuses or fails at.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A service description is unusable; the message names the field.
    #[error("service {service:?}: {msg}")]
    InvalidService { service: String, msg: String },
    /// A service description could not be parsed.
    #[error("service file: {0}")]
    Parse(String),
    #[error("no service named {0:?}")]
    UnknownService(String),
    #[error("a service named {0:?} already exists")]
    Duplicate(String),
    #[error("service {service:?} depends on unknown service {dependency:?}")]
    UnknownDependency { service: String, dependency: String },
    #[error("dependency cycle: {0}")]
    DependencyCycle(String),
    #[error("service {0:?} is running; stop it first")]
    Running(String),
    #[error(transparent)]
    Container(#[from] nuvol_container::ContainerError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl SupervisorError {
    pub(crate) fn invalid(service: &str, msg: impl Into<String>) -> Self {
        SupervisorError::InvalidService {
            service: service.to_string(),
            msg: msg.into(),
        }
    }
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| SupervisorError::Io { what, source }
    }
}

pub type Result<T, E = SupervisorError> = std::result::Result<T, E>;
