//! `cargo xtask build-kernels`: compiles every kernels/*.hip for each target, writes the code
//! objects and a manifest, and checks the disassembly of the objects that must use the
//! matrix units (and ptxas's notes, for wgmma it serialised).
//!
//! - gfx942, gfx90a: `clang-19 -x hip --offload-device-only` (Debian's clang-19 + lld-19; no
//!   ROCm needed), or `$GRETA_CLANG`.
//! - sm_90a: `nvcc` from `$NVCC`, the PATH, or the CUDA 13.0 Python wheels (nvidia-cuda-nvcc,
//!   -runtime, -crt, -cccl, nvidia-nvvm), installed with pip into target/toolchains/cuda-13.0
//!   when neither is there.
//! - the HMMA check reads sm_90a objects with cuobjdump (+ nvdisasm): `$CUOBJDUMP`, beside
//!   nvcc, the PATH, or the 13.2 wheels installed into target/toolchains/cuobjdump-13.2.
//! - `--timeline`: the NVIDIA objects alone, with `-DGRETA_TIMELINE` (every block stamps
//!   its wait for the kernel ahead: kernels/greta_device.h, `greta bench --timeline`), into
//!   target/kernels-timeline, so that the default objects stay as they are.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub struct Target {
    pub name: &'static str,
    pub ext: &'static str,
    pub vendor: &'static str,
}

pub const TARGETS: [Target; 3] = [
    Target {
        name: "gfx942",
        ext: "hsaco",
        vendor: "amd",
    },
    Target {
        name: "gfx90a",
        ext: "hsaco",
        vendor: "amd",
    },
    Target {
        name: "sm_90a",
        ext: "cubin",
        vendor: "nvidia",
    },
];

/// Objects whose names start with these must contain matrix-unit instructions.
const MATRIX_KERNELS: [&str; 2] = ["gemm", "attention"];

fn output(cmd: &mut Command, what: &str) -> Result<String> {
    Ok(output_and_log(cmd, what)?.0)
}

/// A command's stdout and stderr (ptxas writes its notes there), or its failure with stderr.
fn output_and_log(cmd: &mut Command, what: &str) -> Result<(String, String)> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("{what} failed ({}):\n{stderr}", out.status);
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
}

fn find_clang() -> Result<PathBuf> {
    if let Ok(c) = std::env::var("GRETA_CLANG") {
        return Ok(PathBuf::from(c));
    }
    for c in ["clang-19", "clang"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(PathBuf::from(c));
        }
    }
    bail!("no clang for the AMD targets: install Debian's clang-19 and lld-19 (apt-get install clang-19 lld-19) or set GRETA_CLANG")
}

fn find_nvcc(root: &Path) -> Result<PathBuf> {
    if let Ok(c) = std::env::var("NVCC") {
        return Ok(PathBuf::from(c));
    }
    if Command::new("nvcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(PathBuf::from("nvcc"));
    }
    let dir = root.join("target/toolchains/cuda-13.0");
    let nvcc = dir.join("nvidia/cu13/bin/nvcc");
    if !nvcc.exists() {
        eprintln!(
            "==> installing nvcc (CUDA 13.0 Python wheels) into {}",
            dir.display()
        );
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&dir)
            .args([
                "nvidia-cuda-nvcc==13.0.*",
                "nvidia-cuda-runtime==13.0.*",
                "nvidia-cuda-crt==13.0.*",
                "nvidia-cuda-cccl==13.0.*",
                "nvidia-nvvm==13.0.*",
            ])
            .status()
            .context("running pip to install nvcc")?;
        if !status.success() || !nvcc.exists() {
            bail!("could not install nvcc from the nvidia-cuda-nvcc wheels (pip: {status}); set NVCC to an nvcc");
        }
    }
    Ok(nvcc)
}

