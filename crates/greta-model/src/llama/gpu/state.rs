//! A sequence's device state: the KV cache, the activations and their f16 operands, the
//! decode graphs; made once per sequence, so that decode is graph-capturable.

use super::*;

impl GpuLlama {
    /// Buffers for up to `max_rows` tokens per pass and a KV cache of `capacity` positions.
    pub fn new_state(&self, capacity: usize, max_rows: usize) -> Result<GpuState> {
        let c = &self.config;
        let g = &self.gpu;
        let kv_row = c.n_kv_heads * c.head_dim;
        let q_row = c.n_heads * c.head_dim;
        let r = max_rows.max(1);
        let pool = &self.alloc;
        let alloc = |n: usize| pool.alloc::<f32>(n);
        let mut pos = pool.alloc::<u32>(1)?;
        let stream = g.stream()?;
        pos.write(0, &[0], &stream)?;
        let st = GpuState {
            capacity,
            max_rows: r,
            len: 0,
            k_cache: (0..c.n_layers)
                .map(|_| pool.alloc::<u16>(capacity * kv_row))
                .collect::<std::result::Result<_, _>>()?,
            v_cache: (0..c.n_layers)
                .map(|_| pool.alloc::<u16>(capacity * kv_row))
                .collect::<std::result::Result<_, _>>()?,
            pos,
            ids: pool.alloc::<u32>(r)?,
            x: alloc(r * c.hidden)?,
            normed: alloc(r * c.hidden)?,
            q: alloc(r * q_row)?,
            k: alloc(r * kv_row)?,
            v: alloc(r * kv_row)?,
            ctx: alloc(r * q_row)?,
            proj: alloc(r * c.hidden)?,
            gate: alloc(r * c.intermediate)?,
            up: alloc(r * c.intermediate)?,
            act: alloc(r * c.intermediate)?,
            operands: {
                let widest = c.hidden.max(q_row).max(c.intermediate);
                OperandBufs {
                    hi: pool.alloc::<u16>(r * widest)?,
                    lo: pool.alloc::<u16>(r * widest)?,
                    lo8: pool.alloc::<u8>(r * widest)?,
                    sparse: None,
                }
            },
            ffn_operands: OperandBufs {
                hi: pool.alloc::<u16>(r * c.hidden)?,
                lo: pool.alloc::<u16>(r * c.hidden)?,
                lo8: pool.alloc::<u8>(r * c.hidden)?,
                // Made where the policy asks for it (`SplitLo::sparse`; 1.3 MB for
                // Llama-2-7B at 512 rows), outside the pool.
                sparse: match self.split_lo.sparse.gate_up {
                    true => Some(SparseLo8::alloc(g, &stream, r, c.hidden)?),
                    false => None,
                },
            },
            attn_scratch: AttnScratch::new(g, c.n_heads, c.head_dim, capacity)?,
            rng: pool.alloc::<u64>(1)?,
            pick: TokenPick::Argmax,
            history: pool.alloc::<u32>(capacity + 1)?,
            reads: g.stream()?,
            last: alloc(c.hidden)?,
            q_rot: alloc(q_row)?,
            k_rot: alloc(kv_row)?,
            rope_angles: alloc(r * c.head_dim)?,
            logits: alloc(r * c.vocab_size)?,
            stream,
            graphs: Vec::new(),
        };
        // After the state's buffers, not between the weights and them (`make_fp8_copies`).
        self.make_fp8_copies()?;
        Ok(st)
    }
}

/// A prefill product's input as f16 for the matrix units: hi, and lo where it needs it (f16,
/// or FP8).
pub(super) struct OperandBufs {
    pub(super) hi: Pooled<u16>,
    pub(super) lo: Pooled<u16>,
    pub(super) lo8: Pooled<u8>,
    /// The 2:4-sparse FP8 low half, where the policy has one for these operands' products.
    pub(super) sparse: Option<SparseLo8>,
}

