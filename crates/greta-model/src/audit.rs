//! The audits of TRACE.md: the same token computed two ways, every stage compared, the
//! first divergence named. Side A is the route under test (decode, the optimised backend);
//! side B the reference (prefill, the plain CPU route). `--inject` perturbs side A.

use greta_trace::diff::{self, Align, DiffReport, Tolerances};
use greta_trace::inject::Injection;
use greta_trace::recorder::{Captured, Recorder, RunIds};
use greta_trace::selection::{Selection, TokenSel};
use greta_trace::NoTrace;

use crate::llama::{ForwardError, Llama, Logits};

/// What every audit takes besides the model(s) and the tokens.
#[derive(Debug, Clone)]
pub struct AuditSetup {
    /// Layers and points to compare (the token selection is the audit's own).
    pub selection: Selection,
    pub inject: Option<Injection>,
    pub tolerances: Tolerances,
    pub prompt_id: String,
}

impl Default for AuditSetup {
    fn default() -> Self {
        AuditSetup {
            selection: Selection::default(),
            inject: None,
            tolerances: Tolerances::default(),
            prompt_id: "p0".into(),
        }
    }
}

fn recorder(
    model: &Llama,
    setup: &AuditSetup,
    tokens: TokenSel,
    route: &str,
    inject: Option<Injection>,
) -> Recorder {
    let sel = Selection {
        enabled: true,
        tokens,
        out: None,
        dump: None,
        ..setup.selection.clone()
    };
    let ids = RunIds {
        run: "audit".into(),
        prompt: setup.prompt_id.clone(),
        backend: "cpu".into(),
        route: route.into(),
    };
    Recorder::new(sel, model.config.n_layers, ids)
        .keep_rows()
        .with_injection(inject)
}

/// Teacher-forced prefill vs decode. For each position p: route B computes token p inside
/// a prefill of tokens[0..=p]; route A prefills tokens[0..p] and decodes token p.
pub fn prefill_decode(
    model: &Llama,
    tokens: &[u32],
    positions: &[usize],
    setup: &AuditSetup,
    on_position: &mut dyn FnMut(usize),
) -> Result<DiffReport, ForwardError> {
    let mut a: Vec<Captured> = Vec::new();
    let mut b: Vec<Captured> = Vec::new();
    for &p in positions {
        let mut rb = recorder(model, setup, TokenSel::Positions(vec![p]), "prefill", None);
        let mut cache = model.new_cache(p + 1);
        model.forward(&tokens[..=p], &mut cache, Logits::Last, &mut rb)?;
        b.append(&mut rb.captured);

        let mut ra = recorder(
            model,
            setup,
            TokenSel::Positions(vec![p]),
            "decode",
            setup.inject,
        );
        let mut cache = model.new_cache(p + 1);
        if p > 0 {
            model.forward(&tokens[..p], &mut cache, Logits::Last, &mut NoTrace)?;
        }
        model.forward(&tokens[p..=p], &mut cache, Logits::Last, &mut ra)?;
        a.append(&mut ra.captured);
        on_position(p);
    }
    Ok(diff::diff(
        "decode",
        &a,
        "prefill",
        &b,
        Align::Position,
        &setup.tolerances,
    ))
}

/// The same prompt through two loaded models (backends or weight routes): the first half
/// prefilled, the rest decoded token by token (teacher-forced), so that both the prefill
/// and the decode kernels are compared; every position and stage.
pub fn backend(
    under_test: (&Llama, &str),
    reference: (&Llama, &str),
    tokens: &[u32],
    setup: &AuditSetup,
) -> Result<DiffReport, ForwardError> {
    let split = tokens.len().div_ceil(2);
    let run = |model: &Llama, route: &str, inject| -> Result<Vec<Captured>, ForwardError> {
        let mut r = recorder(model, setup, TokenSel::All, route, inject);
        let mut cache = model.new_cache(tokens.len());
        model.forward(&tokens[..split], &mut cache, Logits::All, &mut r)?;
        for t in &tokens[split..] {
            model.forward(std::slice::from_ref(t), &mut cache, Logits::All, &mut r)?;
        }
        Ok(r.captured)
    };
    let a = run(under_test.0, under_test.1, setup.inject)?;
    let b = run(reference.0, reference.1, None)?;
    Ok(diff::diff(
        under_test.1,
        &a,
        reference.1,
        &b,
        Align::Step,
        &setup.tolerances,
    ))
}
