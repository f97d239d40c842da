//! Backend selection: the one place that decides where the model runs, and says why.

pub mod allocator;

use std::fmt;
use std::str::FromStr;

pub use hiprt::{probe, Gpu, Platform, PlatformChoice, PlatformProbe};

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
#[derive(Clone)]
pub enum Backend {
    Cpu,
    Gpu(Gpu),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Cpu => f.write_str("cpu"),
            Backend::Gpu(g) => write!(f, "gpu ({}, {})", g.name(), g.platform()),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SelectError {
    #[error("--backend gpu: {reason}; use --backend cpu or auto")]
    GpuUnavailable { reason: String },
}

/// Why no GPU opened, saying so once: hiprt's error says it where every platform failed
/// (`NoPlatform`), and names the one platform's failure otherwise.
fn unavailable(e: &hiprt::HipError) -> String {
    match e {
        hiprt::HipError::NoPlatform(_) => e.to_string(),
        _ => format!("no GPU could be opened: {e}"),
    }
}

/// The selection and a human-readable reason, so that `auto` never silently picks.
#[derive(Clone)]
pub struct Selection {
    pub backend: Backend,
    pub reason: String,
}

/// Opens device 0 of `platform` for `gpu` and `auto`; `auto` falls back to the CPU and says why.
pub fn select(req: BackendRequest, platform: PlatformChoice) -> Result<Selection, SelectError> {
    match req {
        BackendRequest::Cpu => Ok(Selection {
            backend: Backend::Cpu,
            reason: "requested".into(),
        }),
        BackendRequest::Gpu => match Gpu::open(platform, 0) {
            Ok(g) => Ok(Selection {
                backend: Backend::Gpu(g),
                reason: "requested".into(),
            }),
            Err(e) => Err(SelectError::GpuUnavailable {
                reason: unavailable(&e),
            }),
        },
        BackendRequest::Auto => match Gpu::open(platform, 0) {
            Ok(g) => Ok(Selection {
                backend: Backend::Gpu(g),
                reason: "auto: a GPU opened".into(),
            }),
            Err(e) => Ok(Selection {
                backend: Backend::Cpu,
                reason: format!("auto: {}", unavailable(&e)),
            }),
        },
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
    fn without_a_gpu_gpu_is_an_error_and_auto_says_why_it_chose_the_cpu() {
        if Gpu::open(PlatformChoice::Auto, 0).is_ok() {
            return; // a GPU machine: the GPU tests cover selection there
        }
        let e = select(BackendRequest::Gpu, PlatformChoice::Auto)
            .err()
            .expect("no GPU here")
            .to_string();
        assert!(
            e.starts_with("--backend gpu: no GPU could be opened"),
            "{e}"
        );
        assert_eq!(e.matches("no GPU could be opened").count(), 1, "{e}");
        let auto = select(BackendRequest::Auto, PlatformChoice::Auto)
            .ok()
            .unwrap();
        assert!(matches!(auto.backend, Backend::Cpu));
        assert!(
            auto.reason.starts_with("auto: no GPU could be opened: "),
            "{}",
            auto.reason
        );
        assert_eq!(auto.reason.matches("no GPU could be opened").count(), 1);
    }
}
