//! Errors of the runtime layer: every failed call names the call, the code and the
//! runtime's own message. No return code is ever dropped.

use crate::Platform;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HipError {
    /// A runtime call returned an error code.
    #[error("{platform} runtime: {}", call_failed(.call, *.code, .name, .message))]
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
    /// Every platform tried (`PlatformChoice::Auto`) failed: each one's error, in order.
    #[error(
        "no GPU could be opened: {}",
        .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
    )]
    NoPlatform(Vec<HipError>),
}

pub type Result<T> = std::result::Result<T, HipError>;

/// "hipInit failed with 101 (hipErrorInvalidDevice: its description)", the description left
/// out where the runtime gives none but the name again (HIP does without a device).
pub(crate) fn call_failed(call: &str, code: i32, name: &str, message: &str) -> String {
    match name == message || message.is_empty() {
        true => format!("{call} failed with {code} ({name})"),
        false => format!("{call} failed with {code} ({name}: {message})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_names_the_call_code_and_name_and_a_description_once() {
        let e = |name: &str, message: &str| {
            HipError::Call {
                platform: Platform::Amd,
                call: "hipInit",
                code: 101,
                name: name.into(),
                message: message.into(),
            }
            .to_string()
        };
        assert_eq!(
            e("hipErrorInvalidDevice", "hipErrorInvalidDevice"),
            "amd runtime: hipInit failed with 101 (hipErrorInvalidDevice)"
        );
        assert_eq!(
            e("hipErrorInvalidDevice", "invalid device ordinal"),
            "amd runtime: hipInit failed with 101 (hipErrorInvalidDevice: invalid device ordinal)"
        );
    }
}
