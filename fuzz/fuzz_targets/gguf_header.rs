//! Any byte string given to the GGUF reader gives a header or an error, never a panic, an
//! out-of-bounds read or an allocation sized by an unchecked count; and the tensors of a
//! header that parses dequantize without panicking.
#![no_main]

use greta_model::io::gguf::GgufHeader;
use greta_model::io::quant::dequantize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = GgufHeader::parse(data) {
        for t in &h.tensors {
            let start = (h.data_offset + t.offset) as usize;
            let bytes = &data[start..start + t.n_bytes() as usize];
            if t.n_elements() <= 1 << 20 {
                let _ = dequantize(t.ggml_type, bytes, t.n_elements() as usize);
            }
        }
    }
});
