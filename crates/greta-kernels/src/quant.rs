//! GGML tensor types: block layouts and per-block dequantization.
//!
//! Block layouts follow ggml's `block_*` structs (little-endian, packed). Each is checked
//! against gguf-py's `gguf.quants.dequantize` on random blocks (greta-model's
//! tests/quant_parity.rs). The CPU matrix-vector product reads weights in these blocks
//! directly (`cpu::matmul_wt` with `Weights::Blocks`), so the values it multiplies are
//! exactly the dequantized ones.

use half::{bf16, f16};

/// The GGML tensor types this engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    BF16,
}

const QK: usize = 32;
const QK_K: usize = 256;

impl GgmlType {
    pub const ALL: [GgmlType; 11] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::BF16,
    ];

    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// The name gguf-py and llama.cpp use.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                QK
            }
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 2 + QK / 2,
            GgmlType::Q4_1 => 4 + QK / 2,
            GgmlType::Q5_0 => 2 + 4 + QK / 2,
            GgmlType::Q5_1 => 4 + 4 + QK / 2,
            GgmlType::Q8_0 => 2 + QK,
            GgmlType::Q4K => 4 + 12 + QK_K / 2,
            GgmlType::Q5K => 4 + 12 + QK_K / 8 + QK_K / 2,
            GgmlType::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// Bytes taken by `n` elements (n a multiple of the block size).
    pub fn row_bytes(self, n: u64) -> u64 {
        (n / self.block_size() as u64).saturating_mul(self.block_bytes() as u64)
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes one block of `ty` (`x`: `block_bytes` bytes) into `y` (`block_size` values).
#[inline(always)]
pub fn dequantize_block(ty: GgmlType, x: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::F32 => y[0] = f32::from_le_bytes([x[0], x[1], x[2], x[3]]),
        GgmlType::F16 => y[0] = f16_at(x, 0),
        GgmlType::BF16 => y[0] = bf16::from_le_bytes([x[0], x[1]]).to_f32(),
        GgmlType::Q4_0 => {
            let d = f16_at(x, 0);
            let qs = &x[2..18];
            for j in 0..QK / 2 {
                y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
                y[j + QK / 2] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            let d = f16_at(x, 0);
            let m = f16_at(x, 2);
            let qs = &x[4..20];
            for j in 0..QK / 2 {
                y[j] = (qs[j] & 0x0f) as f32 * d + m;
                y[j + QK / 2] = (qs[j] >> 4) as f32 * d + m;
            }
        }
        GgmlType::Q5_0 => {
            let d = f16_at(x, 0);
            let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
            let qs = &x[6..22];
            for j in 0..QK / 2 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                y[j] = (((qs[j] & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
                y[j + QK / 2] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
            }
        }
        GgmlType::Q5_1 => {
            let d = f16_at(x, 0);
            let m = f16_at(x, 2);
            let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
            let qs = &x[8..24];
            for j in 0..QK / 2 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                y[j] = ((qs[j] & 0x0f) as u32 | h0) as f32 * d + m;
                y[j + QK / 2] = ((qs[j] >> 4) as u32 | h1) as f32 * d + m;
            }
        }
        GgmlType::Q8_0 => {
            let d = f16_at(x, 0);
            for j in 0..QK {
                y[j] = x[2 + j] as i8 as f32 * d;
            }
        }
        GgmlType::Q4K => {
            let d = f16_at(x, 0);
            let dmin = f16_at(x, 2);
            let scales = &x[4..16];
            let mut q = &x[16..144];
            for (i, chunk) in y.chunks_exact_mut(64).enumerate() {
                let (sc1, m1) = scale_min_k4(2 * i, scales);
                let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
                let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
                let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
                for l in 0..32 {
                    chunk[l] = d1 * (q[l] & 0x0f) as f32 - mm1;
                    chunk[l + 32] = d2 * (q[l] >> 4) as f32 - mm2;
                }
                q = &q[32..];
            }
        }
        GgmlType::Q5K => {
            let d = f16_at(x, 0);
            let dmin = f16_at(x, 2);
            let scales = &x[4..16];
            let qh = &x[16..48];
            let mut ql = &x[48..176];
            let (mut u1, mut u2) = (1u8, 2u8);
            for (i, chunk) in y.chunks_exact_mut(64).enumerate() {
                let (sc1, m1) = scale_min_k4(2 * i, scales);
                let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
                let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
                let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
                for l in 0..32 {
                    let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                    chunk[l] = d1 * ((ql[l] & 0x0f) + h1) as f32 - mm1;
                    chunk[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - mm2;
                }
                ql = &ql[32..];
                u1 <<= 2;
                u2 <<= 2;
            }
        }
        GgmlType::Q6K => {
            let ql_all = &x[0..128];
            let qh_all = &x[128..192];
            let sc_all = &x[192..208];
            let d = f16_at(x, 208);
            for (n, chunk) in y.chunks_exact_mut(128).enumerate() {
                let ql = &ql_all[64 * n..];
                let qh = &qh_all[32 * n..];
                let sc = &sc_all[8 * n..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    chunk[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    chunk[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    chunk[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    chunk[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
    }
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block (ggml's get_scale_min_k4).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}
