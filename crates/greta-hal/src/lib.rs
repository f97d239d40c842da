//! Backend selection: the one place that decides where the model runs.

use std::fmt;
use std::str::FromStr;

pub use hiprt::{probe, Platform, PlatformProbe};

/// What the user asked for (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendRequest {
    Cpu,
    Gpu,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}; accepted: cpu, gpu, auto")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendRequest {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(BackendRequest::Cpu),
            "gpu" => Ok(BackendRequest::Gpu),
            "auto" => Ok(BackendRequest::Auto),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

/// Where the model will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Cpu => f.write_str("cpu"),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SelectError {
    #[error(
        "--backend gpu: the GPU backend is not part of this build yet (runtime libraries found: {found}); \
         use --backend cpu or auto"
    )]
    GpuUnavailable { found: String },
}

/// The selection and a human-readable reason, so that `auto` never silently picks.
#[derive(Debug, Clone)]
pub struct Selection {
    pub backend: Backend,
    pub reason: String,
}

pub fn select(req: BackendRequest) -> Result<Selection, SelectError> {
    let found = || {
        let libs: Vec<String> = Platform::ALL
            .iter()
            .filter_map(|&p| hiprt::probe(p).library.map(|l| format!("{p} ({l})")))
            .collect();
        if libs.is_empty() {
            "none".to_string()
        } else {
            libs.join(", ")
        }
    };
    match req {
        BackendRequest::Cpu => Ok(Selection {
            backend: Backend::Cpu,
            reason: "requested".into(),
        }),
        BackendRequest::Gpu => Err(SelectError::GpuUnavailable { found: found() }),
        BackendRequest::Auto => Ok(Selection {
            backend: Backend::Cpu,
            reason: format!(
                "auto: no GPU backend in this build (runtime libraries found: {})",
                found()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accepted_names_and_rejects_others() {
        assert_eq!("auto".parse::<BackendRequest>(), Ok(BackendRequest::Auto));
        let e = "cuda".parse::<BackendRequest>().unwrap_err().to_string();
        assert!(
            e.contains("\"cuda\"") && e.contains("cpu, gpu, auto"),
            "{e}"
        );
    }

    #[test]
    fn gpu_request_is_an_error_not_a_silent_cpu_run() {
        assert!(select(BackendRequest::Gpu).is_err());
        let auto = select(BackendRequest::Auto).unwrap();
        assert_eq!(auto.backend, Backend::Cpu);
        assert!(auto.reason.starts_with("auto:"));
    }
}
