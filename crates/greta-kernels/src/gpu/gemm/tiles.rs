//! The warpgroup GEMM's tiles (kernels/gemm.hip: GEMM_WGMMA, the swapped forms): their
//! shapes, stages, threads and shared memory, and which tile a launch takes.

use super::*;

/// A tile of the warpgroup GEMM: `m` input rows by `n` output columns (GEMM_WGMMA in
/// kernels/gemm.hip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgmmaTile {
    pub m: usize,
    pub n: usize,
}

impl WgmmaTile {
    /// The kernels' tiles: 128 x 128, 64 x 64 for products too narrow to fill the GPU with
    /// 128s, and the wide 128 x 256, 128 x 232 and 128 x 192 for those whose 128-column
    /// tiles make no fewer waves of blocks (their wider products keep the matrix units
    /// busier: kernels/gemm.hip); 232 where 256's last wave would leave many multiprocessors
    /// idle, 192 where it makes whole waves (7B's Q/K/V at 512 rows: 264 blocks, 2 of 132).
    pub const ALL: [WgmmaTile; 5] = [
        WgmmaTile { m: 128, n: 128 },
        WgmmaTile { m: 64, n: 64 },
        WgmmaTile { m: 128, n: 256 },
        WgmmaTile { m: 128, n: 232 },
        WgmmaTile { m: 128, n: 192 },
    ];
    /// The tiles with an FP8-lo form of the (grouped) GEMM (kernels/gemm.hip, LO8: FP8 steps
    /// first, one accumulator set): 128 x 128, 64 x 64 and 128 x 192 (7B's Q/K/V at 512
    /// rows). The wider ones have none (no prompt length measured picks them for a split
    /// product). The SwiGLU GEMM has one on every tile (`SWIGLU`).
    pub const LO8: [WgmmaTile; 3] = [
        WgmmaTile { m: 128, n: 128 },
        WgmmaTile { m: 64, n: 64 },
        WgmmaTile { m: 128, n: 192 },
    ];
    /// The tiles of the SwiGLU forms (`gemm_f16_swiglu`: n / 2 gate and n / 2 up columns
    /// each), in `ALL`'s order: square, small, wide, and 224 where 232 is unfused (its
    /// halves must be whole 8-row swizzle atoms).
    pub const SWIGLU: [WgmmaTile; 4] = [
        WgmmaTile { m: 128, n: 128 },
        WgmmaTile { m: 64, n: 64 },
        WgmmaTile { m: 128, n: 256 },
        WgmmaTile { m: 128, n: 224 },
    ];

    /// `swapped` after `tiles`: the tiles of the plain and FP8-lo grouped products
    /// (`SWAPPED`), of the Q/K/V cache forms (`SWAPPED_KV`) or of the SwiGLU forms
    /// (`SWAPPED_SWIGLU`).
    pub(in crate::gpu) fn with_swapped(
        tiles: &[WgmmaTile],
        swapped: &[WgmmaTile],
    ) -> Vec<WgmmaTile> {
        tiles.iter().chain(swapped).copied().collect()
    }

    /// Whether the tile puts its input rows on the matrix units' N side (`SWAPPED`).
    pub fn swapped(&self) -> bool {
        self.m != 64 && self.m != 128
    }

    pub(in crate::gpu) fn kernel(&self) -> String {
        if self.swapped() {
            return format!("gemm_f16_wgmma_t{}", self.m);
        }
        match self.m == self.n {
            true => format!("gemm_f16_wgmma_{}", self.m),
            false => format!("gemm_f16_wgmma_{}x{}", self.m, self.n),
        }
    }
    /// Tiles of 128 output columns by 72, 80, .. 256 input rows (every multiple of 8 but
    /// 128, the square tile): the weights are the matrix units' A operand, 64 rows a consumer
    /// warpgroup, and the input rows their N (SWAP in kernels/gemm.hip), so that a prompt's
    /// rows are cut into tiles of about equal size (7B's output and down at 520 rows: 4 row
    /// tiles of 136 fill one wave of 132 blocks, where 128-row tiles make 5 whose last holds 8
    /// rows, 160 blocks in 2 waves). The plain and FP8-lo grouped products have them
    /// (`with_swapped`), the Q/K/V cache forms those to 192 (`SWAPPED_KV`); the SwiGLU
    /// forms have their own, of 256 weight rows (`SWAPPED_SWIGLU`), the sparse forms none.
    pub const SWAPPED: [WgmmaTile; 23] = {
        let mut tiles = [WgmmaTile { m: 0, n: 128 }; 23];
        let (mut i, mut m) = (0, 72);
        while i < tiles.len() {
            if m == 128 {
                m += 8;
            }
            tiles[i].m = m;
            i += 1;
            m += 8;
        }
        tiles
    };

