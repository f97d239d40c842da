//! The `greta` binary as a user meets it: flags, exit codes, messages.

use std::path::PathBuf;
use std::process::{Command, Output};

fn greta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_greta"))
        .args(args)
        .output()
        .expect("running greta")
}

fn tiny_gguf() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../greta-model/tests/fixtures/tiny/gqa-untied-theta5e5/model-f16.gguf")
        .display()
        .to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_backend_value_lists_the_accepted_ones() {
    let o = greta(&[
        "generate",
        "--backend",
        "cuda",
        "--model",
        &tiny_gguf(),
        "hi",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("\"cuda\"") && e.contains("cpu, gpu, auto"),
        "{e}"
    );
}

#[test]
fn gpu_backend_is_refused_with_a_reason_not_run_on_the_cpu() {
    let o = greta(&[
        "generate",
        "--backend",
        "gpu",
        "--model",
        &tiny_gguf(),
        "hi",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("GPU backend is not part of this build"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn tokenize_json_prints_only_an_array_of_ids() {
    let o = greta(&[
        "tokenize",
        "--json",
        "--model",
        &tiny_gguf(),
        "The quick brown fox",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<u32> = serde_json::from_slice(&o.stdout).expect("stdout is a JSON array of ids");
    assert_eq!(ids[0], 1, "the SentencePiece model adds BOS");
    assert!(ids.len() > 3);
}

#[test]
fn generate_streams_tokens_and_reports_speed_on_stderr() {
    let o = greta(&[
        "generate",
        "--model",
        &tiny_gguf(),
        "--no-chat",
        "-n",
        "12",
        "--temperature",
        "0",
        "The quick",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!o.stdout.is_empty(), "no text generated");
    let e = stderr(&o);
    assert!(
        e.contains("prompt:") && e.contains("tok/s") && e.contains("backend: cpu"),
        "{e}"
    );
    // Same seed, same output.
    let again = greta(&[
        "generate",
        "--model",
        &tiny_gguf(),
        "--no-chat",
        "-n",
        "12",
        "--temperature",
        "0",
        "The quick",
    ]);
    assert_eq!(o.stdout, again.stdout);
}

#[test]
fn missing_model_file_is_named() {
    let o = greta(&["generate", "--model", "/nonexistent/m.gguf", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/m.gguf does not exist"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn ctx_beyond_the_model_and_prompt_beyond_the_ctx_are_errors() {
    let o = greta(&[
        "generate",
        "--model",
        &tiny_gguf(),
        "--no-chat",
        "--ctx",
        "100000",
        "hi",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("exceeds the model's context of 128"),
        "{}",
        stderr(&o)
    );
    let o = greta(&[
        "generate",
        "--model",
        &tiny_gguf(),
        "--no-chat",
        "--ctx",
        "4",
        "-n",
        "8",
        "The quick brown fox",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("the context holds 4"), "{}", stderr(&o));
}

#[test]
fn perplexity_on_too_short_a_text_says_how_many_tokens_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("short.txt");
    std::fs::write(&f, "only a few words").unwrap();
    let o = greta(&[
        "perplexity",
        "--model",
        &tiny_gguf(),
        "--file",
        f.to_str().unwrap(),
        "--ctx",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("needs at least 128 tokens"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn chat_on_a_model_without_a_template_is_an_error() {
    let o = greta(&["generate", "--model", &tiny_gguf(), "--chat", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no chat template"), "{}", stderr(&o));
}

#[test]
fn info_names_the_platforms_probed() {
    let o = greta(&["info"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("platform amd") && s.contains("platform nvidia") && s.contains("cpu"),
        "{s}"
    );
}
