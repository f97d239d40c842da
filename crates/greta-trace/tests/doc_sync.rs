//! docs/trace.md states the point list, the record fields and the selection variables;
//! these tests compare each with the code, so the two cannot drift.

use greta_trace::record::{JsonF32, Record, RunRecord, StageRecord};
use greta_trace::row::stats;
use greta_trace::selection::VARIABLES;
use greta_trace::{Phase, Point};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/trace.md"))
        .expect("docs/trace.md")
}

fn block(doc: &str, name: &str) -> Vec<String> {
    let open = format!("<!-- {name} -->");
    let close = format!("<!-- /{name} -->");
    let start = doc
        .find(&open)
        .unwrap_or_else(|| panic!("docs/trace.md lacks {open}"))
        + open.len();
    let end = doc[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("docs/trace.md lacks {close}"))
        + start;
    doc[start..end]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn keys(v: serde_json::Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn point_list_matches_the_code_in_order() {
    let names: Vec<String> = Point::ALL.iter().map(|p| p.name().to_string()).collect();
    assert_eq!(block(&doc(), "points"), names);
}

#[test]
fn record_fields_match_the_schema() {
    let stage = StageRecord {
        v: 1,
        run: "r".into(),
        prompt: "p".into(),
        backend: "cpu".into(),
        route: "x".into(),
        phase: Phase::Prefill,
        step: 0,
        pos: 0,
        token_id: Some(1),
        layer: Some(0),
        point: "q".into(),
        dtype: "f32".into(),
        shape: vec![1],
        hash: "0".into(),
        stats: stats(&[1.0]),
        sample: vec![(0, JsonF32(1.0))],
        input: Some(greta_trace::record::InputProvenance {
            src: "embedding".into(),
            token_index: 0,
            kv_pos: 0,
            decode_step: 0,
            offset: 0,
            alloc: 1,
        }),
        top5: Some(vec![(0, JsonF32(1.0))]),
        top_gap: Some(JsonF32(0.0)),
    };
    let v = serde_json::to_value(Record::Stage(stage)).unwrap();
    assert_eq!(sorted(keys(v)), sorted(block(&doc(), "stage-fields")));
    let run = RunRecord {
        v: 1,
        run: "r".into(),
        tool_version: "t".into(),
        git_rev: "g".into(),
        model_path: "m".into(),
        model_hash: "h".into(),
        model_config: serde_json::Value::Null,
        backend: "cpu".into(),
        device: "cpu".into(),
        routes: vec![],
        selection: serde_json::Value::Null,
    };
    assert_eq!(
        sorted(keys(serde_json::to_value(Record::Run(run)).unwrap())),
        sorted(block(&doc(), "run-fields"))
    );
}

#[test]
fn every_variable_is_documented_and_no_other() {
    let d = doc();
    for (name, ..) in VARIABLES {
        assert!(
            d.contains(&format!("| `{name}` |")),
            "docs/trace.md lacks a row for {name}"
        );
    }
    let documented = d.matches("| `GRETA_TRACE_STAGE").count();
    assert_eq!(
        documented,
        VARIABLES.len(),
        "docs/trace.md has rows for variables the code does not accept"
    );
}
