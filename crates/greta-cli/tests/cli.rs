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

/// Asserts that `o` exited with `code` and that its stderr names each of `needles` (the
/// whole stderr printed where it does not).
fn assert_fails(o: &Output, code: i32, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{e}");
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}:\n{e}");
    }
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
    assert_fails(&o, 2, &["\"cuda\"", "cpu, gpu, auto"]);
}

/// `--platform` (or GRETA_PLATFORM, which sets it) is parsed once, with the other flags:
/// an unknown value is refused before anything runs, whichever names it.
#[test]
fn unknown_platform_value_lists_the_accepted_ones() {
    let o = greta(&[
        "generate",
        "--platform",
        "rocm",
        "--model",
        &tiny_gguf(),
        "hi",
    ]);
    assert_fails(&o, 2, &["\"rocm\"", "amd, nvidia, auto"]);
    let o = greta_env(
        &["generate", "--model", &tiny_gguf(), "hi"],
        &[("GRETA_PLATFORM", "cuda")],
    );
    assert_fails(&o, 2, &["\"cuda\"", "amd, nvidia, auto"]);
    assert!(o.stdout.is_empty());
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
    assert_fails(&o, 1, &["--backend gpu: no GPU could be opened"]);
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

/// `generate --json` prints one object on stdout and nothing else there: the same text the
/// streamed run prints (same seed), its ids, and counts that agree with them.
#[test]
fn generate_json_is_one_object_with_the_streamed_text() {
    let common = ["--model", &tiny_gguf(), "-n", "6", "--seed", "3", "hi"];
    let streamed = greta(&[&["generate"][..], &common].concat());
    assert!(streamed.status.success(), "{}", stderr(&streamed));
    let o = greta(&[&["generate", "--json"][..], &common].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    let text = String::from_utf8(streamed.stdout).unwrap();
    assert_eq!(
        v["text"].as_str().unwrap(),
        text.strip_suffix('\n').unwrap()
    );
    let ids = v["ids"].as_array().unwrap();
    let generated = v["generated_tokens"].as_u64().unwrap() as usize;
    match v["stop"].as_str().unwrap() {
        "max_tokens" => assert_eq!((ids.len(), generated), (6, 6)),
        "end_of_generation" => assert_eq!(ids.len() + 1, generated),
        other => panic!("stop {other:?}"),
    }
    assert!(v["prompt_tokens"].as_u64().unwrap() > 0 && v["decode_tok_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["backend"], "cpu");
}

/// `--stop TEXT` ends generation where the text first contains TEXT and leaves it out: the
/// output is the unstopped run's text (same seed) up to the stop string's first place.
#[test]
fn generate_stops_at_a_stop_string_and_leaves_it_out() {
    let common = ["--model", &tiny_gguf(), "-n", "12", "--seed", "3", "hi"];
    let whole = greta(&[&["generate"][..], &common].concat());
    assert!(whole.status.success(), "{}", stderr(&whole));
    let text = String::from_utf8(whole.stdout).unwrap();
    let text = text.strip_suffix('\n').unwrap();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 5, "{text:?}");
    let stop: String = chars[2..4].iter().collect();
    let o = greta(&[&["generate", "--json", "--stop", &stop][..], &common].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["text"].as_str().unwrap(),
        &text[..text.find(&stop).unwrap()]
    );
    assert_eq!(
        (v["stop"].as_str(), v["stop_string"].as_str()),
        (Some("stop_string"), Some(stop.as_str()))
    );
    let streamed = greta(&[&["generate", "--stop", &stop][..], &common].concat());
    let out = String::from_utf8(streamed.stdout.clone()).unwrap();
    assert_eq!(out.strip_suffix('\n').unwrap(), v["text"].as_str().unwrap());
    assert!(
        stderr(&streamed).contains("stopped at --stop"),
        "{}",
        stderr(&streamed)
    );
    let o = greta(&[&["generate", "--stop", ""][..], &common].concat());
    assert_fails(&o, 1, &["an empty stop string"]);
}

#[test]
fn missing_model_file_is_named() {
    let o = greta(&["generate", "--model", "/nonexistent/m.gguf", "hi"]);
    assert_fails(&o, 1, &["/nonexistent/m.gguf does not exist"]);
}

/// A file cut short or not GGUF at all is refused once, naming the file, the field and the
/// byte: the error's causes are not printed twice (a cause that its error's message already
/// holds was, up to session 55: "X: X: X: corrupt ...: X: corrupt ...").
#[test]
fn truncated_or_foreign_model_files_are_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(tiny_gguf()).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &whole[..100]).unwrap();
    let foreign = dir.path().join("foreign.gguf");
    std::fs::write(&foreign, b"PK\x03\x04 a zip archive, not a model").unwrap();
    for (path, what) in [(&cut, "truncated file: "), (&foreign, "not a GGUF file")] {
        let p = path.to_str().unwrap();
        let o = greta(&["generate", "--model", p, "hi"]);
        assert_fails(&o, 1, &[p, what]);
        let e = stderr(&o);
        assert_eq!(e.matches(p).count(), 1, "{e}");
        assert_eq!(e.matches(what).count(), 1, "{e}");
    }
}

/// A Hugging Face directory without tokenizer_config.json loads (transformers' own tokenizer
/// needs only tokenizer.json), but greta says what that file would have given: the chat
/// template and the BOS/EOS tokens. A directory with it says nothing.
#[test]
fn a_missing_tokenizer_config_is_a_warning_naming_what_it_lacks() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../greta-model/tests/fixtures/tiny/mha-tied-theta1e4");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let m = dir.path().to_str().unwrap();
    let o = greta(&["tokenize", "--model", m, "--json", "hello"]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("warning: ") && e.contains("tokenizer_config.json not found: no chat template"),
        "{e}"
    );
    let o = greta(&[
        "tokenize",
        "--model",
        src.to_str().unwrap(),
        "--json",
        "hello",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

/// A checkpoint with an attention window shorter than its trained context (Mistral 7B
/// v0.1's `sliding_window`) is limited to the window, which greta's attention does not
/// implement, and says so: a longer --ctx is refused, not computed differently from
/// transformers; within the window it generates.
#[test]
fn a_sliding_window_limits_the_context_and_says_why() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../greta-model/tests/fixtures/tiny/mha-tied-theta1e4");
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["model_type"] = "mistral".into();
    cfg["sliding_window"] = 32.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let m = dir.path().to_str().unwrap();
    let o = greta(&["generate", "--model", m, "--ctx", "64", "hi"]);
    assert_fails(
        &o,
        1,
        &[
            "warning: ",
            "last 32 keys (sliding_window)",
            "--ctx 64 exceeds the model's context of 32 tokens",
        ],
    );
    let o = greta(&["generate", "--model", m, "--ctx", "32", "-n", "4", "hi"]);
    assert!(o.status.success(), "{}", stderr(&o));
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
    assert_fails(&o, 1, &["exceeds the model's context of 128"]);
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
    assert_fails(&o, 1, &["the context holds 4"]);
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
    assert_fails(&o, 1, &["needs at least 128 tokens"]);
}

/// A text of ~200 tokens for the perplexity tests (in a directory that lives as long as the
/// returned guard).
fn fox_text() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("text.txt");
    std::fs::write(
        &f,
        "the quick brown fox jumps over the lazy dog. ".repeat(20),
    )
    .unwrap();
    let f = f.display().to_string();
    (dir, f)
}

/// `greta perplexity` of the tiny model on `file`, chunks of 32, with `extra` flags.
fn perplexity(file: &str, extra: &[&str]) -> Output {
    perplexity_of(&tiny_gguf(), file, extra)
}

/// `perplexity` of `model`.
fn perplexity_of(model: &str, file: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "perplexity",
        "--model",
        model,
        "--file",
        file,
        "--ctx",
        "32",
    ];
    args.extend(extra);
    greta(&args)
}

