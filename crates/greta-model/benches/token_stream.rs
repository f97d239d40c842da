//! What `greta generate`'s streaming decoder costs a token, after 1024 and 2048 tokens of
//! output (the repository's LICENSE, tokenized by the llama-bpe fixture's byte-level BPE
//! vocabulary): it runs once a generated token, between GPU decode steps of ~378 µs
//! (SmolLM2) or ~3.4 ms (Llama-2-7B) on an H200. 2026-12-04, a 2-core AMD EPYC host: the
//! decoder before session 56 (every token so far decoded again) 101 µs after 1024 tokens and
//! 222 µs after 2048; the window 0.84 and 0.87 µs.
//!
//! cargo bench -p greta-model --bench token_stream

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use greta_model::io::gguf::GgufFile;
use greta_model::tokenizer::Tokenizer;

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let f = GgufFile::open(&root.join("tests/fixtures/vocab/llama-bpe.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&f.header).unwrap();
    let text = std::fs::read_to_string(root.join("../../LICENSE")).unwrap();
    let ids = tok.encode(&text, false).unwrap();
    for after in [1024, 2048] {
        assert!(ids.len() > after, "the text has {} tokens", ids.len());
        c.bench_function(&format!("stream_push/after_{after}"), |b| {
            b.iter_batched(
                || {
                    let mut s = tok.stream();
                    for &id in &ids[..after] {
                        s.push(id).unwrap();
                    }
                    s
                },
                |mut s| s.push(std::hint::black_box(ids[after])).unwrap(),
                BatchSize::LargeInput,
            )
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
