//! Dequantization of every GGML type against gguf-py (tools/oracle/make_quant_fixtures.py).

mod common;

use greta_model::io::gguf::GgufFile;
use greta_model::io::quant::GgmlType;

#[test]
fn every_type_dequantizes_exactly_as_gguf_py() {
    let f = GgufFile::open(&common::fixtures().join("quants.gguf")).unwrap();
    for ty in GgmlType::ALL {
        let info = f
            .header
            .tensor(ty.name())
            .unwrap_or_else(|| panic!("fixture lacks {}", ty.name()));
        assert_eq!(info.ggml_type, ty, "type id of tensor {}", ty.name());
        let (shape, got) = f.tensor_f32(ty.name()).unwrap();
        let (eshape, want) = f.tensor_f32(&format!("{}.expected", ty.name())).unwrap();
        assert_eq!(shape, eshape, "{}", ty.name());
        assert_eq!(shape, vec![3, 512]);
        let mismatches: Vec<_> = got
            .iter()
            .zip(&want)
            .enumerate()
            .filter(|(_, (a, b))| a.to_bits() != b.to_bits())
            .take(5)
            .collect();
        assert!(
            mismatches.is_empty(),
            "{}: (index, (ours, gguf-py)) {mismatches:?}",
            ty.name()
        );
        assert!(
            want.iter().any(|&v| v != 0.0),
            "{}: fixture is all zeros",
            ty.name()
        );
    }
}