    /// The swapped tiles of the Q/K/V cache forms: `SWAPPED` to 192 rows (wider, ptxas spills
    /// their epilogue under the 168 registers a thread of theirs may hold).
    pub const SWAPPED_KV: &'static [WgmmaTile] = Self::SWAPPED.split_at(15).0;

    /// The SwiGLU forms' swapped tiles: 72-120 input rows by 256 weight rows (gate's 128 and
    /// up's: 128 outputs), every multiple of 8 (both accumulator sets fit a thread's 168
    /// registers to 120).
    pub const SWAPPED_SWIGLU: [WgmmaTile; 7] = {
        let mut tiles = [WgmmaTile { m: 0, n: 256 }; 7];
        let mut i = 0;
        while i < tiles.len() {
            tiles[i].m = 72 + 8 * i;
            i += 1;
        }
        tiles
    };

    pub(in crate::gpu) fn swiglu_kernel(&self) -> String {
        self.kernel().replace("wgmma_", "wgmma_swiglu_")
    }

    /// The tile's name, its kernel's after `gemm_f16_wgmma_` (and `swiglu_`): `128`, `64`,
    /// `128x192`, `t136` (swapped).
    pub fn name(&self) -> String {
        self.kernel().replace("gemm_f16_wgmma_", "")
    }

    /// The tile named `name` (`WgmmaTile::name`) among the grouped GEMM's tiles (`ALL`,
    /// `SWAPPED`) or, with `swiglu`, the SwiGLU forms' (`SWIGLU`, `SWAPPED_SWIGLU`, whose
    /// swapped tiles are 256 weight rows wide). Which of them has the form a launch needs
    /// (FP8-lo, the Q/K/V cache form) is the launch's to say.
    pub fn named(name: &str, swiglu: bool) -> std::result::Result<WgmmaTile, String> {
        let tiles: Vec<WgmmaTile> = match swiglu {
            true => [&WgmmaTile::SWIGLU[..], &WgmmaTile::SWAPPED_SWIGLU].concat(),
            false => [&WgmmaTile::ALL[..], &WgmmaTile::SWAPPED].concat(),
        };
        tiles
            .iter()
            .copied()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                let names: Vec<String> = tiles.iter().map(WgmmaTile::name).collect();
                format!(
                    "{name:?} is not a{} warpgroup GEMM tile; accepted: {}",
                    if swiglu { " SwiGLU" } else { "" },
                    names.join(", ")
                )
            })
    }
}

/// The warpgroup GEMM's K step (WG_BK in kernels/gemm.hip: the TMA boxes' columns, 128 bytes
/// of f16) and depth (WG_STAGES; a kernel build with another depth needs this one too).
pub(super) const WGMMA_BK: u32 = 64;

/// The FP8-lo forms' K step for their FP8 operands (2 * WG_BK in kernels/gemm.hip): 128
/// bytes of FP8 a box row, as the f16 boxes' K 64, so an FP8 step fills a stage in the same
/// layout.
pub(super) const WGMMA_BK8: u32 = 2 * WGMMA_BK;

pub(super) const WGMMA_STAGES: u32 = 6;

/// The 128 x 232 tile's depth (WG_STAGES_232 in kernels/gemm.hip): 4 of 45 KiB.
pub(super) const WGMMA_STAGES_232: u32 = 4;

