//! The audits of TRACE.md: the same token computed two ways, every stage compared, the
//! first divergence named. Side A is the route under test (decode, the optimised backend);
//! side B the reference (prefill, the plain CPU route). `--inject` perturbs side A.

use greta_trace::diff::{self, Align, DiffReport, Tolerances};
use greta_trace::inject::{InjectError, Injection};
use greta_trace::recorder::{Captured, Recorder, RunIds};
use greta_trace::selection::{Selection, TokenSel};
use greta_trace::NoTrace;

use crate::llama::{ForwardError, KvFormat, Llama, Logits};

/// What every audit takes besides the model(s) and the tokens.
#[derive(Debug, Clone)]
pub struct AuditSetup {
    /// Layers and points to compare (the token selection is the audit's own).
    pub selection: Selection,
    /// Faults (or probes) applied to the route under test, in order.
    pub inject: Vec<Injection>,
    /// Whether the reference route gets the same faults (`backend`, `backend_gpu`; not
    /// `prefill_decode`, whose decode route prefills the earlier positions untraced): the
    /// audit then checks that the route under test carries a changed stage on as the
    /// reference does, e.g. that a fused launch whose input an observer changed is rerun
    /// from the change rather than left with what it computed before.
    pub inject_reference: bool,
    /// Both routes of `backend` keep K and V in an f16 cache, as the GPU audit's reference
    /// does to match the GPU's (`backend_gpu` always rounds its reference's): the
    /// CPU emulation of the GPU's numerics (tools/oracle/split_inputs_emulate.sh) then
    /// compares what the GPU audit compares.
    pub kv_f16: bool,
    pub tolerances: Tolerances,
    pub prompt_id: String,
}

impl Default for AuditSetup {
    fn default() -> Self {
        AuditSetup {
            selection: Selection::default(),
            inject: Vec::new(),
            inject_reference: false,
            kv_f16: false,
            tolerances: Tolerances::default(),
            prompt_id: "p0".into(),
        }
    }
}

impl AuditSetup {
    /// The faults the reference route gets: the same as the route under test's with
    /// `inject_reference`, else none.
    fn reference_inject(&self) -> &[Injection] {
        match self.inject_reference {
            true => &self.inject,
            false => &[],
        }
    }
}

fn recorder(
    model: &Llama,
    setup: &AuditSetup,
    tokens: TokenSel,
    route: &str,
    inject: &[Injection],
) -> Result<Recorder, InjectError> {
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
        .with_injections(inject.iter().copied())
}