impl OperandBufs {
    /// Makes x's operands (`rows` rows) of the form `lo` here: `split_f16`, or
    /// `split_f16_lo8` for an FP8 low half. For a product whose input's writer did not make
    /// them (`GpuLlama::products`, `gate_up_swiglu`).
    pub(super) fn make(
        &mut self,
        k: &GpuKernels,
        s: &Stream,
        x: &DeviceBuffer<f32>,
        lo: LoKind,
        rows: Rows,
    ) -> Result<()> {
        match lo {
            LoKind::Fp8 => k.split_f16_lo8(s, x, &mut self.hi, &mut self.lo8, rows)?,
            LoKind::Fp8Sparse => {
                let sparse = self.sparse.as_mut().ok_or(GpuError::NoSparseLo)?;
                k.split_f16_lo8s(s, x, &mut self.hi, sparse, rows)?
            }
            _ => k.split_f16(
                s,
                x,
                &mut self.hi,
                (lo == LoKind::F16).then_some(&mut *self.lo),
                rows.rows * rows.len,
            )?,
        }
        Ok(())
    }

    /// The buffers a writer of operands with a low half of `lo` fills.
    pub(super) fn get(&mut self, lo: LoKind) -> Result<F16Operands<'_>> {
        Ok(F16Operands {
            hi: &mut self.hi,
            lo: match lo {
                LoKind::None => None,
                LoKind::F16 => Some(LoOperand::F16(&mut self.lo)),
                LoKind::Fp8 => Some(LoOperand::Fp8(&mut self.lo8)),
                LoKind::Fp8Sparse => Some(LoOperand::Fp8Sparse(
                    self.sparse.as_mut().ok_or(GpuError::NoSparseLo)?,
                )),
            },
        })
    }

    /// The low half a product reads, for operands of the form `lo` (none: hi alone).
    pub(super) fn gemm_lo(&self, lo: LoKind) -> Result<Option<GemmLo<'_>>> {
        Ok(match lo {
            LoKind::None => None,
            LoKind::F16 => Some(GemmLo::F16(&self.lo)),
            LoKind::Fp8 => Some(GemmLo::Fp8(&self.lo8)),
            LoKind::Fp8Sparse => Some(GemmLo::Fp8Sparse(
                self.sparse.as_ref().ok_or(GpuError::NoSparseLo)?,
            )),
        })
    }
}

/// Everything a sequence needs on the device, allocated once (pointer-stable for graphs).
pub struct GpuState {
    pub(super) capacity: usize,
    pub(super) max_rows: usize,
    /// Host mirror of the device position.
    pub(super) len: usize,
    pub(super) k_cache: Vec<Pooled<u16>>,
    pub(super) v_cache: Vec<Pooled<u16>>,
    pub(super) pos: Pooled<u32>,
    /// Token ids of the pass; `ids[0]` is where the device argmax writes the next token.
    pub(super) ids: Pooled<u32>,
    pub(super) x: Pooled<f32>,
    pub(super) normed: Pooled<f32>,
    pub(super) q: Pooled<f32>,
    pub(super) k: Pooled<f32>,
    pub(super) v: Pooled<f32>,
    pub(super) ctx: Pooled<f32>,
    pub(super) proj: Pooled<f32>,
    pub(super) gate: Pooled<f32>,
    pub(super) up: Pooled<f32>,
    pub(super) act: Pooled<f32>,
    /// A prefill product's input as f16 for the matrix units (hi, and lo where it needs it):
    /// every product's but gate/up's, act's for the down product included.
    pub(super) operands: OperandBufs,
    /// Gate/up's input operands (the FFN norm's): apart from `operands`, because the SwiGLU
    /// GEMM (`gemm_f16_swiglu`) reads them while it writes act's.
    pub(super) ffn_operands: OperandBufs,
    pub(super) attn_scratch: AttnScratch,
    /// The device sampler's generator state (splitmix64), seeded by `set_pick`.
    pub(super) rng: Pooled<u64>,
    /// How a decode step picks its token on the device (captured into the graph).
    pub(super) pick: TokenPick,
    /// Every picked token at the position it will take (capacity + 1 entries): the host
    /// reads step t's token here while step t + 1 runs (`DecodeAhead`).
    pub(super) history: Pooled<u32>,
    /// The stream those reads go through (the main one is busy with the next step).
    pub(super) reads: Stream,
    pub(super) last: Pooled<f32>,
    /// One token's rotated q and k from the decode attention that does its own RoPE (the
    /// trace's QRope and KRope; `q` and `k` keep the products).
    pub(super) q_rot: Pooled<f32>,
    pub(super) k_rot: Pooled<f32>,
    /// The RoPE angles of a pass's rows (`rope_angles`), where the prefill attention rotates
    /// q itself (`rope_attend`).
    pub(super) rope_angles: Pooled<f32>,
    pub(super) logits: Pooled<f32>,
    pub stream: Stream,
    /// Captured decode steps, one per count of the decode attention's splits: its grid
    /// follows the position (`AttnShape::keys`), so a step at position p replays the graph
    /// captured for `decode_splits(p + 1)`, captured the first time a step needs it. The
    /// last `GRAPHS_KEPT` captured are kept (positions grow; a rewind may step back one).
    pub(super) graphs: Vec<(usize, GraphExec)>,
}