/// The warpgroup GEMM's stages for `tile` (GEMM_WGMMA in kernels/gemm.hip): as many as fit
/// the 227 KiB a block may opt in to on sm_90, up to `WGMMA_STAGES`: 4 of 48 KiB for the
/// 128 x 256 tile; 4 of 45 KiB for 128 x 232 (5 fit, and measured level: session 25); 5 of
/// 40 KiB for 128 x 192.
pub(super) fn wgmma_stages(tile: WgmmaTile) -> u32 {
    if tile.swapped() {
        // g_swap_stages in kernels/gemm.hip: as many as fit a block's 227 KiB, at most
        // WGMMA_STAGES.
        return (1..=WGMMA_STAGES)
            .rev()
            .find(|&stages| shared_bytes(tile, stages) <= 227 * 1024)
            .unwrap_or(1);
    }
    match tile.n {
        256 | 224 => 4,
        232 => WGMMA_STAGES_232,
        192 => 5,
        _ => WGMMA_STAGES,
    }
}

/// The warpgroup GEMM's threads a block for `tile`: a consumer warpgroup per 64 rows (of
/// the weights in a swapped tile), then the producer warp (kernels/gemm.hip).
pub(super) fn wgmma_threads(tile: WgmmaTile) -> u32 {
    // Swapped: two, on 64 weight rows each (the SwiGLU forms' 256: 64 of gate's, 64 of up's).
    let consumers = if tile.swapped() {
        2
    } else {
        tile.m as u32 / 64
    };
    128 * consumers + 32
}

/// Dynamic shared memory of the warpgroup GEMM of `tile`: its stages of an A and a B box,
/// 1 KiB to align them to the 1024-byte swizzle atom, a full and an empty barrier (8 bytes
/// each) per stage, and 16 bytes past them (the sparse forms' register hold, `sink` in
/// kernels/gemm.hip). 128 x 128: 193 KiB (one block per SM); 64 x 64: 97 KiB (two); 128 x
/// 256: 193 KiB; 128 x 232: 181 KiB. The FP8-lo forms take the same: an FP8 step of K 128
/// fills a stage as an f16 step of K 64 does.
pub(in crate::gpu) fn wgmma_shared(tile: WgmmaTile) -> u32 {
    shared_bytes(tile, wgmma_stages(tile))
}

/// `wgmma_shared` for `stages` stages.
pub(super) fn shared_bytes(tile: WgmmaTile, stages: u32) -> u32 {
    stages * (tile.m + tile.n) as u32 * WGMMA_BK * 2 + 1024 + stages * 2 * 8 + 16
}

/// The warpgroup GEMM's tile for products of widths `ns` sharing `t` input rows on a device
/// of `sms` multiprocessors (one 128 block runs on each at a time): 64 x 64 unless 128s
/// still give `BLOCKS_WANTED` blocks (as `gemm_tile`); then the tile among 128 x 256, 128 x
/// 232, 128 x 192 and 128 x 128 whose waves of blocks take least time, a block's time taken
/// as its columns (the same rows and K). A tie goes to the wider tile, whose columns cost
/// less (kernels/gemm.hip: gate/up 152 against 158 us with the 128 x 168 tile 256 replaced,
/// whose ties went the other way). Llama-2-7B's gate/up at 512 rows on 132 SMs: 688 blocks
/// of 128 columns make 6 waves (768 columns), 344 of 256 make 3 (768), 384 of 232 make 3
/// (696); its Q/K/V 384 of 128 make 3 (384), 264 of 192 make 2 (384: the wider).
pub(super) fn wgmma_tile(t: usize, ns: impl IntoIterator<Item = usize>, sms: usize) -> WgmmaTile {
    let ns: Vec<usize> = ns.into_iter().collect();
    let [square, small, w256, w232, w192] = WgmmaTile::ALL;
    least_waves(t, &ns, sms, (square, small), &[w256, w232, w192], |tile| {
        tile.n
    })
}

