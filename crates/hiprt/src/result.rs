//! Errors of the runtime layer: every failed call names the call, the code and the
//! runtime's own message. No return code is ever dropped.

use crate::Platform;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HipError {
    /// A runtime call returned an error code.
    #[error("{platform} runtime: {call} failed with {code} ({name}: {message})")]
    Call {
        platform: Platform,
        call: &'static str,
        code: i32,
        name: String,
        message: String,
    },
    /// The runtime library could not be opened, or lacks an entry point the engine uses.
    #[error("{platform} runtime: {reason}")]
    Load { platform: Platform, reason: String },
    /// The runtime works but reports no device.
    #[error("{platform} runtime: no GPU device found ({detail})")]
    NoDevice { platform: Platform, detail: String },
    /// A request the engine refuses before calling the runtime (e.g. a bad device index).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, HipError>;
