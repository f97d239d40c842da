//! What tracing costs a decode step: no observer, the recorder with tracing off (what every
//! untraced `greta generate` runs), and the recorder writing every point to a null sink.
//! On the tiny fixture model, where a step is short and any per-stage overhead would show.
//!
//! cargo bench -p greta-model --bench trace_overhead

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use greta_model::llama::Logits;
use greta_trace::record::RunRecord;
use greta_trace::recorder::{Recorder, RunIds};
use greta_trace::selection::Selection;
use greta_trace::{NoTrace, StageObserver};

fn bench(c: &mut Criterion) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny/gqa4-llama3-rope/model-q8_0.gguf");
    let lm = greta_model::model::load(&path, &mut |_, _| {}).unwrap();
    let tokens = lm
        .tokenizer
        .encode("The quick brown fox computes 12 + 345 = 357", true)
        .unwrap();
    let n = tokens.len() - 1;
    let mut cache = lm.model.new_cache(tokens.len());
    lm.model
        .forward(&tokens[..n], &mut cache, Logits::Last, &mut NoTrace)
        .unwrap();
    let ids = || RunIds {
        run: "b".into(),
        prompt: "p0".into(),
        backend: "cpu".into(),
        route: "cpu-blocks".into(),
    };
    let layers = lm.model.config.n_layers;
    let mut step = |obs: &mut dyn StageObserver| {
        cache.truncate(n);
        lm.model
            .forward(&tokens[n..], &mut cache, Logits::Last, obs)
            .unwrap()
    };
    let mut g = c.benchmark_group("decode_step_tiny");
    g.bench_function("no_observer", |b| b.iter(|| step(&mut NoTrace)));
    let mut off = Recorder::new(Selection::default(), layers, ids());
    g.bench_function("recorder_tracing_off", |b| b.iter(|| step(&mut off)));
    let run = RunRecord {
        v: 1,
        run: "b".into(),
        tool_version: "bench".into(),
        git_rev: "bench".into(),
        model_path: String::new(),
        model_hash: String::new(),
        model_config: serde_json::Value::Null,
        backend: "cpu".into(),
        device: "cpu".into(),
        routes: vec![],
        selection: serde_json::Value::Null,
    };
    let on_sel = Selection {
        enabled: true,
        ..Selection::default()
    };
    let mut on = Recorder::new(on_sel, layers, ids())
        .to_writer(Box::new(std::io::sink()), &run)
        .unwrap();
    g.bench_function("recorder_all_points_to_null_sink", |b| {
        b.iter(|| step(&mut on))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