/// cuobjdump (and the nvdisasm it runs) for the HMMA check: `$CUOBJDUMP`, the PATH, beside
/// nvcc, or the nvidia-cuda-cuobjdump / -nvdisasm wheels (13.2: the first published; they
/// read sm_90a objects of any 13.x nvcc) installed with pip into target/toolchains.
/// Returns the program and the folder to put first on its PATH.
fn find_cuobjdump(root: &Path, nvcc: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    if let Ok(c) = std::env::var("CUOBJDUMP") {
        return Ok((PathBuf::from(c), None));
    }
    let beside = nvcc.with_file_name("cuobjdump");
    if beside.exists() && nvcc.with_file_name("nvdisasm").exists() {
        return Ok((beside, nvcc.parent().map(Path::to_path_buf)));
    }
    if Command::new("cuobjdump")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok((PathBuf::from("cuobjdump"), None));
    }
    let dir = root.join("target/toolchains/cuobjdump-13.2");
    let bin = dir.join("nvidia/cu13/bin");
    if !bin.join("cuobjdump").exists() || !bin.join("nvdisasm").exists() {
        eprintln!(
            "==> installing cuobjdump and nvdisasm (CUDA 13.2 Python wheels) into {}",
            dir.display()
        );
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&dir)
            .args([
                "nvidia-cuda-cuobjdump==13.2.*",
                "nvidia-cuda-nvdisasm==13.2.*",
            ])
            .status()
            .context("running pip to install cuobjdump")?;
        if !status.success() || !bin.join("cuobjdump").exists() {
            bail!("could not install cuobjdump from the nvidia-cuda-cuobjdump wheel (pip: {status}); set CUOBJDUMP to a cuobjdump");
        }
    }
    Ok((bin.join("cuobjdump"), Some(bin)))
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Builds every kernel for every target into target/kernels/ (with `timeline`, the NVIDIA
/// targets' timeline build into target/kernels-timeline/); returns the manifest path.
pub fn build(root: &Path, timeline: bool) -> Result<PathBuf> {
    let sources: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("kernels"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "hip"))
            .collect();
        v.sort();
        v
    };
    if sources.is_empty() {
        bail!("no kernels/*.hip sources");
    }
    let out_root = root.join(match timeline {
        true => "target/kernels-timeline",
        false => "target/kernels",
    });
    let clang = find_clang()?;
    let nvcc = find_nvcc(root)?;
    let cuobjdump = find_cuobjdump(root, &nvcc)?;
    let clang_version = first_line(&output(
        Command::new(&clang).arg("--version"),
        "clang --version",
    )?);
    let nvcc_version = output(Command::new(&nvcc).arg("--version"), "nvcc --version")?
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    let mut objects = Vec::new();
    for t in TARGETS.iter().filter(|t| !timeline || t.vendor == "nvidia") {
        let dir = out_root.join(t.name);
        std::fs::create_dir_all(&dir)?;
        for src in &sources {
            let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
            let obj = dir.join(format!("{stem}.{}", t.ext));
            let (compiler, version) = if t.vendor == "amd" {
                output(
                    Command::new(&clang)
                        .args([
                            "-x",
                            "hip",
                            "--offload-device-only",
                            "--no-gpu-bundle-output",
                            "-nogpuinc",
                            "-nogpulib",
                            "-O3",
                            "-std=c++17",
                        ])
                        .arg(format!("--offload-arch={}", t.name))
                        .arg("-o")
                        .arg(&obj)
                        .arg(src),
                    &format!("clang for {} of {}", t.name, src.display()),
                )?;
                (clang.display().to_string(), clang_version.clone())
            } else {
                let (_, log) = output_and_log(
                    Command::new(&nvcc)
                        .args(["-cubin", "-O3", "-std=c++17", "-x", "cu"])
                        .args(timeline.then_some("-DGRETA_TIMELINE"))
                        .arg(format!("-arch={}", t.name))
                        .arg("-o")
                        .arg(&obj)
                        .arg(src),
                    &format!("nvcc for {} of {}", t.name, src.display()),
                )?;
                let serialized = serialized_wgmma(&log);
                if !serialized.is_empty() {
                    bail!(
                        "{}/{stem}: ptxas serialised every wgmma of {} (each product waits for the one before it; a wgmma in a path it cannot prove uniform, or accumulators touched between products, does this):\n{log}",
                        t.name,
                        serialized.join(", ")
                    );
                }
                (nvcc.display().to_string(), nvcc_version.clone())
            };
            let bytes = std::fs::read(&obj)?;
            check_matrix_units(t, &stem, &obj, &cuobjdump)?;
            if t.vendor == "nvidia" {
                check_pre_wait_loads(t, &stem, &obj, &cuobjdump)?;
                check_stack_frames(t, &stem, &obj, &cuobjdump)?;
            }
            if t.vendor == "amd" {
                check_no_spills(t, &stem, &obj)?;
            }
            objects.push(serde_json::json!({
                "kernel": stem,
                "target": t.name,
                "vendor": t.vendor,
                "path": format!("{}/{stem}.{}", t.name, t.ext),
                "sha256": format!("{:x}", Sha256::digest(&bytes)),
                "bytes": bytes.len(),
                "compiler": compiler,
                "compiler_version": version,
            }));
            eprintln!("built {}/{stem}.{} ({} bytes)", t.name, t.ext, bytes.len());
        }
    }
    let manifest = out_root.join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::to_string_pretty(&serde_json::json!({"objects": objects}))?,
    )?;
    Ok(manifest)
}

