//! A two-turn conversation on the default model (SmolLM2-135M-Instruct): the second turn's
//! prompt is the transcript transformers renders from SmolLM2's template, it reuses the
//! first turn's cache, and the reply's logits match a fresh prefill of the whole transcript.
//!
//! The default model is fetched on first use (as `greta generate` does); these tests fail,
//! not skip, when it cannot be had.

mod common;

use greta_model::conversation::Conversation;
use greta_model::generate::sampler::{Sampler, SamplerConfig};
use greta_model::generate::{self, Decoding};
use greta_model::llama::Logits;
use greta_model::trace::NoTrace;

/// SmolLM2's template (its tokenizer_config.json, also in the GGUF) as transformers'
/// `apply_chat_template(..., add_generation_prompt=True)` renders it: a default system turn
/// where the conversation has none, then ChatML turns.
fn transcript(turns: &[(&str, &str)], next_user: &str) -> String {
    let mut s = String::from(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n",
    );
    for (user, assistant) in turns {
        s += &format!(
            "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{assistant}<|im_end|>\n"
        );
    }
    s += &format!("<|im_start|>user\n{next_user}<|im_end|>\n<|im_start|>assistant\n");
    s
}

#[test]
fn a_second_turn_reuses_the_cache_and_computes_what_a_fresh_prefill_does() {
    let lm = common::default_model();
    let tok = &lm.tokenizer;
    let mut conv = Conversation::new(tok, None).unwrap();
    let mut cache = lm.model.new_cache(512);

    let first = "Name one primary colour.";
    let p1 = conv.prompt(tok, first).unwrap();
    assert_eq!(p1.reused, 0);
    assert_eq!(tok.decode(&p1.ids).unwrap(), transcript(&[], first));
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: 0.0,
        ..Default::default()
    })
    .unwrap();
    let mut shown = Vec::new();
    let stats = generate::generate(
        &lm.model,
        &mut cache,
        &p1.ids,
        Decoding {
            max_new: 24,
            sampler: &mut sampler,
            is_eog: &|id| tok.is_end_of_generation(id),
        },
        &mut NoTrace,
        &mut |id| {
            shown.push(id);
            true
        },
    )
    .unwrap();
    let reply = tok.decode(&shown).unwrap();
    assert!(!reply.trim().is_empty(), "no reply");
    // The cache holds the prompt and every sampled token but the last.
    assert_eq!(cache.len(), p1.ids.len() + stats.tokens.len() - 1);
    conv.record(first.into(), reply.clone(), &p1, &stats.tokens, cache.len())
        .unwrap();

    let second = "And another one?";
    let p2 = conv.prompt(tok, second).unwrap();
    assert_eq!(
        tok.decode(&p2.ids).unwrap(),
        transcript(&[(first, &reply)], second)
    );
    // ChatML renders a conversation as the previous prompt plus text: the whole first
    // prompt is reused, and the reply too as far as it tokenizes back to the sampled ids.
    assert_eq!(&p2.ids[..p1.ids.len()], &p1.ids[..]);
    assert!(
        p2.reused >= p1.ids.len() && p2.reused < p2.ids.len(),
        "reused {} of {} (first prompt {})",
        p2.reused,
        p2.ids.len(),
        p1.ids.len()
    );

    // The second turn as `greta chat` runs it: the cache cut to what it shares with the
    // prompt, and generation given the whole prompt (its repetition window sees it all).
    let mut first_token = |cache: &mut greta_model::llama::KvCache| {
        let mut seen = None;
        generate::generate(
            &lm.model,
            cache,
            &p2.ids,
            Decoding {
                max_new: 1,
                sampler: &mut sampler,
                is_eog: &|_| false,
            },
            &mut NoTrace,
            &mut |id| {
                seen = Some(id);
                true
            },
        )
        .map(|stats| (stats, seen))
    };
    cache.truncate(p2.reused);
    let (stats, logits_seen) = first_token(&mut cache).unwrap();
    assert_eq!(
        (stats.reused_tokens, stats.computed_tokens()),
        (p2.reused, p2.ids.len() - p2.reused)
    );
    // The same pass by hand, to compare its logits with a fresh prefill's.
    cache.truncate(p2.reused);
    let reused = lm
        .model
        .forward(&p2.ids[p2.reused..], &mut cache, Logits::Last, &mut NoTrace)
        .unwrap();
    let mut fresh_cache = lm.model.new_cache(512);
    let fresh = lm
        .model
        .forward(&p2.ids, &mut fresh_cache, Logits::Last, &mut NoTrace)
        .unwrap();
    assert_eq!(reused.len(), fresh.len());
    let scale = fresh.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = reused
        .iter()
        .zip(&fresh)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    // The same keys and values whether computed in one pass or two; only the products'
    // batching differs (1.8e-5 at a largest logit of 32 when written, on this CPU).
    assert!(
        worst <= 1e-5 * scale,
        "last-token logits differ by {worst} (largest logit {scale})"
    );
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    assert_eq!(argmax(&reused), argmax(&fresh));
    assert_eq!(
        logits_seen,
        Some(argmax(&fresh) as u32),
        "greedy's first reply token"
    );

    // A cache that holds the whole prompt leaves no token to give the first logits.
    let e = first_token(&mut cache).unwrap_err();
    assert!(
        matches!(e, generate::GenerateError::CacheCoversPrompt { cached, prompt }
            if cached == prompt && prompt == p2.ids.len()),
        "{e}"
    );
}

/// A template that writes `bos_token` itself (Llama 2 and 3 do) gets one BOS, as
/// transformers' apply_chat_template tokenizes it (without the tokenizer's special tokens):
/// the tiny Llama GGUF's tokenizer adds BOS to plain text, so encoding the rendered text as
/// plain text would start it with two.
#[test]
fn a_template_that_writes_bos_gets_one() {
    let mut lm = common::load(&common::fixtures().join("tiny/gqa-untied-theta5e5/model-f16.gguf"));
    lm.tokenizer.chat_template = Some(
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
            .into(),
    );
    let tok = &lm.tokenizer;
    let bos = tok.bos.expect("the tiny Llama tokenizer has a BOS");
    assert!(
        tok.add_bos,
        "the tiny Llama GGUF asks for BOS on plain text"
    );
    let ids = Conversation::new(tok, None)
        .unwrap()
        .prompt(tok, "hi")
        .unwrap()
        .ids;
    let count = |ids: &[u32]| ids.iter().filter(|&&i| i == bos).count();
    assert_eq!((ids[0], count(&ids)), (bos, 1), "{ids:?}");
    let plain = tok.encode("<s>[user] hi\n", true).unwrap();
    assert_eq!(count(&plain), 2, "as plain text: {plain:?}");
    assert_eq!(&plain[1..], &ids[..]);
}
