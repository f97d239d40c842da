//! StageTrace and the audits on a tiny model: a fault planted at (layer, point) is reported
//! as the first divergence exactly there, by `trace diff` and by each audit, with nothing
//! before it diverging; deterministic runs hash identically; records round-trip.

mod common;

use std::path::Path;

use greta_model::audit::{self, AuditSetup};
use greta_model::llama::weights::CpuWeights;
use greta_model::llama::Logits;
use greta_model::model;
use greta_trace::diff::{self, Align, DiffReport, Tolerances};
use greta_trace::inject::Injection;
use greta_trace::record::{RunRecord, Trace};
use greta_trace::recorder::{Recorder, RunIds};
use greta_trace::selection::{Selection, TokenSel};
use greta_trace::Point;

fn tiny() -> std::path::PathBuf {
    common::fixtures().join("tiny/gqa4-llama3-rope/model-q8_0.gguf")
}

fn prompt_tokens(lm: &model::LoadedModel) -> Vec<u32> {
    lm.tokenizer
        .encode("The quick brown fox computes 12 + 345 = 357", true)
        .unwrap()
}

/// The backend audit of the tiny model's CPU route that multiplies quantized blocks against
/// the plain f32 route, with `setup`.
fn blocks_against_f32(
    lm: &model::LoadedModel,
    reference: &model::LoadedModel,
    tokens: &[u32],
    setup: &AuditSetup,
) -> DiffReport {
    audit::backend(
        (&lm.model, "cpu-blocks"),
        (&reference.model, "cpu-f32-reference"),
        tokens,
        setup,
    )
    .unwrap()
}

fn injection_for(point: Point) -> Injection {
    let layer = point.in_layer().then_some(1);
    // add=0.5 changes every value, whatever the row holds (a scale would leave zeros).
    Injection {
        layer,
        every_layer: false,
        point,
        fault: greta_trace::inject::Fault::Add(0.5),
        phase: None,
    }
}

fn pipeline_rank(layer: Option<usize>, point: Point) -> (usize, Point) {
    match (point, layer) {
        (Point::EmbedOut, _) => (0, point),
        (Point::FinalNorm | Point::Logits, _) => (usize::MAX, point),
        (_, Some(l)) => (l + 1, point),
        _ => (0, point),
    }
}

/// The report names the planted fault first, and no (layer, point) before it diverges.
fn assert_found_exactly(report: &DiffReport, inj: &Injection, what: &str) {
    let d = report
        .first_divergence
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: fault {inj} not found"));
    assert_eq!(
        (d.layer, d.point.as_str()),
        (inj.layer, inj.point.name()),
        "{what}: fault {inj} reported as {d:?}"
    );
    let planted = pipeline_rank(inj.layer, inj.point);
    for s in &report.points {
        let p = Point::parse(&s.point).unwrap();
        if pipeline_rank(s.layer, p) < planted {
            assert!(
                !s.diverged,
                "{what}: {} at layer {:?} reported diverging before the fault {inj}",
                s.point, s.layer
            );
        }
    }
    assert!(
        report.missing.is_empty(),
        "{what}: unpaired records {:?}",
        report.missing
    );
}

#[test]
fn every_planted_fault_is_the_first_divergence_of_each_audit() {
    let lm = common::load(&tiny());
    let reference = model::load_as(&tiny(), CpuWeights::F32, &mut |_, _| {}).unwrap();
    let tokens = prompt_tokens(&lm);
    for point in Point::ALL {
        let inj = injection_for(point);
        let setup = AuditSetup {
            inject: vec![inj],
            ..AuditSetup::default()
        };
        let r = audit::prefill_decode(
            &lm.model,
            &tokens,
            &[3, tokens.len() - 1],
            &setup,
            &mut |_| {},
        )
        .unwrap();
        assert_found_exactly(&r, &inj, "audit prefill-decode");
        let r = blocks_against_f32(&lm, &reference, &tokens, &setup);
        assert_found_exactly(&r, &inj, "audit backend");
    }
}