impl GpuState {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The token the last pick wrote on the device (waits for the stream).
    pub fn picked(&self) -> Result<u32> {
        read_pick(&self.history, self.len, &self.stream)
    }

    /// Sets how the device picks tokens, seeding the sampler's generator. The captured decode
    /// graphs are dropped when the pick's launch changes (argmax against a draw, or other
    /// sampling settings: they are the kernel's arguments); a new seed alone keeps them (the
    /// generator's state is a buffer the graph reads).
    pub fn set_pick(&mut self, pick: TokenPick) -> Result<()> {
        if let TokenPick::Sample { cfg, seed } = pick {
            cfg.check()?;
            self.rng.write(0, &[seed], &self.stream)?;
        }
        if !pick.same_launch(&self.pick) {
            self.graphs.clear();
        }
        self.pick = pick;
        Ok(())
    }

    /// Goes back to `len` positions (`len <= self.len()`): the device position and the host's
    /// mirror; the cache entries past it are not used again until overwritten. Waits for the
    /// stream (a step still in flight would advance the position after the write).
    pub fn rewind(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(GpuError::Rewind {
                len: self.len,
                requested: len,
            });
        }
        self.stream.synchronize()?;
        self.pos.write(0, &[len as u32], &self.stream)?;
        self.len = len;
        Ok(())
    }

    /// Forgets the sequence (position 0, cache contents unused), keeping every buffer and the
    /// captured decode graphs: a graph reads the position from the device and is replayed at
    /// every position of its split count, in any sequence of this state.
    pub fn reset(&mut self) -> Result<()> {
        self.pos.write(0, &[0], &self.stream)?;
        self.len = 0;
        Ok(())
    }

    /// Device memory this state holds (KV cache, activations, scratch), in bytes.
    pub fn device_bytes(&self) -> usize {
        let f = |b: &Pooled<f32>| 4 * b.len();
        let kv: usize = self
            .k_cache
            .iter()
            .chain(&self.v_cache)
            .map(|b| 2 * b.len())
            .sum();
        kv + [
            &self.x,
            &self.normed,
            &self.q,
            &self.k,
            &self.v,
            &self.ctx,
            &self.proj,
            &self.gate,
            &self.up,
            &self.act,
            &self.last,
            &self.q_rot,
            &self.k_rot,
            &self.logits,
        ]
        .into_iter()
        .map(f)
        .sum::<usize>()
            + [&self.operands, &self.ffn_operands]
                .iter()
                .map(|o| 2 * (o.hi.len() + o.lo.len()) + o.lo8.len())
                .sum::<usize>()
            + self.attn_scratch.bytes()
    }
}

