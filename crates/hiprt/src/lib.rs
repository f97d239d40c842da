//! The GPU runtime layer. Nothing here links a GPU library: each platform's library is
//! opened at run time, so the engine builds and its CPU path runs on machines with no GPU
//! SDK at all.
//!
//! Layers, as in cudarc: `driver` (the entry points as a trait, one implementation per
//! platform: `amd` over libamdhip64, `nvidia` over cudarc's CUDA driver `sys`), `result`
//! (errors naming call, code and message), `safe` (RAII types: Gpu, Stream, DeviceBuffer,
//! Module, Function, Event, Graph). Everything above `driver` is the same code on both.

use std::fmt;

pub mod amd;
pub mod driver;
pub mod nvidia;
pub mod result;
pub mod safe;

pub use driver::{DevicePtr, Driver, LaunchDims, TensorElem, TensorMap};
pub use result::{HipError, Result};
pub use safe::{
    DeviceBuffer, Event, Function, Gpu, Graph, GraphExec, Module, PlatformChoice, Stream,
};

/// A GPU platform the runtime layer can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// AMD ROCm/HIP through libamdhip64.
    Amd,
    /// NVIDIA through the CUDA driver library.
    Nvidia,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Amd, Platform::Nvidia];

    /// Library names tried in order: the unversioned development link first, then the
    /// sonames of the releases the engine supports.
    pub fn library_names(self) -> &'static [&'static str] {
        match self {
            Platform::Amd => &[
                "libamdhip64.so",
                "libamdhip64.so.7",
                "libamdhip64.so.6",
                "libamdhip64.so.5",
            ],
            Platform::Nvidia => &["libcuda.so", "libcuda.so.1"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Platform::Amd => "amd",
            Platform::Nvidia => "nvidia",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of trying to open one platform's runtime library.
#[derive(Debug, Clone)]
pub struct PlatformProbe {
    pub platform: Platform,
    /// The library name that opened, if any.
    pub library: Option<&'static str>,
    /// Why each name failed, when none opened.
    pub errors: Vec<String>,
}

/// Tries to open each platform's runtime library. Opening is all it does: no symbol is
/// called, so this is safe on any machine.
pub fn probe(platform: Platform) -> PlatformProbe {
    let mut errors = Vec::new();
    for &name in platform.library_names() {
        // SAFETY: loading a vendor runtime runs its initialisers; these are the libraries
        // the platform documents for exactly this use.
        match unsafe { libloading::Library::new(name) } {
            Ok(_lib) => {
                return PlatformProbe {
                    platform,
                    library: Some(name),
                    errors,
                }
            }
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    PlatformProbe {
        platform,
        library: None,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_every_name_tried_when_nothing_loads() {
        let p = probe(Platform::Amd);
        match p.library {
            Some(name) => assert!(Platform::Amd.library_names().contains(&name)),
            None => assert_eq!(p.errors.len(), Platform::Amd.library_names().len()),
        }
    }
}