/// A phase-bound fault acts only in passes of its phase: in the backend audit (first half
/// prefilled, the rest decoded) `prefill@` is found at a prefill position and `decode@` at
/// the first decoded one, each at its planted layer and point; and several faults apply
/// together (the first in pipeline order is the one named).
#[test]
fn phase_bound_and_several_faults_act_where_planted() {
    let lm = common::load(&tiny());
    let reference = model::load_as(&tiny(), CpuWeights::F32, &mut |_, _| {}).unwrap();
    let tokens = prompt_tokens(&lm);
    let split = tokens.len().div_ceil(2);
    let run = |inject: Vec<Injection>| {
        let setup = AuditSetup {
            inject,
            ..AuditSetup::default()
        };
        blocks_against_f32(&lm, &reference, &tokens, &setup)
    };
    let prefill: Injection = "prefill@1:attn_out:scale=1.05".parse().unwrap();
    let r = run(vec![prefill]);
    assert_found_exactly(&r, &prefill, "prefill@ fault");
    let d = r.first_divergence.as_ref().unwrap();
    assert!(
        d.pos < split,
        "a prefill@ fault at decode position {}",
        d.pos
    );
    // Only prefill rows diverge at the planted point itself.
    let decode: Injection = "decode@1:attn_out:scale=1.05".parse().unwrap();
    let r = run(vec![decode]);
    assert_found_exactly(&r, &decode, "decode@ fault");
    let d = r.first_divergence.as_ref().unwrap();
    assert_eq!(
        (d.pos, d.phase_a.name()),
        (split, "decode"),
        "a decode@ fault must first show at the first decoded position"
    );
    let later: Injection = "1:ffn_out:scale=1.05".parse().unwrap();
    let earlier: Injection = "0:v:add=0.5".parse().unwrap();
    let r = run(vec![later, earlier]);
    assert_found_exactly(&r, &earlier, "two faults");
}

/// With the fault in the reference too (`inject_reference`), the backend audit passes for
/// every point: each route carries an observer's change on as the other does
/// (the stages after it computed from the changed values); without it, the same setup fails
/// at the planted point (the test would pass vacuously if the reference ignored the flag).
#[test]
fn a_fault_in_both_routes_is_carried_on_alike() {
    let lm = common::load(&tiny());
    let reference = model::load_as(&tiny(), CpuWeights::F32, &mut |_, _| {}).unwrap();
    let tokens = prompt_tokens(&lm);
    let audit = |inj: Injection, inject_reference: bool| {
        let setup = AuditSetup {
            inject: vec![inj],
            inject_reference,
            ..AuditSetup::default()
        };
        blocks_against_f32(&lm, &reference, &tokens, &setup)
    };
    for point in Point::ALL {
        let inj = injection_for(point);
        let r = audit(inj, true);
        assert!(!r.diverged(), "{inj} in both routes\n{}", r.verdict());
        let r = audit(inj, false);
        assert_found_exactly(&r, &inj, "audit backend, fault in one route");
    }
}