/// No AMD kernel may spill registers to scratch memory: no test would notice (the results
/// stay right), and it has happened: the decode attention's 226 spilled VGPRs at HIP's
/// default 1024-thread bound (fixed with GRETA_BLOCK_MAX). Read from the code object's
/// metadata notes (`.vgpr_spill_count`, `.sgpr_spill_count` per kernel).
fn check_no_spills(t: &Target, stem: &str, obj: &Path) -> Result<()> {
    let notes = output(
        Command::new("llvm-readelf-19").arg("--notes").arg(obj),
        "llvm-readelf-19 --notes",
    )?;
    let spills = spilling_kernels(&notes);
    if !spills.is_empty() {
        bail!(
            "{}/{stem}: kernels spill registers to scratch ({}); bound their block size (GRETA_BLOCK_MAX) or lighten them",
            t.name,
            spills.join(", ")
        );
    }
    Ok(())
}

/// "kernel: N VGPRs, M SGPRs" for each kernel of an AMDGPU metadata listing that spills.
/// The listing is YAML: each kernel a map under `amdhsa.kernels:` that begins at "  - " and
/// whose own keys sit at four spaces (deeper ones, such as the arguments', are skipped).
fn spilling_kernels(notes: &str) -> Vec<String> {
    #[derive(Default)]
    struct Kernel {
        name: String,
        vgpr: u64,
        sgpr: u64,
    }
    let mut kernels: Vec<Kernel> = Vec::new();
    for line in notes.lines() {
        let key = if let Some(k) = line.strip_prefix("  - ") {
            kernels.push(Kernel::default());
            k
        } else if let Some(k) = line.strip_prefix("    ").filter(|k| k.starts_with('.')) {
            k
        } else {
            continue;
        };
        let (Some(k), Some((field, value))) = (kernels.last_mut(), key.split_once(':')) else {
            continue;
        };
        let value = value.trim();
        match field {
            ".name" => k.name = value.to_string(),
            ".vgpr_spill_count" => k.vgpr = value.parse().unwrap_or(0),
            ".sgpr_spill_count" => k.sgpr = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    kernels
        .iter()
        .filter(|k| k.vgpr > 0 || k.sgpr > 0)
        .map(|k| format!("{}: {} VGPRs, {} SGPRs", k.name, k.vgpr, k.sgpr))
        .collect()
}

/// What a kernel may load before `griddepcontrol.wait` (SASS `ACQBULK`), where everything
/// it reads that the kernel ahead writes is not yet written: a decode product its weights
/// (the streaming form, `LDG.E.EF.128`: g_load_once_h8), the decode attention the cache
/// rows of earlier positions, the position and the RoPE tables (by design: attention.hip),
/// the output product that combines the attention's splits the position (gemv.hip,
/// g_gemv3's SPLITS), every other kernel nothing. ptxas moves a load that nvcc emitted as `ld.global.nc` (a
/// const restrict pointer) above the wait whatever the source's order: it happened to a
/// decode product's x in session 14, which then read stale activations and measured 10 %
/// faster. The race is timing-dependent, so no test catches it reliably; the SASS is read
/// instead, for every sm_90a object.
fn check_pre_wait_loads(
    t: &Target,
    stem: &str,
    obj: &Path,
    cuobjdump: &(PathBuf, Option<PathBuf>),
) -> Result<()> {
    let mut early = std::collections::BTreeMap::<String, usize>::new();
    for load in loads_before_wait(&sass(obj, cuobjdump)?) {
        *early.entry(load).or_default() += 1;
    }
    if !early.is_empty() {
        let named: Vec<String> = early.iter().map(|(l, n)| format!("{n} × {l}")).collect();
        bail!(
            "{}/{stem}: loads before griddepcontrol.wait (ACQBULK) of what the kernel ahead may be writing: {}; read activations after the wait (a const restrict pointer lets ptxas hoist them)",
            t.name,
            named.join(", ")
        );
    }
    Ok(())
}

/// The functions whose wgmma ptxas serialised, from its notes: "(C7520) Potential Performance
/// Loss: wgmma.mma_async instructions are serialized due to ... in the function 'NAME'". Such
/// a kernel stays correct and runs several times slower, and nothing but this note says so;
/// the first one-accumulator FP8-lo SwiGLU form (session 31: a branch between its FP8 and
/// f16 products in one loop) did it.
fn serialized_wgmma(ptxas_log: &str) -> Vec<String> {
    ptxas_log
        .lines()
        .filter(|l| l.contains("wgmma.mma_async instructions are serialized"))
        .map(|l| match l.rsplit_once("in the function '") {
            Some((_, f)) => f.trim_end_matches('\'').to_string(),
            None => l.trim().to_string(),
        })
        .collect()
}

/// No sm_90a kernel may keep more on its stack than it is meant to: an array that ptxas can
/// no longer hold in registers (a loop over it left rolled) goes to local memory without a
/// spill being reported, and no test notices (the results stay right). It happened to the
/// prefill attention's accumulators in session 16 (272 bytes). `stack_budget` says what
/// each kernel may keep; `cuobjdump -res-usage` says what it does.
fn check_stack_frames(
    t: &Target,
    stem: &str,
    obj: &Path,
    cuobjdump: &(PathBuf, Option<PathBuf>),
) -> Result<()> {
    let mut cmd = Command::new(&cuobjdump.0);
    let usage = output(cmd.arg("-res-usage").arg(obj), "cuobjdump -res-usage")?;
    let over: Vec<String> = stack_frames(&usage)
        .into_iter()
        .filter(|(kernel, bytes)| *bytes > stack_budget(kernel))
        .map(|(kernel, bytes)| {
            format!("{kernel}: {bytes} bytes (budget {})", stack_budget(&kernel))
        })
        .collect();
    if !over.is_empty() {
        bail!(
            "{}/{stem}: kernels keep more on the stack than their budget ({}); an array indexed in a loop the compiler did not unroll goes to local memory: unroll it (#pragma unroll) or budget it in xtask's stack_budget",
            t.name,
            over.join(", ")
        );
    }
    Ok(())
}

/// The stack frame a kernel may have: 32 bytes for every kernel (sinf / cosf keep the
/// scratch of their reduction of large arguments there: the RoPE kernels), the top-k
/// sampler its per-thread candidate list, and the head_dim 96 RoPE decode attention 8 bytes
/// more: at 255 registers (sm_90a) with the one-barrier cluster combine it spills one
/// register pair (session 21; no model this project runs has head_dim 96).
fn stack_budget(kernel: &str) -> u64 {
    match kernel {
        "sample_topk" => 1024,
        "attn_decode_rope_split_hd96" => 40,
        // The partials form of it (the split combine in the output product): 48 bytes under
        // CUDA 13.0 (session 62), for the same reason.
        "attn_decode_rope_partials_hd96" => 48,
        _ => 32,
    }
}

/// (kernel, stack bytes) for each function of a `cuobjdump -res-usage` listing
/// ("Function NAME:" then a line with "STACK:N").
fn stack_frames(listing: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut kernel: Option<String> = None;
    for line in listing.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("Function ") {
            kernel = Some(name.trim_end_matches(':').to_string());
        } else if let Some(k) = kernel.take() {
            let stack = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("STACK:"))
                .and_then(|v| v.parse().ok());
            match stack {
                Some(bytes) => out.push((k, bytes)),
                None => kernel = Some(k),
            }
        }
    }
    out
}