/// `base` (a tile chosen among the unswapped ones) or the tile of `swapped` (the swapped
/// tiles that have the product's form: `WgmmaTile::SWAPPED`, `SWAPPED_KV`,
/// `SWAPPED_SWIGLU`) whose waves take
/// least time, if less than `base`'s: a tile's time the tiles its busiest
/// multiprocessor takes times its multiply-adds (rows x columns), ties among the swapped to
/// the wider. Against the 64 x 64 tile a tie goes to the swapped one (an m64n64 product
/// reads the most shared memory a multiply-add), against the 128-row tiles to them (the
/// forms measured longest). Llama-2-7B's output and down products at 520 rows on 132 SMs:
/// 128 x 128 makes 160 blocks in 2 waves (32 768 rows x columns a multiprocessor), 136 x 128
/// makes 128 in 1 (17 408). A tile covers `outputs(tile)` of a product's columns (the
/// SwiGLU forms' half their weight rows, others all).
pub(super) fn with_swapped(
    t: usize,
    ns: &[usize],
    sms: usize,
    base: WgmmaTile,
    swapped: &[WgmmaTile],
    outputs: impl Fn(WgmmaTile) -> usize,
) -> WgmmaTile {
    let time = |tile: WgmmaTile| -> usize {
        let blocks =
            t.div_ceil(tile.m) * ns.iter().map(|n| n.div_ceil(outputs(tile))).sum::<usize>();
        blocks.div_ceil(sms.max(1)) * tile.m * tile.n
    };
    let base_time = time(base);
    let small = base.m == 64;
    swapped
        .iter()
        .rev()
        .copied()
        .filter(|&tile| time(tile) < base_time || (small && time(tile) == base_time))
        .min_by_key(|&tile| time(tile))
        .unwrap_or(base)
}

/// `wgmma_tile` among the tiles with an FP8-lo form (`WgmmaTile::LO8`): 128 x 192 or 128 x
/// 128 by the same waves, 64 x 64 for narrow products.
pub(super) fn wgmma_lo8_tile(
    t: usize,
    ns: impl IntoIterator<Item = usize>,
    sms: usize,
) -> WgmmaTile {
    let ns: Vec<usize> = ns.into_iter().collect();
    let [square, small, w192] = WgmmaTile::LO8;
    least_waves(t, &ns, sms, (square, small), &[w192], |tile| tile.n)
}

/// `wgmma_tile` for the SwiGLU forms, whose tiles have half their columns' outputs (a gate
/// and an up column each): 7B's gate/up at 512 rows on 132 SMs takes 128 x 224, 396 blocks
/// in 3 waves (672 columns a multiprocessor; 128 x 256: 344 blocks, 768).
pub(super) fn wgmma_swiglu_tile(t: usize, n: usize, sms: usize) -> WgmmaTile {
    let [square, small, wide, wider] = WgmmaTile::SWIGLU;
    least_waves(t, &[n], sms, (square, small), &[wide, wider], |tile| {
        tile.n / 2
    })
}