#[test]
fn audits_pass_without_a_fault() {
    let lm = common::load(&tiny());
    let reference = model::load_as(&tiny(), CpuWeights::F32, &mut |_, _| {}).unwrap();
    let tokens = prompt_tokens(&lm);
    let positions: Vec<usize> = (0..tokens.len()).collect();
    let r = audit::prefill_decode(
        &lm.model,
        &tokens,
        &positions,
        &AuditSetup::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(!r.diverged(), "{}\n{}", r.table(), r.verdict());
    assert_eq!(r.pairs, tokens.len() * (3 + 16 * lm.model.config.n_layers));
    let r = blocks_against_f32(&lm, &reference, &tokens, &AuditSetup::default());
    assert!(!r.diverged(), "{}\n{}", r.table(), r.verdict());
    // The two routes really are different code: not every pair is bit-identical.
    assert!(
        r.points.iter().any(|p| p.worst_error > 0.0),
        "the backend audit compared a route with itself"
    );
}

/// Writes a trace of a prefill plus two decode steps to `path`.
fn write_trace(lm: &model::LoadedModel, path: &Path, inject: Option<Injection>) -> usize {
    let sel = Selection {
        enabled: true,
        tokens: TokenSel::All,
        ..Selection::default()
    };
    let ids = RunIds {
        run: "r".into(),
        prompt: "p0".into(),
        backend: "cpu".into(),
        route: "cpu-blocks".into(),
    };
    let run = RunRecord {
        v: greta_trace::SCHEMA_VERSION,
        run: "r".into(),
        tool_version: "test".into(),
        git_rev: "test".into(),
        model_path: tiny().display().to_string(),
        model_hash: lm.content_hash.clone(),
        model_config: serde_json::to_value(&lm.model.config).unwrap(),
        backend: "cpu".into(),
        device: "cpu".into(),
        routes: vec!["cpu-blocks".into()],
        selection: serde_json::json!({}),
    };
    let file = std::fs::File::create(path).unwrap();
    let mut rec = Recorder::new(sel, lm.model.config.n_layers, ids)
        .with_injection(inject)
        .unwrap()
        .to_writer(Box::new(file), &run)
        .unwrap();
    let tokens = prompt_tokens(lm);
    let mut cache = lm.model.new_cache(tokens.len());
    let n = tokens.len() - 2;
    lm.model
        .forward(&tokens[..n], &mut cache, Logits::Last, &mut rec)
        .unwrap();
    for t in &tokens[n..] {
        lm.model
            .forward(std::slice::from_ref(t), &mut cache, Logits::Last, &mut rec)
            .unwrap();
    }
    rec.finish().unwrap()
}

#[test]
fn trace_diff_of_files_finds_every_planted_fault() {
    let lm = common::load(&tiny());
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.jsonl");
    write_trace(&lm, &clean, None);
    let b = Trace::read(&clean).unwrap();
    for point in Point::ALL {
        let inj = injection_for(point);
        let faulty = dir.path().join(format!("{point}.jsonl"));
        write_trace(&lm, &faulty, Some(inj));
        let a = Trace::read(&faulty).unwrap();
        let r = diff::diff(
            "a",
            &diff::from_records(a.stages),
            "b",
            &diff::from_records(b.stages.clone()),
            Align::Step,
            &Tolerances::default(),
        );
        assert_found_exactly(&r, &inj, "trace diff");
    }
}

/// A probe on one product's input (`f16in`) acts on that product alone: at layer 0 its `q`
/// is bitwise what rounding the whole stage gives (`attn_norm:f16`, which q, k and v all
/// read), while `attn_norm`, `k` and `v` stay bitwise the untouched run's; the stage probe
/// does reach `k` (else the comparison would prove nothing).
#[test]
fn a_product_input_probe_acts_on_that_product_alone() {
    let lm = common::load(&tiny());
    let dir = tempfile::tempdir().unwrap();
    let trace = |name: &str, inj: Option<&str>| {
        let path = dir.path().join(format!("{name}.jsonl"));
        write_trace(&lm, &path, inj.map(|s| s.parse().unwrap()));
        Trace::read(&path).unwrap().stages
    };
    let (clean, probe, stage) = (
        trace("clean", None),
        trace("probe", Some("0:q:f16in")),
        trace("stage", Some("0:attn_norm:f16")),
    );
    let hash = |t: &[greta_trace::record::StageRecord], point: &str, pos: usize| {
        t.iter()
            .find(|r| r.layer == Some(0) && r.point == point && r.pos == pos && r.step == 0)
            .unwrap_or_else(|| panic!("no prefill record of {point} at {pos}"))
            .hash
            .clone()
    };
    let prefilled = prompt_tokens(&lm).len() - 2;
    for pos in 0..prefilled {
        assert_eq!(hash(&probe, "q", pos), hash(&stage, "q", pos), "q at {pos}");
        assert_ne!(hash(&probe, "q", pos), hash(&clean, "q", pos), "q at {pos}");
        for point in ["attn_norm", "k", "v"] {
            assert_eq!(
                hash(&probe, point, pos),
                hash(&clean, point, pos),
                "{point} at {pos}: the q probe reached another product"
            );
        }
        assert_ne!(hash(&stage, "k", pos), hash(&clean, "k", pos), "k at {pos}");
    }
}

/// `kv_f16` rounds both routes' caches to f16, as the GPU audit's reference always does: a
/// K/V rounding planted on the route under test then still shows in its k_rope and v stages
/// but not in what its attention reads from the cache, so attn_ctx matches the reference's
/// bitwise; with f32 caches the same planted rounding reaches attn_ctx.
#[test]
fn kv_f16_rounds_both_caches_as_the_gpu_audit_reference_does() {
    let lm = common::load(&tiny());
    let tokens = prompt_tokens(&lm);
    let inject: Vec<Injection> = vec!["*:k_rope:f16".parse().unwrap(), "*:v:f16".parse().unwrap()];
    let run = |kv_f16: bool| {
        let setup = AuditSetup {
            inject: inject.clone(),
            kv_f16,
            ..AuditSetup::default()
        };
        audit::backend((&lm.model, "a"), (&lm.model, "b"), &tokens, &setup).unwrap()
    };
    let worst = |r: &DiffReport, point: Point| {
        r.points
            .iter()
            .filter(|p| p.point == point.name())
            .map(|p| p.worst_error)
            .fold(0.0, f64::max)
    };
    let (shared, apart) = (run(true), run(false));
    assert!(
        worst(&shared, Point::KRope) > 0.0,
        "the stage itself is rounded"
    );
    assert!(
        worst(&shared, Point::V) > 0.0,
        "the stage itself is rounded"
    );
    assert_eq!(
        worst(&shared, Point::AttnCtx),
        0.0,
        "both caches hold the same f16 values"
    );
    assert!(
        worst(&apart, Point::AttnCtx) > 0.0,
        "an f32 reference cache tells them apart"
    );
}

#[test]
fn deterministic_runs_give_identical_hashes_and_records_round_trip() {
    let lm = common::load(&tiny());
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (dir.path().join("1.jsonl"), dir.path().join("2.jsonl"));
    let n = write_trace(&lm, &p1, None);
    assert_eq!(write_trace(&lm, &p2, None), n);
    let (t1, t2) = (Trace::read(&p1).unwrap(), Trace::read(&p2).unwrap());
    assert!(n > 100, "{n} records");
    assert_eq!(t1.stages.len(), n);
    for (a, b) in t1.stages.iter().zip(&t2.stages) {
        assert_eq!(
            (&a.point, a.layer, a.pos, &a.hash),
            (&b.point, b.layer, b.pos, &b.hash)
        );
    }
    // Round trip: each record re-serialised reads back equal.
    for s in &t1.stages {
        let line = serde_json::to_string(&greta_trace::record::Record::Stage(s.clone())).unwrap();
        let back: greta_trace::record::Record = serde_json::from_str(&line).unwrap();
        assert_eq!(back, greta_trace::record::Record::Stage(s.clone()));
    }
    // The default selection records the last prefill row and every decode step.
    let logits: Vec<_> = t1.stages.iter().filter(|s| s.point == "logits").collect();
    assert_eq!(logits.len(), 3);
    assert!(logits
        .iter()
        .all(|s| s.top5.as_ref().is_some_and(|t| t.len() == 5)));
    let report = diff::diff(
        "1",
        &diff::from_records(t1.stages),
        "2",
        &diff::from_records(t2.stages),
        Align::Step,
        &Tolerances::default(),
    );
    assert!(!report.diverged() && report.points.iter().all(|p| p.worst_error == 0.0));
}

#[test]
fn malformed_traces_are_rejected_with_the_line() {
    for (text, needle) in [
        ("not json\n", ":1: not a StageTrace v1 record"),
        ("{\"kind\":\"stage\"}\n", ":1: not a StageTrace v1 record"),
        ("", "no records"),
    ] {
        let e = Trace::parse(text, "t.jsonl").unwrap_err().to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn audit_route_compares_every_kernel_route_and_finds_planted_faults() {
    let lm = common::load(&tiny());
    let tokens = prompt_tokens(&lm);
    let clean = audit::route(&lm.model, &tokens, &AuditSetup::default()).unwrap();
    let names: Vec<&str> = clean.iter().map(|r| r.route).collect();
    assert_eq!(
        names,
        [
            "auto",
            "gemm-sgemm",
            "gemv-native",
            "gemv-rows",
            "gemv-portable"
        ]
    );
    for r in &clean {
        assert!(!r.report.diverged(), "{}: {}", r.route, r.report.verdict());
        // 2 layers x 7 products + the LM head, every position.
        assert_eq!(r.report.pairs, tokens.len() * (2 * 7 + 1), "{}", r.route);
    }
    let products = greta_trace::inject::PRODUCT_OUTPUTS;
    for point in products.into_iter().chain([Point::Logits]) {
        let inj = injection_for(point);
        let setup = AuditSetup {
            inject: vec![inj],
            ..AuditSetup::default()
        };
        for r in audit::route(&lm.model, &tokens, &setup).unwrap() {
            assert_found_exactly(&r.report, &inj, &format!("audit route {}", r.route));
        }
    }
}

/// An injection at a layer the model lacks would never fire: every audit refuses it, the
/// ones whose probes ride on a recorder and `route`, which applies them itself.
#[test]
fn audits_refuse_an_injection_past_the_model_s_layers() {
    let lm = common::load(&tiny());
    let tokens = prompt_tokens(&lm);
    let setup = AuditSetup {
        inject: vec!["2:ffn_out:scale=2".parse().unwrap()],
        ..AuditSetup::default()
    };
    let named = |e: audit::AuditError| {
        assert!(
            matches!(e, audit::AuditError::Inject(_))
                && e.to_string().contains("the model has 2 layers"),
            "{e}"
        );
    };
    named(audit::route(&lm.model, &tokens, &setup).unwrap_err());
    named(audit::prefill_decode(&lm.model, &tokens, &[1], &setup, &mut |_| {}).unwrap_err());
    named(audit::backend((&lm.model, "a"), (&lm.model, "b"), &tokens, &setup).unwrap_err());
}

#[test]
fn debug_input_provenance_and_npy_dumps() {
    let lm = common::load(&tiny());
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    std::fs::create_dir(&dump).unwrap();
    let sel = Selection {
        enabled: true,
        debug_input: true,
        dump: Some(dump.clone()),
        points: vec![Point::EmbedOut, Point::AttnIn, Point::Logits],
        ..Selection::default()
    };
    let ids = RunIds {
        run: "r".into(),
        prompt: "p0".into(),
        backend: "cpu".into(),
        route: "cpu-blocks".into(),
    };
    let mut rec = Recorder::new(sel, lm.model.config.n_layers, ids).keep_rows();
    let tokens = prompt_tokens(&lm);
    let mut cache = lm.model.new_cache(tokens.len());
    let n = tokens.len() - 1;
    lm.model
        .forward(&tokens[..n], &mut cache, Logits::Last, &mut rec)
        .unwrap();
    lm.model
        .forward(&tokens[n..], &mut cache, Logits::Last, &mut rec)
        .unwrap();
    let embed: Vec<_> = rec
        .captured
        .iter()
        .filter(|c| c.record.point == "embed_out")
        .collect();
    assert_eq!(embed.len(), 2, "last prefill row and the decode step");
    let prefill = embed[0]
        .record
        .input
        .as_ref()
        .expect("provenance on embed_out");
    assert_eq!(
        (
            prefill.src.as_str(),
            prefill.token_index,
            prefill.kv_pos,
            prefill.decode_step
        ),
        ("embedding", n - 1, n - 1, 0)
    );
    assert_eq!((prefill.offset, prefill.alloc), ((n - 1) * 64, n * 64));
    let decode = embed[1].record.input.as_ref().unwrap();
    assert_eq!(
        (decode.token_index, decode.kv_pos, decode.decode_step),
        (0, n, 1)
    );
    let l1 = rec
        .captured
        .iter()
        .find(|c| c.record.point == "attn_in" && c.record.layer == Some(1))
        .unwrap();
    assert_eq!(
        l1.record.input.as_ref().unwrap().src,
        "resid_ffn of layer 0"
    );
    assert!(rec
        .captured
        .iter()
        .filter(|c| c.record.point == "logits")
        .all(|c| c.record.input.is_none()));

    // One .npy per record, holding the whole row as little-endian f32.
    let files: Vec<_> = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), rec.captured.len());
    let logits = rec
        .captured
        .iter()
        .find(|c| c.record.point == "logits" && c.record.step == 1)
        .unwrap();
    let bytes = std::fs::read(dump.join(format!("decode-s1-p{n}-L--logits.npy"))).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!(
        (10 + header_len) % 64,
        0,
        "numpy aligns the data to 64 bytes"
    );
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (384,)"),
        "{header}"
    );
    let values: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(&values, logits.values.as_ref().unwrap());
}

