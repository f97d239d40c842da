//! Checked dequantization of whole tensors. The block formats live in
//! `greta_kernels::quant`, shared with the CPU kernels that read blocks directly.

use rayon::prelude::*;

pub use greta_kernels::quant::{dequantize_block, GgmlType};

use super::FormatError;

/// Dequantizes `n` elements of type `ty` from `bytes` (which must hold exactly them).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, FormatError> {
    let mut out = vec![0f32; n];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Dequantizes into `out`; its length is the element count.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), FormatError> {
    let n = out.len();
    if !n.is_multiple_of(ty.block_size()) {
        return Err(FormatError::Corrupt {
            what: format!("{} data", ty.name()),
            offset: 0,
            reason: format!(
                "{n} elements is not a multiple of the block size {}",
                ty.block_size()
            ),
        });
    }
    let expected = ty.row_bytes(n as u64) as usize;
    if bytes.len() != expected {
        return Err(FormatError::Corrupt {
            what: format!("{} data", ty.name()),
            offset: 0,
            reason: format!(
                "{} bytes for {n} elements, expected {expected}",
                bytes.len()
            ),
        });
    }
    let bs = ty.block_size();
    let bb = ty.block_bytes();
    // Blocks are independent: dequantize them in parallel, in groups so that rayon's
    // per-task overhead stays small next to the work.
    const GROUP: usize = 64;
    out.par_chunks_mut(bs * GROUP)
        .zip(bytes.par_chunks(bb * GROUP))
        .for_each(|(o, b)| {
            for (y, x) in o.chunks_exact_mut(bs).zip(b.chunks_exact(bb)) {
                dequantize_block(ty, x, y);
            }
        });
    Ok(())
}
