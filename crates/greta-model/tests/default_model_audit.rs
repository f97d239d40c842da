//! `audit prefill-decode` on the default model: every position of a 64-token prompt, every
//! stage of every layer, within the documented tolerance (greta_trace::diff::DEFAULT_TOLERANCE).

mod common;

use greta_model::audit::{self, AuditSetup};

#[test]
fn prefill_and_decode_agree_at_every_position_of_a_64_token_prompt() {
    let lm = common::default_model();
    let text = std::fs::read_to_string(common::fixtures().join("../../../../LICENSE")).unwrap();
    let tokens = lm.tokenizer.encode(&text, true).unwrap();
    let tokens = &tokens[..64];
    let positions: Vec<usize> = (0..64).collect();
    let r = audit::prefill_decode(
        &lm.model,
        tokens,
        &positions,
        &AuditSetup::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(!r.diverged(), "{}\n{}", r.table(), r.verdict());
    assert_eq!(
        r.pairs,
        64 * (3 + 16 * 30),
        "every stage of every position compared"
    );
    let worst = r.points.iter().map(|p| p.worst_error).fold(0f64, f64::max);
    eprintln!("worst relative error over all stages and positions: {worst:.3e}");
}