impl GpuState {
    /// The buffers of the products `which` (Q, K and V; gate and up; or one), borrowed
    /// together, with the input of `input` (a group's products share it).
    pub(super) fn product_io(&mut self, input: Lin, which: impl Iterator<Item = Lin>) -> LinIo<'_> {
        let GpuState {
            stream,
            normed,
            ctx,
            act,
            operands,
            ffn_operands,
            q,
            k,
            v,
            proj,
            gate,
            up,
            logits,
            ..
        } = self;
        let x: &DeviceBuffer<f32> = match input {
            Lin::O => ctx,
            Lin::Down => act,
            _ => normed,
        };
        let ops = match input.in_ffn_operands() {
            true => ffn_operands,
            false => operands,
        };
        let mut outs = [q, k, v, proj, gate, up, logits].map(|b| Some(&mut **b));
        let ys = which
            .map(|l| {
                let slot = match l {
                    Lin::Q => 0,
                    Lin::K => 1,
                    Lin::V => 2,
                    Lin::O | Lin::Down => 3,
                    Lin::Gate => 4,
                    Lin::Up => 5,
                    Lin::Head => 6,
                };
                outs[slot]
                    .take()
                    .expect("one output per product of a group")
            })
            .collect();
        LinIo {
            s: stream,
            x,
            ys,
            ops,
        }
    }
}

/// The buffers of products that share their input: the input, the outputs (in the
/// products' order), and the input's f16 operand buffers.
pub(super) struct LinIo<'a> {
    pub(super) s: &'a Stream,
    pub(super) x: &'a DeviceBuffer<f32>,
    pub(super) ys: Vec<&'a mut DeviceBuffer<f32>>,
    /// The input's operands (`ffn_operands` for gate/up: `Lin::in_ffn_operands`).
    pub(super) ops: &'a mut OperandBufs,
}

/// How the device picks the next token at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenPick {
    /// The largest logit (the first on ties).
    Argmax,
    /// A draw as the host sampler makes it, from the generator seeded with `seed`.
    Sample { cfg: DeviceSampling, seed: u64 },
}

impl TokenPick {
    /// Whether the two picks launch the same kernel with the same arguments (the seed is
    /// not one: it goes to the generator's buffer).
    pub(super) fn same_launch(&self, other: &TokenPick) -> bool {
        match (self, other) {
            (TokenPick::Argmax, TokenPick::Argmax) => true,
            (TokenPick::Sample { cfg: a, .. }, TokenPick::Sample { cfg: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// The token a pick left at `history[pos]` (read on stream `s`), or the error it flagged
/// there: [`PICK_NAN`] for logits with a NaN, which came from the row of position `pos - 1`.
pub(super) fn read_pick(history: &DeviceBuffer<u32>, pos: usize, s: &Stream) -> Result<u32> {
    let mut id = [0u32];
    history.read(pos, &mut id, s)?;
    pick_token(id[0], pos)
}

/// The history word at `pos` as a token (see [`read_pick`]).
pub(super) fn pick_token(word: u32, pos: usize) -> Result<u32> {
    match word {
        PICK_NAN => Err(GpuError::NanLogits {
            position: pos.saturating_sub(1),
        }),
        token => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use super::{pick_token, GpuError, PICK_NAN};

    #[test]
    fn a_pick_flagged_nan_is_an_error_naming_the_logits_position() {
        assert_eq!(pick_token(17, 5).unwrap(), 17);
        assert_eq!(pick_token(PICK_NAN - 1, 5).unwrap(), PICK_NAN - 1);
        let e = pick_token(PICK_NAN, 5).unwrap_err();
        assert!(matches!(e, GpuError::NanLogits { position: 4 }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("position 4") && msg.contains("NaN") && msg.contains("greta audit"),
            "{msg}"
        );
    }
}