/// The tile for products of widths `ns` over `t` rows on `sms` multiprocessors, a tile
/// covering `outputs(tile)` of a product's columns: small unless square gives
/// `BLOCKS_WANTED` blocks, else the least waves x columns (a block's time) among `wide`
/// and square, ties to the first in `wide`'s order (widest first), square last.
pub(super) fn least_waves(
    t: usize,
    ns: &[usize],
    sms: usize,
    (square, small): (WgmmaTile, WgmmaTile),
    wide: &[WgmmaTile],
    outputs: impl Fn(WgmmaTile) -> usize,
) -> WgmmaTile {
    let blocks = |tile: WgmmaTile| -> usize {
        t.div_ceil(tile.m) * ns.iter().map(|n| n.div_ceil(outputs(tile))).sum::<usize>()
    };
    if blocks(square) < BLOCKS_WANTED {
        return small;
    }
    let time = |tile: WgmmaTile| blocks(tile).div_ceil(sms.max(1)) * tile.n;
    // The first of the least time: ties go to the wider tile.
    wide.iter()
        .copied()
        .chain([square])
        .min_by_key(|&tile| time(tile))
        .expect("square at least")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warpgroup GEMM's tile at the two benchmark shapes (512-token prompt) on an H100's
    /// or H200's 132 SMs: 128 x 128 for Llama-2-7B's output and down, 128 x 192 for Q/K/V
    /// (whole waves), 128 x 232 for gate/up (fewer waves' columns), 64 x 64 for SmolLM2's
    /// narrow ones; a wide tile only where its waves take no longer.
    #[test]
    fn wgmma_tile_fills_the_gpu_before_it_grows() {
        let [square, small, wide, wide232, wide192] = WgmmaTile::ALL;
        let pick = |t, ns: &[usize]| wgmma_tile(t, ns.iter().copied(), 132);
        assert_eq!(pick(512, &[4096]), square, "7B output/down: 4 x 32 blocks");
        assert_eq!(
            pick(512, &[4096, 4096, 4096]),
            wide192,
            "7B Q/K/V: 3 waves of 128 columns (384 blocks: 384), 2 of 192 (264: 384, the wider), 2 of 256 (512)"
        );
        assert_eq!(
            pick(650, &[4096]),
            wide192,
            "7B output/down at ~650 rows: 2 waves of 128 columns (192 blocks: 256), 1 of 192 (132: 192)"
        );
        assert_eq!(
            pick(512, &[11_008, 11_008]),
            wide232,
            "7B gate/up: 6 waves of 128 columns (688 blocks, 768), 3 of 256 (344, 768), 3 of 232 (384, 696)"
        );
        assert_eq!(
            pick(512, &[8192, 8192]),
            wide,
            "1B gate/up: 4 waves of 128 columns (512 blocks, 512), 2 of 256 (256, 512), 3 of 232 (288, 696)"
        );
        assert_eq!(
            wgmma_tile(512, [11_008, 11_008], 160),
            wide192,
            "on 160 SMs: 5 waves of 128 columns (640), 3 of 192 (464 blocks: 576), 3 of 256 (768)"
        );

        assert_eq!(
            pick(512, &[576, 192, 192]),
            small,
            "SmolLM2 Q/K/V: 4 x 9 = 36 blocks of 128"
        );
        assert_eq!(
            pick(512, &[1536, 1536]),
            small,
            "SmolLM2 gate/up: 4 x 24 = 96 blocks of 128"
        );
        assert_eq!(pick(7, &[100]), small, "a short prompt");
        assert_eq!(
            wgmma_shared(square),
            197_744,
            "6 x 32 KiB stages + 1 KiB + barriers + the sparse forms' 16-byte hold"
        );
        for t in [wide, wide232, wide192] {
            assert!(
                wgmma_shared(t) <= 232_448,
                "the wide tiles' stages fit the 227 KiB a block may opt in to on sm_90"
            );
        }
    }

    /// The FP8-lo forms' tile: 128 x 192 where its waves take no longer than 128 x 128's
    /// (7B's Q/K/V at 512 rows, output and down at ~650), never a tile without that form.
    #[test]
    fn wgmma_lo8_tile_chooses_among_the_lo8_forms() {
        let [square, small, wide192] = WgmmaTile::LO8;
        let pick = |t, ns: &[usize]| wgmma_lo8_tile(t, ns.iter().copied(), 132);
        assert_eq!(
            pick(512, &[4096, 4096, 4096]),
            wide192,
            "7B Q/K/V: 2 waves of 192"
        );
        assert_eq!(
            pick(512, &[4096]),
            square,
            "7B output/down: one wave of 128 blocks"
        );
        assert_eq!(
            pick(650, &[4096]),
            wide192,
            "~650 rows: 1 wave of 132 blocks of 192"
        );
        assert_eq!(
            pick(512, &[11_008, 11_008]),
            wide192,
            "gate/up unfused: 6 waves of 128 (768) tie 4 of 192 (768): the wider (232 has no FP8-lo form)"
        );
        assert_eq!(pick(512, &[576, 192, 192]), small, "SmolLM2 Q/K/V");
        for tile in WgmmaTile::LO8 {
            assert!(
                WgmmaTile::ALL.contains(&tile),
                "{tile:?} has an f16 form too"
            );
        }
    }

    /// The SwiGLU forms' tiles cover half their columns' outputs: 7B's gate/up takes the
    /// 224-column tile (3.0 waves of 132), Llama-3.2-1B's the 256 one, SmolLM2's 64 x 64.
    #[test]
    fn wgmma_swiglu_tile_counts_outputs_not_columns() {
        let [square, small, wide, wide224] = WgmmaTile::SWIGLU;
        assert_eq!(
            wgmma_swiglu_tile(512, 11_008, 132),
            wide224,
            "7B: 396 blocks of 112 outputs in 3 waves (672 columns); 344 of 128 (768); 688 of 64 (768)"
        );
        assert_eq!(
            wgmma_swiglu_tile(512, 8192, 132),
            wide,
            "1B: 256 blocks of 128 outputs in 2 waves (512 columns), 296 of 112 in 3 (672)"
        );
        assert_eq!(
            wgmma_swiglu_tile(512, 1536, 132),
            small,
            "SmolLM2: 4 x 24 = 96 blocks of 64 outputs"
        );
        assert_eq!(
            wgmma_swiglu_tile(512, 4096, 132),
            wide,
            "one wave of 128 blocks (256 columns) ties two of 256 of 128: the wider"
        );
        assert_eq!(
            wgmma_swiglu_tile(512, 5000, 132),
            square,
            "3 waves of 316 blocks (384 columns); 2 of 160 (512), 2 of 180 (448)"
        );
        assert_eq!(wide224.swiglu_kernel(), "gemm_f16_wgmma_swiglu_128x224");
        assert_eq!(square.swiglu_kernel(), "gemm_f16_wgmma_swiglu_128");
        assert!(wgmma_shared(wide224) <= 232_448, "4 stages of 44 KiB fit");
    }

    /// The swapped tiles (every multiple of 8 rows from 72 to 256 but 128) against the
    /// unswapped choice at 7B's lengths: 520 rows take 136, 650 168, 384 96, 800 200; 512
    /// keeps its tiles; Q/K/V's cache forms stop at 192.
    #[test]
    fn swapped_tiles_cut_the_rows_to_fill_the_waves() {
        assert!(WgmmaTile::SWAPPED.iter().all(|t| t.swapped()
            && t.n == 128
            && t.m % 8 == 0
            && (72..=256).contains(&t.m)
            && t.m != 128));
        assert!(WgmmaTile::ALL.iter().all(|t| !t.swapped()));
        assert_eq!(WgmmaTile::SWAPPED[7].kernel(), "gemm_f16_wgmma_t136");
        let t = |m| WgmmaTile { m, n: 128 };
        let pick = |rows, ns: &[usize]| {
            let base = wgmma_tile(rows, ns.iter().copied(), 132);
            with_swapped(rows, ns, 132, base, &WgmmaTile::SWAPPED, |t| t.n)
        };
        let [square, small, _, _, wide192] = WgmmaTile::ALL;
        assert_eq!(
            pick(512, &[4096]),
            square,
            "7B output/down at 512 rows: 128 blocks of 128 x 128 in one wave, no swapped tile less"
        );
        assert_eq!(
            pick(520, &[4096]),
            t(136),
            "at 520: 128 x 128 makes 160 blocks in 2 waves (32 768 a multiprocessor), 136 x 128 makes 128 in 1 (17 408)"
        );
        assert_eq!(
            pick(650, &[4096]),
            t(168),
            "at 650: 128 x 192 makes 132 in 1 wave (24 576), 168 x 128 128 in 1 (21 504)"
        );
        assert_eq!(
            pick(384, &[4096]),
            t(96),
            "at 384: 64 x 64 (128 x 128 makes 96 blocks, too few) makes 384 blocks, 3 a multiprocessor (12 288); 96 x 128 makes 128 in 1 wave (12 288), the tie to it"
        );
        assert_eq!(
            pick(800, &[4096]),
            t(200),
            "at 800: 4 row tiles of 200 x 32 column tiles, one wave"
        );
        assert_eq!(
            pick(512, &[4096, 4096, 4096]),
            wide192,
            "7B Q/K/V at 512 rows: 264 blocks of 128 x 192 in 2 waves (49 152); 256 x 128 makes 192 in 2 (65 536)"
        );
        assert_eq!(pick(7, &[100]), small, "a short prompt");
        // The Q/K/V cache forms (to 192 rows).
        let qkv = |rows| {
            let ns = [4096, 4096, 4096];
            let base = wgmma_lo8_tile(rows, ns, 132);
            with_swapped(rows, &ns, 132, base, WgmmaTile::SWAPPED_KV, |t| t.n)
        };
        assert_eq!(
            qkv(512),
            wide192,
            "Q/K/V at 512 rows: 264 blocks of 128 x 192, 2 waves"
        );
        assert_eq!(
            qkv(520),
            t(136),
            "Q/K/V at 520: 128 x 128 makes 480 blocks in 4 waves (65 536), 136 x 128 384 in 3 (52 224)"
        );
        assert_eq!(
            pick(512, &[576, 192, 192]),
            small,
            "SmolLM2 Q/K/V: 120 blocks of 64 x 64 (4096); 256 x 128 makes 18 (32 768)"
        );
        assert_eq!(
            pick(256, &[4096]),
            small,
            "7B output at 256 rows: 256 blocks of 64 x 64 (8192); 72 x 128 makes 128 (9216)"
        );
    }

    /// The SwiGLU forms' swapped tiles (256 weight rows, 128 outputs) against the unswapped
    /// choice, 7B's gate/up (11 008 outputs) on 132 SMs: 86 output tiles a row tile.
    #[test]
    fn swapped_swiglu_tiles_counted_by_outputs() {
        let pick = |rows| {
            let base = wgmma_swiglu_tile(rows, 11_008, 132);
            with_swapped(
                rows,
                &[11_008],
                132,
                base,
                &WgmmaTile::SWAPPED_SWIGLU,
                |t| t.n / 2,
            )
        };
        let t = |m| WgmmaTile { m, n: 256 };
        assert!(WgmmaTile::SWAPPED_SWIGLU.iter().all(|t| t.swapped()));
        assert_eq!(
            pick(512),
            WgmmaTile::SWIGLU[3],
            "512: 128 x 224 makes 396 blocks in 3 waves (86 016); 104 x 256 430 in 4 (106 496)"
        );
        assert_eq!(
            pick(520),
            t(88),
            "520: 128 x 224 makes 495 blocks in 4 waves (114 688); 88 x 256 516 in 4 (90 112)"
        );
        assert_eq!(
            pick(576),
            t(96),
            "576: 6 row tiles of 96, 516 blocks in 4 waves"
        );
        assert_eq!(
            pick(650),
            t(112),
            "650: 6 row tiles of 112 (the last 90), 4 waves"
        );
        assert_eq!(
            pick(800),
            t(80),
            "800: 10 row tiles of 80, 860 blocks in 7 waves"
        );
        assert_eq!(
            WgmmaTile::SWAPPED_SWIGLU[2].swiglu_kernel(),
            "gemm_f16_wgmma_swiglu_t88"
        );
    }

    /// What the swapped tiles are for, over every prompt length a multiple of 8 from 320 to
    /// 4096: the tiles chosen for the 7B's four products under the default numerics (Q/K/V
    /// into the caches, output and down FP8-lo, gate/up's SwiGLU) keep the waves they
    /// launch at least 0.88 full of useful multiply-adds on 132 SMs (128-row tiles alone
    /// left output and down at 520 rows 0.49 full: 160 blocks in 2 waves). The worst
    /// length is 392 (gate/up on 72 x 256 tiles, 516 blocks in 4 waves: 0.89).
    #[test]
    fn chosen_tiles_fill_their_waves_at_every_length() {
        let sms = 132;
        let fill = |t: usize, ns: &[usize], tile: WgmmaTile, outputs: usize| {
            let blocks = t.div_ceil(tile.m) * ns.iter().map(|n| n.div_ceil(outputs)).sum::<usize>();
            let useful = ns.iter().map(|n| t * n).sum::<usize>();
            useful as f64 / (blocks.div_ceil(sms) * sms * tile.m * outputs) as f64
        };
        let qkv = [4096, 4096, 4096];
        for t in (320..=4096).step_by(8) {
            let base = wgmma_lo8_tile(t, qkv, sms);
            let q = with_swapped(t, &qkv, sms, base, WgmmaTile::SWAPPED_KV, |x| x.n);
            let base = wgmma_lo8_tile(t, [4096], sms);
            let o = with_swapped(t, &[4096], sms, base, &WgmmaTile::SWAPPED, |x| x.n);
            let base = wgmma_swiglu_tile(t, 11_008, sms);
            let g = with_swapped(t, &[11_008], sms, base, &WgmmaTile::SWAPPED_SWIGLU, |x| {
                x.n / 2
            });
            for (what, ns, tile, outputs) in [
                ("Q/K/V", &qkv[..], q, q.n),
                ("output/down", &[4096][..], o, o.n),
                ("gate/up", &[11_008][..], g, g.n / 2),
            ] {
                let f = fill(t, ns, tile, outputs);
                assert!(
                    f >= 0.88,
                    "{t} rows, {what}: {tile:?} fills {f:.3} of its waves"
                );
            }
        }
        let unswapped = fill(520, &[4096], wgmma_lo8_tile(520, [4096], sms), 128);
        assert!(unswapped < 0.5, "520 rows on 128 x 128: {unswapped:.3}");
    }

    /// Every tile is found by its name, the SwiGLU forms' swapped ones 256 weight rows wide
    /// under the same names as the grouped GEMM's 128-row ones; other names are refused
    /// with the list.
    #[test]
    fn tiles_are_named_as_their_kernels() {
        for (tiles, swiglu) in [
            ([&WgmmaTile::ALL[..], &WgmmaTile::SWAPPED].concat(), false),
            (
                [&WgmmaTile::SWIGLU[..], &WgmmaTile::SWAPPED_SWIGLU].concat(),
                true,
            ),
        ] {
            for tile in tiles {
                assert_eq!(WgmmaTile::named(&tile.name(), swiglu), Ok(tile));
            }
        }
        assert_eq!(WgmmaTile::ALL[4].name(), "128x192");
        assert_eq!(
            WgmmaTile::named("t88", false),
            Ok(WgmmaTile { m: 88, n: 128 })
        );
        assert_eq!(
            WgmmaTile::named("t88", true),
            Ok(WgmmaTile { m: 88, n: 256 })
        );
        let err = WgmmaTile::named("t128", false).unwrap_err();
        assert!(
            err.contains("\"t128\" is not a warpgroup GEMM tile; accepted: 128, 64, 128x256"),
            "{err}"
        );
        let err = WgmmaTile::named("t136", true).unwrap_err();
        assert!(
            err.contains("not a SwiGLU") && err.contains("t120"),
            "{err}"
        );
    }

    /// Every tile's forms (f16, SwiGLU, and their FP8-lo forms, which take the same
    /// stages) fit the 227 KiB a block may opt in to.
    #[test]
    fn wgmma_forms_fit_shared_memory() {
        let all = WgmmaTile::ALL.into_iter().chain(WgmmaTile::SWIGLU);
        for tile in all
            .chain(WgmmaTile::SWAPPED)
            .chain(WgmmaTile::SWAPPED_SWIGLU)
        {
            let bytes = wgmma_shared(tile);
            assert!(bytes <= 232_448, "{tile:?}: {bytes} bytes");
        }
        let [square, small, wide, wide224] = WgmmaTile::SWIGLU;
        for (tile, bytes, what) in [
            (square, 6 * 256 * 128 + 1024 + 96 + 16, "6 stages of 32 KiB"),
            (small, 6 * 128 * 128 + 1024 + 96 + 16, "6 stages of 16 KiB"),
            (wide, 4 * 384 * 128 + 1024 + 64 + 16, "4 stages of 48 KiB"),
            (
                WgmmaTile { m: 136, n: 128 },
                6 * 264 * 128 + 1024 + 96 + 16,
                "swapped 136: 6 stages of 33 KiB",
            ),
            (
                WgmmaTile { m: 176, n: 128 },
                5 * 304 * 128 + 1024 + 80 + 16,
                "swapped 176: 5 stages of 38 KiB (6 would not fit)",
            ),
            (
                WgmmaTile { m: 256, n: 128 },
                4 * 384 * 128 + 1024 + 64 + 16,
                "swapped 256: 4 stages of 48 KiB",
            ),
            (
                wide224,
                4 * 352 * 128 + 1024 + 64 + 16,
                "4 stages of 44 KiB",
            ),
        ] {
            assert_eq!(wgmma_shared(tile), bytes, "{tile:?}: {what}");
        }
    }
}
