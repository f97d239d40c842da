//! Stream-K: a warpgroup GEMM launch's short last wave shared out along K (kernels/gemm.hip,
//! g_sk), its cost model and its slots.

use super::*;

/// Which warpgroup GEMM launches share their last wave out along K (stream-K:
/// kernels/gemm.hip, g_sk). A persistent launch of `tiles` tiles on a grid of `g` blocks
/// runs ceil(tiles / g) tiles on its busiest blocks; where the last wave is short (7B at 800
/// rows: gate/up's 602 tiles of 128 x 256 on 132 blocks, 4 waves and 74 tiles), its tiles
/// are cut into parts along K that the whole grid takes in turn, at the cost of a part's
/// pipeline refill and its sums' round trip through a slot. The sums are the same products
/// added in another order: f32 results differ in their last bits from the whole tiles'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamK {
    /// Shared where the cost model (`StreamK::split`) saves a block at least
    /// `STREAM_K_AUTO_GAIN` of a tile.
    Auto,
    /// Every tile whole: the default (on an H200 the 7B's prefill is no faster shared at
    /// any prompt length measured, 512-896: session 52 in docs/performance.md).
    Off,
    /// Shared wherever the last wave is short, gain or not (the op tests: every kind of
    /// part).
    Always,
}

/// How a launch's short last wave is shared out: its `tiles` tiles (fewer than the grid),
/// each in `parts` parts of equal steps along K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamKSplit {
    pub tiles: usize,
    pub parts: usize,
}

/// The most parts a tile is cut into: beyond it, the parts' costs outgrow what finer cuts
/// even out.
pub const STREAM_K_MAX_PARTS: usize = 8;
/// What a part costs a block beyond its steps, in tiles (its pipeline's refill, its sums'
/// store and load: a few microseconds against a 7B tile's ~60): an estimate, not measured.
pub const STREAM_K_PART_COST: f64 = 0.05;
/// The least a block's time must fall by, in tiles, for `Auto` to share.
pub const STREAM_K_AUTO_GAIN: f64 = 0.15;

impl StreamK {
    /// The share of a launch of `tiles` tiles on `g` blocks (None: every tile whole). The
    /// last wave's r tiles in p parts make ceil(p r / g) turns of 1 / p tile on the busiest
    /// block, each costing `STREAM_K_PART_COST` more, against one whole tile: p is the
    /// cheapest of 2..=`STREAM_K_MAX_PARTS` (the fewest parts of equal cost).
    pub fn split(self, tiles: usize, g: usize) -> Option<StreamKSplit> {
        let rest = tiles.checked_rem(g)?;
        if self == StreamK::Off || rest == 0 {
            return None;
        }
        let (parts, time) = (2..=STREAM_K_MAX_PARTS)
            .map(|p| {
                let turns = (p * rest).div_ceil(g) as f64;
                (p, turns / p as f64 + STREAM_K_PART_COST * turns)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("two parts at least");
        let split = StreamKSplit { tiles: rest, parts };
        match self {
            StreamK::Always => Some(split),
            _ => (1.0 - time >= STREAM_K_AUTO_GAIN).then_some(split),
        }
    }
}

impl std::str::FromStr for StreamK {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(StreamK::Auto),
            "off" => Ok(StreamK::Off),
            "always" => Ok(StreamK::Always),
            _ => Err(format!("{s:?}: expected auto, off or always")),
        }
    }
}

impl std::fmt::Display for StreamK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StreamK::Auto => "auto",
            StreamK::Off => "off",
            StreamK::Always => "always",
        })
    }
}

/// The stream-K launches' slots: a partial tile (TM x TN f32) and a flag per consumer warp
/// for each tile of a short last wave (fewer than the grid's blocks), sized for the largest
/// of the loaded forms (128 x 256 on 132 multiprocessors: 17.3 MB). One set for every
/// launch: the GEMMs of one stream run one after the other, each waiting for the one ahead
/// before it writes (greta_device.h).
pub(in crate::gpu) struct StreamKSpace {
    pub(in crate::gpu) part: DeviceBuffer<f32>,
    pub(in crate::gpu) flag: DeviceBuffer<u32>,
}

impl StreamKSpace {
    pub(in crate::gpu) fn new<'a>(
        gpu: &Gpu,
        forms: impl Iterator<Item = &'a WgmmaForm>,
    ) -> Result<Self> {
        let (mut part, mut flags) = (1, 1);
        for (f, (_, resident_sk)) in forms.filter_map(|f| f.sk.as_ref().map(|sk| (f, sk))) {
            part = part.max(resident_sk * f.tile.m * f.tile.n);
            flags = flags.max(resident_sk * f.tile.m / 64 * 4);
        }
        let s = gpu.stream()?;
        let mut flag = gpu.alloc::<u32>(flags)?;
        flag.zero(&s)?;
        s.synchronize()?;
        s.close()?;
        Ok(StreamKSpace {
            part: gpu.alloc::<f32>(part)?,
            flag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stream-K's share: none where the tiles fill whole waves or `Off`; else the last
    /// wave's tiles, in the parts the cost model finds cheapest, under `Auto` only where a
    /// block saves `STREAM_K_AUTO_GAIN` of a tile. The 7B on 132 SMs: gate/up at 800 rows
    /// (602 tiles, 74 in the last wave) in 5 parts: 3 turns of a fifth, 0.6 + 0.15 of a
    /// tile against 1; at 520 rows (495 of 128 x 224, 99 short) at best 4: 3 turns of a
    /// quarter (0.9), too little for Auto; Q/K/V at 512 (264) none; output and down at 520
    /// (110 tiles, all short: 0.83 + 0.25 at best, in 6) none under Auto.
    #[test]
    fn stream_k_shares_the_last_wave_where_it_pays() {
        use StreamK::*;
        let split = |tiles, parts| Some(StreamKSplit { tiles, parts });
        assert_eq!(Auto.split(602, 132), split(74, 5));
        assert_eq!(Auto.split(495, 132), None);
        assert_eq!(Always.split(495, 132), split(99, 4));
        assert_eq!(Auto.split(264, 132), None);
        assert_eq!(Auto.split(110, 132), None);
        assert_eq!(Always.split(110, 132), split(110, 6));
        assert_eq!(Always.split(264, 132), None);
        assert_eq!(Off.split(602, 132), None);
        assert_eq!(Always.split(10, 0), None);
        for tiles in 1..1000 {
            for mode in [Auto, Always] {
                if let Some(s) = mode.split(tiles, 132) {
                    // The whole tiles fill whole waves; every part is of a short wave.
                    assert_eq!((tiles - s.tiles) % 132, 0, "{mode} {tiles}");
                    assert!(s.tiles < 132, "{mode} {tiles}");
                    assert!(
                        (2..=STREAM_K_MAX_PARTS).contains(&s.parts),
                        "{mode} {tiles}"
                    );
                }
            }
        }
        assert_eq!("always".parse::<StreamK>(), Ok(Always));
        assert!("on"
            .parse::<StreamK>()
            .unwrap_err()
            .contains("auto, off or always"));
    }
}