/// Teacher-forced prefill vs decode. For each position p: route B computes token p inside
/// a prefill of tokens[0..=p]; route A prefills tokens[0..p] and decodes token p.
pub fn prefill_decode(
    model: &Llama,
    tokens: &[u32],
    positions: &[usize],
    setup: &AuditSetup,
    on_position: &mut dyn FnMut(usize),
) -> Result<DiffReport, AuditError> {
    let mut a: Vec<Captured> = Vec::new();
    let mut b: Vec<Captured> = Vec::new();
    for &p in positions {
        let mut rb = recorder(model, setup, TokenSel::Positions(vec![p]), "prefill", &[])?;
        let mut cache = model.new_cache(p + 1);
        model.forward(&tokens[..=p], &mut cache, Logits::Last, &mut rb)?;
        b.append(&mut rb.captured);

        let mut ra = recorder(
            model,
            setup,
            TokenSel::Positions(vec![p]),
            "decode",
            &setup.inject,
        )?;
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

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Gpu(#[from] crate::llama::gpu::GpuError),
    #[error(transparent)]
    Inject(#[from] InjectError),
}

/// The GPU backend against a CPU reference route (`reference_route` names it): the same
/// teacher-forced run as `backend` (first half prefilled, the rest decoded one token at a
/// time), every position and stage.
pub fn backend_gpu(
    gpu: &crate::llama::gpu::GpuLlama,
    route: &str,
    cpu: &Llama,
    reference_route: &str,
    tokens: &[u32],
    setup: &AuditSetup,
) -> Result<DiffReport, AuditError> {
    let prefilled = tokens.len().div_ceil(2);
    let a = gpu_records(gpu, route, cpu, tokens, prefilled, setup)?;
    let b = reference_records(cpu, reference_route, tokens, prefilled, setup)?;
    Ok(diff::diff(
        route,
        &a,
        reference_route,
        &b,
        Align::Step,
        &setup.tolerances,
    ))
}

/// The GPU route's records of every stage of every position: `tokens[..prefilled]` in one
/// prefill, the rest decoded one token at a time (teacher-forced). `cpu` gives the
/// recorder the model's shape.
pub(crate) fn gpu_records(
    gpu: &crate::llama::gpu::GpuLlama,
    route: &str,
    cpu: &Llama,
    tokens: &[u32],
    prefilled: usize,
    setup: &AuditSetup,
) -> Result<Vec<Captured>, AuditError> {
    let mut r = recorder(cpu, setup, TokenSel::All, route, &setup.inject)?;
    let mut st = gpu.new_state(tokens.len(), prefilled.max(1))?;
    gpu.forward(&tokens[..prefilled], &mut st, Logits::All, &mut r)?;
    for t in &tokens[prefilled..] {
        gpu.forward(std::slice::from_ref(t), &mut st, Logits::All, &mut r)?;
    }
    Ok(r.captured)
}

/// The CPU reference's records of the same run as `gpu_records`, its K and V rounded to f16
/// as the GPU keeps them.
pub(crate) fn reference_records(
    cpu: &Llama,
    reference_route: &str,
    tokens: &[u32],
    prefilled: usize,
    setup: &AuditSetup,
) -> Result<Vec<Captured>, AuditError> {
    let mut r = recorder(
        cpu,
        setup,
        TokenSel::All,
        reference_route,
        setup.reference_inject(),
    )?;
    let mut cache = cpu.new_cache_as(tokens.len(), KvFormat::F16);
    cpu.forward(&tokens[..prefilled], &mut cache, Logits::All, &mut r)?;
    for t in &tokens[prefilled..] {
        cpu.forward(std::slice::from_ref(t), &mut cache, Logits::All, &mut r)?;
    }
    Ok(r.captured)
}

/// The same prompt through two loaded models (backends or weight routes): the first half
/// prefilled, the rest decoded token by token (teacher-forced), so that both the prefill
/// and the decode kernels are compared; every position and stage.
pub fn backend(
    under_test: (&Llama, &str),
    reference: (&Llama, &str),
    tokens: &[u32],
    setup: &AuditSetup,
) -> Result<DiffReport, AuditError> {
    let split = tokens.len().div_ceil(2);
    let run = |model: &Llama, route: &str, inject| -> Result<Vec<Captured>, AuditError> {
        let mut r = recorder(model, setup, TokenSel::All, route, inject)?;
        let format = match setup.kv_f16 {
            true => KvFormat::F16,
            false => KvFormat::F32,
        };
        let mut cache = model.new_cache_as(tokens.len(), format);
        model.forward(&tokens[..split], &mut cache, Logits::All, &mut r)?;
        for t in &tokens[split..] {
            model.forward(std::slice::from_ref(t), &mut cache, Logits::All, &mut r)?;
        }
        Ok(r.captured)
    };
    let a = run(under_test.0, under_test.1, &setup.inject)?;
    let b = run(reference.0, reference.1, setup.reference_inject())?;
    Ok(diff::diff(
        under_test.1,
        &a,
        reference.1,
        &b,
        Align::Step,
        &setup.tolerances,
    ))
}

/// One route's comparison with the plain route in `route`.
#[derive(Debug, Clone)]
pub struct RouteReport {
    pub route: &'static str,
    pub report: DiffReport,
}

/// Shadow compare of kernel routes: a prefill records the input of every matrix product
/// (attn_norm feeds q, k, v; attn_ctx feeds attn_out; ffn_norm feeds ffn_gate, ffn_up;
/// ffn_act feeds ffn_out; final_norm feeds logits); then each product runs again, on that
/// same input, by every kernel route, and each route is compared with the plain one
/// (weights widened to f32, a GEMV per row). `--inject` perturbs the routes under test.
pub fn route(
    model: &Llama,
    tokens: &[u32],
    setup: &AuditSetup,
) -> Result<Vec<RouteReport>, AuditError> {
    use greta_kernels::cpu::{matmul_wt_route, MatmulRoute};
    use greta_trace::{Point, StageAt};
    // The injections act here, on the products' rerun, not through a recorder, which would
    // check them against the model's layers.
    greta_trace::inject::check_layers(&setup.inject, model.config.n_layers)?;

    let inputs = [
        Point::AttnNorm,
        Point::AttnCtx,
        Point::FfnNorm,
        Point::FfnAct,
        Point::FinalNorm,
    ];
    let sel = Selection {
        points: inputs.to_vec(),
        ..setup.selection.clone()
    };
    let capture = AuditSetup {
        selection: sel,
        ..setup.clone()
    };
    let mut r = recorder(model, &capture, TokenSel::All, "capture", &[])?;
    let mut cache = model.new_cache(tokens.len());
    model.forward(tokens, &mut cache, Logits::All, &mut r)?;
    let Some(template) = r.captured.first().cloned() else {
        return Ok(Vec::new());
    };

    // Rows of each (layer, input point), in position order.
    let mut rows: std::collections::BTreeMap<(Option<usize>, Point), Vec<f32>> = Default::default();
    for c in &r.captured {
        let p = Point::parse(&c.record.point).expect("recorded points are valid");
        rows.entry((c.record.layer, p))
            .or_default()
            .extend_from_slice(c.values.as_deref().unwrap_or_default());
    }
    let t = tokens.len();
    let w = &model.weights;
    let mut products: Vec<(Option<usize>, Point, Point, &crate::llama::weights::Matrix)> =
        Vec::new();
    for (l, lw) in w.layers.iter().enumerate() {
        products.extend([
            (Some(l), Point::AttnNorm, Point::Q, &lw.wq),
            (Some(l), Point::AttnNorm, Point::K, &lw.wk),
            (Some(l), Point::AttnNorm, Point::V, &lw.wv),
            (Some(l), Point::AttnCtx, Point::AttnOut, &lw.wo),
            (Some(l), Point::FfnNorm, Point::FfnGate, &lw.w_gate),
            (Some(l), Point::FfnNorm, Point::FfnUp, &lw.w_up),
            (Some(l), Point::FfnAct, Point::FfnOut, &lw.w_down),
        ]);
    }
    products.push((None, Point::FinalNorm, Point::Logits, w.lm_head()));

    let mut by_route: Vec<(MatmulRoute, Vec<Captured>)> =
        MatmulRoute::ALL.iter().map(|&r| (r, Vec::new())).collect();
    for (layer, input, output, m) in products {
        if !setup.selection.wants_point(output)
            || !setup.selection.wants_layer(layer, model.config.n_layers)
        {
            continue;
        }
        let Some(x) = rows.get(&(layer, input)) else {
            continue;
        };
        for (route, out) in by_route.iter_mut() {
            let mut y = vec![0f32; t * m.rows];
            matmul_wt_route(x, m.view(), &mut y, t, m.cols, m.rows, *route);
            if *route != MatmulRoute::GemvF32 {
                for inj in &setup.inject {
                    inj.apply(
                        StageAt {
                            point: output,
                            layer,
                            pos0: 0,
                        },
                        &mut y,
                    );
                }
            }
            for (pos, row) in y.chunks_exact(m.rows).enumerate() {
                let mut c = template.clone();
                c.record.layer = layer;
                c.record.point = output.name().into();
                c.record.pos = pos;
                c.record.token_id = Some(tokens[pos]);
                c.record.route = route.name().into();
                c.record.shape = vec![m.rows];
                c.record.hash = greta_trace::row::hash(row);
                c.record.stats = greta_trace::row::stats(row);
                c.record.sample = Vec::new();
                c.record.top5 = None;
                c.values = Some(row.to_vec());
                out.push(c);
            }
        }
    }
    let reference = by_route
        .iter()
        .find(|(r, _)| *r == MatmulRoute::GemvF32)
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    Ok(by_route
        .into_iter()
        .filter(|(r, _)| *r != MatmulRoute::GemvF32)
        .map(|(r, c)| RouteReport {
            route: r.name(),
            report: diff::diff(
                r.name(),
                &c,
                MatmulRoute::GemvF32.name(),
                &reference,
                Align::Position,
                &setup.tolerances,
            ),
        })
        .collect())
}