/// Whether `kernel` may issue `load` before its wait (`check_pre_wait_loads`).
fn pre_wait_load_allowed(kernel: &str, load: &str) -> bool {
    kernel.starts_with("attn_decode_")
        || (kernel.starts_with("gemv") && load == "LDG.E.EF.128")
        || (kernel == "gemv_add_splits_f16" && load == "LDG.E")
}

/// The SASS listing of an sm_90a object (cuobjdump runs nvdisasm, which a wheel install
/// keeps beside it: that directory goes first on its PATH).
fn sass(obj: &Path, cuobjdump: &(PathBuf, Option<PathBuf>)) -> Result<String> {
    let mut cmd = Command::new(&cuobjdump.0);
    if let Some(dir) = &cuobjdump.1 {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.clone()];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs)?);
    }
    output(cmd.arg("-sass").arg(obj), "cuobjdump -sass")
}

/// "kernel: LOAD" for each load from global memory (plain, asynchronous to shared memory,
/// or by the tensor memory accelerator) of a SASS listing that comes before its kernel's
/// first ACQBULK (all of them, in a kernel without one) and `pre_wait_load_allowed` does
/// not allow.
fn loads_before_wait(listing: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut kernel = "";
    let mut waited = false;
    for line in listing.lines() {
        if let Some(name) = line.trim().strip_prefix("Function : ") {
            kernel = name.trim();
            waited = false;
            continue;
        }
        if line.contains("ACQBULK") {
            waited = true;
        }
        if waited {
            continue;
        }
        let load = line.split_whitespace().find(|w| {
            ["LDG", "LD.", "UTMALDG", "UBLKCP"]
                .iter()
                .any(|p| w.starts_with(p))
        });
        if let Some(load) = load {
            if !pre_wait_load_allowed(kernel, load) {
                found.push(format!("{kernel}: {load}"));
            }
        }
    }
    found
}

