//! The runtime layer on machines without a GPU: the libraries open (or their absence is
//! named), every entry point resolves, and "no device" is a clean error, never a panic.
//!
//! CI installs Debian's libamdhip64-5 (ROCm 5.2, no GPU needed) and sets
//! GRETA_REQUIRE_AMD_LIB=1, so that these checks run against the real library there.

use hiprt::amd::{self, AmdDriver};
use hiprt::nvidia::NvidiaDriver;
use hiprt::{Gpu, HipError, Platform, PlatformChoice};

fn amd_required() -> bool {
    std::env::var("GRETA_REQUIRE_AMD_LIB").is_ok_and(|v| v == "1")
}

fn amd_library() -> Option<libloading::Library> {
    Platform::Amd
        .library_names()
        .iter()
        .find_map(|n| unsafe { libloading::Library::new(n) }.ok())
}

#[test]
fn amd_library_resolves_every_entry_point() {
    let Some(lib) = amd_library() else {
        assert!(
            !amd_required(),
            "GRETA_REQUIRE_AMD_LIB=1 but libamdhip64 does not open"
        );
        let e = AmdDriver::open().err().expect("no library, no driver");
        assert!(
            matches!(e, HipError::Load { .. }) && e.to_string().contains("libamdhip64"),
            "{e}"
        );
        return;
    };
    let missing: Vec<&str> = amd::ENTRY_POINTS
        .iter()
        .copied()
        .filter(|name| unsafe { lib.get::<unsafe extern "C" fn()>(name.as_bytes()) }.is_err())
        .collect();
    assert!(missing.is_empty(), "libamdhip64 lacks {missing:?}");
    assert!(amd::ENTRY_POINTS.len() >= 30);
}

#[test]
fn amd_without_a_device_is_a_clean_no_device_error() {
    if amd_library().is_none() {
        assert!(
            !amd_required(),
            "GRETA_REQUIRE_AMD_LIB=1 but libamdhip64 does not open"
        );
        return;
    }
    let e = match Gpu::open(PlatformChoice::Amd, 0) {
        Ok(g) => panic!(
            "an AMD GPU is present here ({}): this test is for machines without one",
            g.name()
        ),
        Err(e) => e,
    };
    assert!(
        matches!(
            e,
            HipError::NoDevice {
                platform: Platform::Amd,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("no GPU device found"), "{e}");
}

#[test]
fn nvidia_without_the_driver_library_is_named() {
    let present = Platform::Nvidia
        .library_names()
        .iter()
        .any(|n| unsafe { libloading::Library::new(n) }.is_ok());
    if present {
        return; // a machine with the CUDA driver: covered by the GPU tests
    }
    let e = NvidiaDriver::open().err().expect("no libcuda, no driver");
    assert!(
        e.to_string().contains("libcuda.so") && e.to_string().contains("not installed"),
        "{e}"
    );
}

#[test]
fn platform_choice_parses_accepted_values_only() {
    assert_eq!(
        "nvidia".parse::<PlatformChoice>().unwrap(),
        PlatformChoice::Nvidia
    );
    let e = "cuda".parse::<PlatformChoice>().unwrap_err().to_string();
    assert!(
        e.contains("\"cuda\"") && e.contains("amd, nvidia, auto"),
        "{e}"
    );
}
