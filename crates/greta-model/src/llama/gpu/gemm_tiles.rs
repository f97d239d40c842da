//! `--gemm-tiles`: the prefill products' warpgroup GEMM tiles forced, for timing studies
//! (what each tile costs at one prompt length, where the chooser would take one per length).

use greta_kernels::gpu::WgmmaTile;

/// Tiles forced by product (None: the chooser's): Q/K/V's group, the output product,
/// gate/up's (the SwiGLU GEMM's tiles: its swapped ones 256 weight rows wide) and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GemmTiles {
    pub qkv: Option<WgmmaTile>,
    pub o: Option<WgmmaTile>,
    pub gate_up: Option<WgmmaTile>,
    pub down: Option<WgmmaTile>,
}

impl GemmTiles {
    /// Whether no tile is forced (every product's is the chooser's).
    pub fn is_auto(&self) -> bool {
        *self == GemmTiles::default()
    }

    /// Each product's name (`--split-inputs`' names) and its slot: the one place that
    /// pairs the names with the fields, read by the parser and the printer.
    fn slots_mut(&mut self) -> [(&'static str, &mut Option<WgmmaTile>); 4] {
        [
            ("qkv", &mut self.qkv),
            ("o", &mut self.o),
            ("gate_up", &mut self.gate_up),
            ("down", &mut self.down),
        ]
    }
}

impl std::str::FromStr for GemmTiles {
    type Err = String;
    /// `auto`, or a comma list of PRODUCT=TILE (`WgmmaTile::named`).
    fn from_str(v: &str) -> Result<Self, String> {
        let mut tiles = GemmTiles::default();
        if v == "auto" {
            return Ok(tiles);
        }
        for part in v.split(',') {
            let Some((product, name)) = part.split_once('=') else {
                return Err(format!(
                    "{part:?}: expected PRODUCT=TILE (e.g. qkv=t136), or auto"
                ));
            };
            let mut slots = tiles.slots_mut();
            let names: Vec<&str> = slots.iter().map(|(n, _)| *n).collect();
            let Some((_, slot)) = slots.iter_mut().find(|(n, _)| *n == product) else {
                return Err(format!(
                    "{product:?} is not a product; accepted: {}",
                    names.join(", ")
                ));
            };
            if slot.is_some() {
                return Err(format!("{product} is given a tile twice"));
            }
            **slot = Some(WgmmaTile::named(name, product == "gate_up")?);
        }
        Ok(tiles)
    }
}

impl std::fmt::Display for GemmTiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_auto() {
            return f.write_str("auto");
        }
        let mut tiles = *self;
        let set: Vec<String> = tiles
            .slots_mut()
            .iter()
            .filter_map(|(name, tile)| tile.map(|t| format!("{name}={}", t.name())))
            .collect();
        f.write_str(&set.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list parses to its tiles and prints back as given (in the products' order);
    /// each kind of bad value is refused naming what is accepted.
    #[test]
    fn gemm_tiles_parse_and_print() {
        let t: GemmTiles = "down=t136,qkv=128x192,gate_up=t88".parse().unwrap();
        assert_eq!(t.qkv, Some(WgmmaTile { m: 128, n: 192 }));
        assert_eq!(t.o, None);
        assert_eq!(t.gate_up, Some(WgmmaTile { m: 88, n: 256 }));
        assert_eq!(t.down, Some(WgmmaTile { m: 136, n: 128 }));
        assert_eq!(t.to_string(), "qkv=128x192,gate_up=t88,down=t136");
        assert!("auto".parse::<GemmTiles>().unwrap().is_auto());
        assert_eq!(GemmTiles::default().to_string(), "auto");
        for (bad, says) in [
            ("qkv", "expected PRODUCT=TILE"),
            ("head=128", "accepted: qkv, o, gate_up, down"),
            ("o=t128", "accepted: 128, 64"),
            ("gate_up=128x232", "not a SwiGLU warpgroup GEMM tile"),
            ("o=128,o=64", "twice"),
        ] {
            let err = bad.parse::<GemmTiles>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