/// A run's JSON output, the run having exited 0.
fn ok_json(o: Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `perplexity --inject`: a planted fault moves the figure (the probes reach the forward
/// passes), the JSON names what was injected, `--kl` gives both perplexities and a
/// divergence that ranks a fault above an f16 probe, and bad input is named.
#[test]
fn perplexity_under_an_injection_names_it_and_differs() {
    let (_dir, f) = fox_text();
    let run = |extra: &[&str]| ok_json(perplexity(&f, &[&["--json"], extra].concat()));
    let plain = run(&[]);
    let fault = run(&["--inject", "1:attn_out:scale=3"]);
    assert_eq!(plain["inject"], serde_json::json!([]));
    assert_eq!(fault["inject"], serde_json::json!(["1:attn_out:scale=3"]));
    let (p, q) = (
        plain["ppl"].as_f64().unwrap(),
        fault["ppl"].as_f64().unwrap(),
    );
    assert!(
        p.is_finite() && q.is_finite() && (p - q).abs() > 1e-6 * p,
        "{p} {q}"
    );
    // --kl: both perplexities as the plain runs read them, and a divergence > 0 for the
    // fault; an f16 probe on one stage diverges far less than the fault.
    let kl = run(&["--inject", "1:attn_out:scale=3", "--kl"]);
    let close = |a: &serde_json::Value, b: f64| (a.as_f64().unwrap() - b).abs() <= 1e-9 * b;
    assert!(
        close(&kl["ppl_base"], p) && close(&kl["ppl_probe"], q),
        "{kl}"
    );
    let kld = kl["kld_mean"].as_f64().unwrap();
    assert!(kld > 0.0 && kl["kld_max"].as_f64().unwrap() >= kld, "{kl}");
    let f16 = run(&["--inject", "*:ffn_norm:f16", "--kl"]);
    assert!(
        f16["kld_mean"].as_f64().unwrap() < kld / 100.0,
        "{f16} against {kl}"
    );
    // --kl with nothing to compare on the CPU; an --inject that does not parse (exit 2).
    let o = perplexity(&f, &["--kl"]);
    assert_fails(&o, 1, &["give at least one --inject"]);
    let o = perplexity(&f, &["--inject", "1:attn_out"]);
    assert_fails(&o, 2, &["[PHASE@]LAYER:POINT:KIND"]);
    // A layer the model lacks would never fire: named, not ignored (the tiny model has 2).
    let o = perplexity(&f, &["--kl", "--inject", "2:attn_out:f16"]);
    assert_fails(&o, 2, &["layer 2, but the model has 2 layers (0 to 1)"]);
}

/// `perplexity --kl-model`: the probe route is the other file's model (its perplexity is
/// what a plain run of that file reads), its divergence from the Q8_0 quantization of the
/// same weights is > 0 and far below a planted fault's, and --inject applies to it.
#[test]
fn perplexity_kl_against_another_model_file() {
    let (_dir, f) = fox_text();
    let q8 = tiny_gguf().replace("model-f16.gguf", "model-q8_0.gguf");
    let q8_plain = ok_json(perplexity_of(&q8, &f, &["--json"]));
    let kl = ok_json(perplexity(&f, &["--kl-model", &q8, "--json"]));
    assert_eq!(kl["kl_model"], serde_json::json!(q8), "{kl}");
    let (probe, plain) = (
        kl["ppl_probe"].as_f64().unwrap(),
        q8_plain["ppl"].as_f64().unwrap(),
    );
    assert!((probe - plain).abs() <= 1e-9 * plain, "{probe} {plain}");
    let kld = kl["kld_mean"].as_f64().unwrap();
    let fault = ok_json(perplexity(
        &f,
        &[
            "--kl-model",
            &q8,
            "--inject",
            "1:attn_out:scale=3",
            "--json",
        ],
    ));
    assert!(
        kld > 0.0 && fault["kld_mean"].as_f64().unwrap() > 100.0 * kld,
        "{kl} against {fault}"
    );
}

/// `perplexity --backend gpu` where no GPU opens: refused with the reason (as `generate`'s
/// is), not run on the CPU.
#[test]
fn perplexity_on_the_gpu_is_refused_with_a_reason_without_one() {
    let (_dir, f) = fox_text();
    let o = perplexity(&f, &["--backend", "gpu", "--kl"]);
    assert_fails(&o, 1, &["--backend gpu: no GPU could be opened"]);
    assert!(o.stdout.is_empty());
}

#[test]
fn calibrate_needs_a_gpu_and_refuses_a_policy_of_its_own() {
    // CI has no GPU: the refusal says why a GPU is needed (exit 2: an error, where 1 means
    // that no policy passed).
    let o = greta(&["calibrate", "--model", &tiny_gguf()]);
    assert_fails(&o, 2, &["needs a GPU"]);
    assert!(o.stdout.is_empty());
    let o = greta(&[
        "calibrate",
        "--model",
        &tiny_gguf(),
        "--split-inputs",
        "none",
    ]);
    assert_fails(&o, 2, &["tries the --split-inputs policies itself"]);
    let o = greta(&["calibrate", "-m", "synthetic:tiny", "--prompt", "hi"]);
    assert_fails(&o, 2, &["synthetic models have no tokenizer"]);
    // A policy of the ladder is parsed as --split-inputs is, before any GPU is looked for.
    let o = greta(&[
        "calibrate",
        "-m",
        &tiny_gguf(),
        "--try",
        "o",
        "--try",
        "ffn",
    ]);
    assert_fails(&o, 2, &["--try", "\"ffn\" is not a product"]);
    // `auto` is a value every GPU option parser takes; a CPU run says nothing of it (it
    // is the default), and an unknown policy lists auto among the accepted ones.
    let o = greta(&[
        "generate",
        "--model",
        &tiny_gguf(),
        "-n",
        "2",
        "--split-inputs",
        "auto",
        "hi",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("--split-inputs"), "{}", stderr(&o));
    let o = greta(&[
        "generate",
        "--model",
        &tiny_gguf(),
        "--split-inputs",
        "fast",
        "hi",
    ]);
    assert_fails(&o, 2, &["accepted: auto, all, none"]);
}

#[test]
fn chat_on_a_model_without_a_template_is_an_error() {
    let o = greta(&["generate", "--model", &tiny_gguf(), "--chat", "hi"]);
    assert_fails(&o, 1, &["no chat template"]);
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

fn greta_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_greta"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running greta")
}

#[test]
fn generate_traces_and_trace_diff_finds_an_injected_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let gen = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            &*Box::leak(tiny_gguf().into_boxed_str()),
            "--no-chat",
            "-n",
            "4",
            "--temperature",
            "0",
        ];
        args.extend_from_slice(extra);
        args.push("The quick brown fox");
        let o = greta_env(
            &args,
            &[
                ("GRETA_TRACE_STAGE", "1"),
                ("GRETA_TRACE_STAGE_OUT", out.to_str().unwrap()),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("stage records in"), "{}", stderr(&o));
    };
    gen(&a, &[]);
    gen(&b, &[]);
    let same = greta(&["trace", "diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("OK:"));

    let c = dir.path().join("c.jsonl");
    gen(&c, &["--inject", "1:attn_out:scale=1.5"]);
    let o = greta(&[
        "trace",
        "diff",
        "--json",
        c.to_str().unwrap(),
        a.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(v["first_divergence"]["layer"], 1);
    assert_eq!(v["first_divergence"]["point"], "attn_out");
}

#[test]
fn trace_tools_exit_2_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"kind\": \"stage\", \"v\": 1}\n").unwrap();
    let o = greta(&[
        "trace",
        "diff",
        bad.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_fails(&o, 2, &["bad.jsonl:1: not a StageTrace v1 record"]);

    let o = greta(&[
        "audit",
        "prefill-decode",
        "--model",
        &tiny_gguf(),
        "--points",
        "attn_bogus",
    ]);
    assert_fails(&o, 2, &["names no trace point", "accepted"]);

    let o = greta_env(
        &["generate", "--model", &tiny_gguf(), "--no-chat", "hi"],
        &[("GRETA_TRACE_STAGE_LAYERS", "2-1")],
    );
    assert_fails(&o, 2, &["GRETA_TRACE_STAGE_LAYERS", "accepted"]);

    let o = greta(&[
        "audit",
        "backend",
        "--model",
        &tiny_gguf(),
        "--against",
        "gpu",
    ]);
    assert_fails(&o, 2, &["accepted: cpu"]);

    // Options of one audit are refused by the others, by name, not ignored.
    let o = greta(&[
        "audit",
        "prefill-decode",
        "--model",
        &tiny_gguf(),
        "--kv-f16",
    ]);
    assert_fails(&o, 2, &["--kv-f16: accepted by `audit backend` only"]);
    let o = greta(&[
        "audit",
        "route",
        "--model",
        &tiny_gguf(),
        "--inject",
        "prefill@*:attn_ctx:f16p",
    ]);
    assert_fails(&o, 2, &["attention's probabilities", "CPU forward only"]);
}

#[test]
fn audits_exit_0_when_clean_and_1_on_a_planted_fault() {
    let o = greta(&[
        "audit",
        "prefill-decode",
        "--model",
        &tiny_gguf(),
        "--positions",
        "0,3,7",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let o = greta(&[
        "audit",
        "backend",
        "--model",
        &tiny_gguf(),
        "--inject",
        "0:ffn_act:nan",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["first_divergence"]["point"], "ffn_act");
    assert_eq!(v["first_divergence"]["layer"], 0);
    // LAYER "-" (outside the layers) is a value, not a flag.
    let o = greta(&[
        "audit",
        "backend",
        "--model",
        &tiny_gguf(),
        "--inject",
        "-:logits:add=1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["first_divergence"]["point"].as_str(),
            v["first_divergence"]["layer"].is_null()
        ),
        (Some("logits"), true)
    );
}

#[test]
fn bench_reports_json_for_a_synthetic_model_and_writes_a_gguf_greta_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    let out = greta(&[
        "bench",
        "-m",
        "synthetic:tiny",
        "--backend",
        "cpu",
        "--prompt-len",
        "16",
        "--gen",
        "8",
        "--reps",
        "2",
        "--json",
        "--write-gguf",
        gguf.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["backend"], "cpu");
    assert_eq!(r["spec"]["prompt_len"], 16);
    // The report names the build that measured it, as `greta info` does.
    let info = greta(&["info"]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert_eq!(r["build"].as_str(), info.lines().next(), "{}", r["build"]);
    assert!(
        r["build"].as_str().unwrap().starts_with(concat!(
            "greta ",
            env!("CARGO_PKG_VERSION"),
            " ("
        )),
        "{}",
        r["build"]
    );
    assert_eq!(r["all_prefill_ms"].as_array().unwrap().len(), 2);
    assert!(
        r["prefill_host_ms"].is_null(),
        "the host/GPU split is the GPU's: {}",
        r["prefill_host_ms"]
    );
    for k in [
        "prefill_ms",
        "decode_tok_s",
        "achieved_gb_s",
        "copy_gb_s",
        "bytes_per_token",
        "prefill_flops",
        "prefill_tflop_s",
    ] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {}", r[k]);
    }
    // The throughput is the FLOPs over the median time, not another run's.
    let (flops, ms, tf) = (
        r["prefill_flops"].as_f64().unwrap(),
        r["prefill_ms"].as_f64().unwrap(),
        r["prefill_tflop_s"].as_f64().unwrap(),
    );
    assert!(
        (flops / (ms / 1e3) / 1e12 - tf).abs() <= 1e-9 * tf,
        "{flops} {ms} {tf}"
    );
    // The written GGUF is a model greta loads and benchmarks.
    let out = short_cpu_bench(gguf.to_str().unwrap(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Bad requests are refused with what is accepted.
    let out = greta(&["bench", "-m", "synthetic:llama9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("synthetic:smollm2-135m"),
        "{err}"
    );
    let out = greta(&[
        "bench",
        "-m",
        "synthetic:tiny",
        "--backend",
        "cpu",
        "--prompt-len",
        "300",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("context of 256"),
        "{err}"
    );
}

/// The GPU timing studies (and the GPU's kernel list) are refused on the CPU, naming the
/// flag, instead of running a bench whose study did not happen.
#[test]
fn bench_refuses_gpu_timing_studies_on_the_cpu() {
    for (args, says) in [
        (
            &["--timeline", "/tmp/greta-timeline-never-written.csv"][..],
            "GPU timing study",
        ),
        (
            &["--skip-kernels", "gemv3_norm_f16"][..],
            "GPU timing study",
        ),
        (&["--kernels"][..], "GPU kernels a run launches"),
    ] {
        let flag = args[0];
        let out = short_cpu_bench("synthetic:tiny", args);
        assert!(!out.status.success(), "{flag} ran on the CPU");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains(says), "{flag}: {err}");
    }
    assert!(!std::path::Path::new("/tmp/greta-timeline-never-written.csv").exists());
}

/// `--prompt-len` takes a list, as llama-bench's -p: one report a length from the one loaded
/// model (an array in --json, each with its own length and its own median), a length beyond
/// the context refused before any run, and the one-run listings refused with several; a bad
/// `--stream-k`, `--gemm-tiles`, `--gemv-rows` or `--ctx-combine` value names the accepted ones, and a set one
/// is said to do nothing on the CPU.
#[test]
fn bench_runs_a_list_of_prompt_lengths_and_names_bad_gpu_flags() {
    // (short_cpu_bench's own --prompt-len 4 comes first: lengths given twice add up, as
    // llama-bench's repeated -p.)
    let out = short_cpu_bench("synthetic:tiny", &["--prompt-len", "9,6", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lens: Vec<u64> = r
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {r}"))
        .iter()
        .map(|x| x["spec"]["prompt_len"].as_u64().unwrap())
        .collect();
    assert_eq!(lens, [4, 9, 6]);
    // A run refused, its error naming `expect`; a GPU option set to a valid value, which
    // the CPU run accepts and says it ignores.
    let refused = |args: &[&str], expect: &str| {
        let out = short_cpu_bench("synthetic:tiny", args);
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains(expect), "{err}");
    };
    let noted_on_cpu = |flag: &str, value: &str| {
        let out = short_cpu_bench("synthetic:tiny", &[flag, value]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains(flag), "{}", stderr(&out));
    };
    refused(&["--prompt-len", "4,300"], "context of 256");
    refused(
        &["--prompt-len", "4,9", "--kernels"],
        "give one --prompt-len",
    );
    refused(&["--stream-k", "sometimes"], "expected auto, off or always");
    noted_on_cpu("--stream-k", "auto");
    // --gemm-tiles: a tile that does not exist is refused with the list of those that do.
    refused(&["--gemm-tiles", "qkv=t137"], "accepted: 128, 64, 128x256");
    noted_on_cpu("--gemm-tiles", "gate_up=t88,down=t136");
    // --gemv-rows: past what the GEMVs take, refused with the range.
    refused(&["--gemv-rows", "17"], "from 0 to 16");
    noted_on_cpu("--gemv-rows", "0");
    // --ctx-combine: an unknown place is refused naming the three.
    refused(
        &["--ctx-combine", "cluster"],
        "expected auto, attention or product",
    );
    noted_on_cpu("--ctx-combine", "product");
}

/// `--kv-cache f16` on the CPU: the report names the format, and the cache holds exactly half
/// the f32 cache's bytes (its bytes-a-token figure counts 2 bytes a K/V value where f32
/// counts 4); an unknown format is refused naming the two there are.
#[test]
fn bench_keeps_an_f16_kv_cache_when_asked() {
    let run = |format: &str| {
        let out = short_cpu_bench("synthetic:tiny", &["--kv-cache", format, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (f32r, f16r) = (run("f32"), run("f16"));
    assert_eq!(f32r["spec"]["kv_cache"], "f32");
    assert_eq!(f16r["spec"]["kv_cache"], "f16");
    let bytes = |r: &serde_json::Value| r["state_bytes"].as_u64().unwrap();
    assert!(
        bytes(&f16r) > 0 && bytes(&f32r) == 2 * bytes(&f16r),
        "{f32r} {f16r}"
    );
    let per_token = |r: &serde_json::Value| r["bytes_per_token"].as_f64().unwrap();
    assert!(per_token(&f32r) > per_token(&f16r), "{f32r} {f16r}");
    let out = short_cpu_bench("synthetic:tiny", &["--kv-cache", "q8_0"]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("f32 or f16"), "{err}");
}

/// `--temperature` benches sampled decode (the report says so); sampling settings the sampler
/// refuses are refused before any work, naming the setting and what is accepted.
#[test]
fn bench_samples_when_asked_and_refuses_bad_settings() {
    let out = short_cpu_bench("synthetic:tiny", &["--temperature", "0.8", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sampling = &report["spec"]["sampling"];
    assert_eq!(sampling["top_k"], 40, "{report}");
    assert!((sampling["temperature"].as_f64().unwrap() - 0.8).abs() < 1e-6);
    let greedy = short_cpu_bench("synthetic:tiny", &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&greedy.stdout).unwrap();
    assert!(report["spec"]["sampling"].is_null(), "{report}");
    for (extra, says) in [
        (
            ["--temperature", "0.8", "--top-p", "1.5"],
            "top_p = 1.5 is out of range; accepted: 0 < top_p <= 1",
        ),
        (
            ["--temperature=-1", "--top-k", "40", "--json"],
            "temperature -1: must be > 0",
        ),
    ] {
        let out = short_cpu_bench("synthetic:tiny", &extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{extra:?}: {err}"
        );
    }
}

/// `greta bench` of `model` on the CPU at the smallest sizes (4 prompt tokens, 2 decoded,
/// one repetition), with `extra` flags.
fn short_cpu_bench(model: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "bench",
        "-m",
        model,
        "--backend",
        "cpu",
        "--prompt-len",
        "4",
        "--gen",
        "2",
        "--reps",
        "1",
    ];
    args.extend_from_slice(extra);
    greta(&args)
}

/// The tiny model as a Hugging Face directory with a chat template (chat_template.jinja, as
/// transformers 4.47+ saves it) that adds a default system turn, as SmolLM2's does; short,
/// for the tiny model's 128 positions.
fn tiny_chat_model() -> tempfile::TempDir {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../greta-model/tests/fixtures/tiny/gqa-untied-theta5e5");
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{% if messages[0]['role'] != 'system' %}s: be brief\n{% endif %}{% for m in messages %}\
         {{ m['role'][0] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}a:{% endif %}",
    )
    .unwrap();
    dir
}

fn greta_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_greta"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running greta");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `greta chat` keeps the cache between turns: the second turn's prompt is the whole
/// conversation and what it shares with the cache is reused, not computed; after /reset the
/// next turn's prompt is the first one again, which the cache still begins with. --json
/// prints one object a turn.
#[test]
fn chat_reuses_the_cache_across_turns_and_after_a_reset() {
    let dir = tiny_chat_model();
    let m = dir.path().to_str().unwrap();
    let args = [
        "chat",
        "--model",
        m,
        "--json",
        "--temperature",
        "0",
        "-n",
        "5",
    ];
    let o = greta_stdin(&args, "hi\nyo\n/reset\nhi\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let turns: Vec<serde_json::Value> = String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(turns.len(), 3, "{turns:?}");
    let n = |t: &serde_json::Value, k: &str| t[k].as_u64().unwrap() as usize;
    let (first, second, third) = (&turns[0], &turns[1], &turns[2]);
    assert_eq!(n(first, "reused_tokens"), 0);
    assert_eq!(n(first, "computed_tokens"), n(first, "prompt_tokens"));
    assert_eq!(n(first, "generated_tokens"), 5, "{first}");
    // The whole first prompt (and of the reply's fed tokens those it tokenizes back to: the
    // random model's bytes do not, the default model's words do, tests/conversation.rs).
    assert!(
        n(second, "reused_tokens") >= n(first, "prompt_tokens")
            && n(second, "reused_tokens") + n(second, "computed_tokens")
                == n(second, "prompt_tokens"),
        "{first}\n{second}"
    );
    // After the reset: the same prompt as the first turn, which the cache still begins with.
    assert_eq!(n(third, "prompt_tokens"), n(first, "prompt_tokens"));
    assert_eq!(n(third, "reused_tokens"), n(first, "prompt_tokens") - 1);
    assert_eq!(third["text"], first["text"]);
    let e = stderr(&o);
    assert!(
        e.contains("[turn 2: prompt") && e.contains("from the cache"),
        "{e}"
    );
    // Every prompt computed whole: the same replies.
    let o = greta_stdin(
        &[&args[..], &["--no-cache-reuse"]].concat(),
        "hi\nyo\n/reset\nhi\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let whole: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(whole.len(), 3);
    for (a, b) in turns.iter().zip(&whole) {
        assert_eq!((&a["text"], 0), (&b["text"], n(b, "reused_tokens")));
        assert_eq!(n(a, "prompt_tokens"), n(b, "computed_tokens"));
    }
}

/// From a pipe, a conversation longer than the context and an unknown command end the run
/// with exit 1, naming what was wrong and what is accepted; a model without a template is
/// refused before any turn.
#[test]
fn chat_errors_name_the_context_the_command_and_the_missing_template() {
    let dir = tiny_chat_model();
    let m = dir.path().to_str().unwrap();
    let long = "word ".repeat(60);
    let o = greta_stdin(&["chat", "--model", m, "--ctx", "32"], &format!("{long}\n"));
    assert_fails(&o, 1, &["turn 1", "context holds 32", "raise --ctx"]);
    let o = greta_stdin(&["chat", "--model", m], "/help\n");
    assert_fails(&o, 1, &["unknown command /help", "accepted /reset, /exit"]);
    let o = greta_stdin(&["chat", "--model", &tiny_gguf()], "hi\n");
    assert_fails(&o, 1, &["no chat template"]);
    let o = greta_stdin(&["chat", "--model", m, "-n", "0"], "hi\n");
    assert_fails(&o, 1, &["--max-tokens 0"]);
}