/// GEMM and attention objects must use MFMA on gfx9, and HMMA plus HGMMA on sm_90a (and the
/// FP8 QGMMA in the GEMM, the N-major `.tnspB` product in the attention): a kernel that
/// silently fell back to plain FMAs, or a wgmma kernel compiled out by its architecture
/// guard, would otherwise pass every numeric test.
fn check_matrix_units(
    t: &Target,
    stem: &str,
    obj: &Path,
    cuobjdump: &(PathBuf, Option<PathBuf>),
) -> Result<()> {
    if !MATRIX_KERNELS.iter().any(|k| stem.starts_with(k)) {
        return Ok(());
    }
    let (listing, needle) = if t.vendor == "amd" {
        (
            output(
                Command::new("llvm-objdump-19")
                    .args(["-d", &format!("--mcpu={}", t.name)])
                    .arg(obj),
                "llvm-objdump-19",
            )?,
            vec!["v_mfma"],
        )
    } else {
        // sm_90a: the mma.sync tiles (HMMA) and, in the GEMM, the warpgroup kernel (HGMMA)
        // and its FP8-lo forms' FP8 products (QGMMA, `--split-lo fp8`); in the attention, the
        // prefill's wgmma form at head_dim 128 (HGMMA, its P V product with V N-major).
        let needed = if stem.starts_with("gemm") {
            vec!["HMMA", "HGMMA", "QGMMA"]
        } else if stem.starts_with("attention") {
            vec!["HMMA", "HGMMA", ".tnspB"]
        } else {
            vec!["HMMA"]
        };
        (sass(obj, cuobjdump)?, needed)
    };
    // Every named instruction must be there (HGMMA does not contain "HMMA").
    if let Some(missing) = needle.iter().find(|n| !listing.contains(*n)) {
        bail!("{}/{stem}: no {missing} instruction in the code object: that matrix-unit path was not compiled (needed: {})", t.name, needle.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{
        loads_before_wait, serialized_wgmma, spilling_kernels, stack_budget, stack_frames,
    };

    #[test]
    fn serialized_wgmma_is_named_from_the_ptxas_notes() {
        let log = "ptxas info    : (C7520) Potential Performance Loss: wgmma.mma_async instructions are serialized due to program dependence on compiler-inserted WG.AR in divergent path in the function 'gemm_f16_wgmma_swiglu_128x224_lo8'\n\
                   ptxas info    : 0 bytes gmem\n";
        assert_eq!(serialized_wgmma(log), ["gemm_f16_wgmma_swiglu_128x224_lo8"]);
        assert!(serialized_wgmma("ptxas info    : 0 bytes gmem\n").is_empty());
    }

    #[test]
    fn stack_frames_are_read_per_function_and_budgeted() {
        let listing = "\nResource usage:\n Common:\n  GLOBAL:24 CONSTANT[4]:8\n \
            Function sample_topk:\n  REG:26 STACK:1024 SHARED:11264 LOCAL:0\n \
            Function attn_prefill_fa_128:\n  REG:218 STACK:272 SHARED:0 LOCAL:0\n \
            Function rope_f32:\n  REG:24 STACK:32 SHARED:0 LOCAL:0\n";
        let frames = stack_frames(listing);
        assert_eq!(
            frames,
            vec![
                ("sample_topk".to_string(), 1024),
                ("attn_prefill_fa_128".to_string(), 272),
                ("rope_f32".to_string(), 32)
            ]
        );
        let over: Vec<&str> = frames
            .iter()
            .filter(|(k, b)| *b > stack_budget(k))
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(over, vec!["attn_prefill_fa_128"]);
    }

    #[test]
    fn a_load_of_x_above_the_wait_is_named() {
        let listing = "\t\tFunction : gemv_good\n\
            /*0020*/ ULDC UR4, c[0x0][0x0] ;\n\
            /*0170*/ @!P2 LDG.E.EF.128 R4, desc[UR4][R4.64] ;\n\
            /*0560*/ ACQBULK ;\n\
            /*0a30*/ LDG.E.128.CONSTANT R4, desc[UR4][R30.64] ;\n\
            \t\tFunction : gemv_bad\n\
            /*0170*/ LDG.E.EF.128 R4, desc[UR4][R4.64] ;\n\
            /*0330*/ @!P3 LDG.E.128.CONSTANT R8, desc[UR4][R8.64] ;\n\
            /*0560*/ ACQBULK ;\n\
            \t\tFunction : attn_decode_split_hd64\n\
            /*0060*/ LDG.E R134, desc[UR8][R134.64] ;\n\
            /*0560*/ ACQBULK ;\n\
            \t\tFunction : rmsnorm_f32\n\
            /*0060*/ LDG.E.EF.128 R4, desc[UR8][R4.64] ;\n\
            /*0560*/ ACQBULK ;\n\
            \t\tFunction : no_wait\n\
            /*0060*/ LDG.E R4, desc[UR8][R4.64] ;\n";
        assert_eq!(
            loads_before_wait(listing),
            vec![
                "gemv_bad: LDG.E.128.CONSTANT",
                "rmsnorm_f32: LDG.E.EF.128",
                "no_wait: LDG.E"
            ]
        );
    }

    #[test]
    fn spills_are_read_per_kernel_from_the_metadata_notes() {
        // The shape of llvm-readelf --notes for two kernels; the argument map's keys (one
        // named, as with -g) must not be taken for the kernel's.
        let notes = "\
amdhsa.kernels:
  - .agpr_count:     0
    .args:
      - .name:           w0
        .offset:         0
    .name:           attn_decode_split
    .sgpr_spill_count: 0
    .vgpr_count:     128
    .vgpr_spill_count: 226
  - .agpr_count:     0
    .args:
      - .offset:         0
    .name:           gemv3_f16
    .sgpr_spill_count: 0
    .vgpr_count:     79
    .vgpr_spill_count: 0
amdhsa.target:   amdgcn-amd-amdhsa--gfx942
";
        assert_eq!(
            spilling_kernels(notes),
            vec!["attn_decode_split: 226 VGPRs, 0 SGPRs".to_string()]
        );
        assert!(spilling_kernels(&notes.replace("226", "0")).is_empty());
    }
}