/// The rms metric (the GPU audit's default) reads a 1 % scale fault at its full size
/// (rms(0.01 b) / rms(b) = 0.01) and stays far below that for the f16 storage of the weights.
#[test]
fn rms_metric_reads_a_one_percent_fault_as_one_percent() {
    let tiny_f16 = common::fixtures().join("tiny/gqa4-llama3-rope/model-f16.gguf");
    let f32_route = model::load_as(&tiny_f16, CpuWeights::F32, &mut |_, _| {}).unwrap();
    let f16_route = model::load_as(&tiny_f16, CpuWeights::F16Rounded, &mut |_, _| {}).unwrap();
    let tokens = prompt_tokens(&f32_route);
    let tolerances = Tolerances {
        metric: diff::Metric::Rms,
        default: diff::GPU_F16_RMS_TOLERANCE,
        ..Tolerances::default()
    };
    let inj = Injection {
        layer: Some(1),
        every_layer: false,
        point: Point::AttnOut,
        fault: greta_trace::inject::Fault::Scale(1.01),
        phase: None,
    };
    let setup = AuditSetup {
        inject: vec![inj],
        tolerances: tolerances.clone(),
        ..AuditSetup::default()
    };
    let r = audit::backend(
        (&f32_route.model, "cpu-f32"),
        (&f32_route.model, "cpu-f32"),
        &tokens,
        &setup,
    )
    .unwrap();
    assert_found_exactly(&r, &inj, "rms metric");
    let e = r.first_divergence.as_ref().unwrap().error;
    assert!((e - 0.01).abs() < 1e-4, "a 1 % scale fault read as {e}");
    // f32 against f16-rounded weights (a storage difference, no fault): within the GPU tolerance.
    let setup = AuditSetup {
        tolerances,
        ..AuditSetup::default()
    };
    let r = audit::backend(
        (&f16_route.model, "cpu-f16-rounded"),
        (&f32_route.model, "cpu-f32"),
        &tokens,
        &setup,
    )
    .unwrap();
    assert!(!r.diverged(), "{}\n{}", r.table(), r.verdict());
}
