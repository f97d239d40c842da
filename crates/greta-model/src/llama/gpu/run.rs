//! Running passes: `forward` with the logits read back, the prefill and the decode steps
//! with the token picked on the device, and decode captured as graphs and replayed.

use super::*;

impl GpuLlama {
    /// Runs `tokens` at positions `st.len()..` and returns the logits rows `which` asks for.
    pub fn forward(
        &self,
        tokens: &[u32],
        st: &mut GpuState,
        which: Logits,
        obs: &mut dyn StageObserver,
    ) -> Result<Vec<f32>> {
        let rows = self.forward_no_readback(tokens, st, which, obs, false)?;
        let mut out = vec![0f32; rows * self.config.vocab_size];
        st.logits.read(0, &mut out, &st.stream)?;
        Ok(out)
    }

    /// The pass of `tokens` up to its logits, then the end of the pass: the pick of the next
    /// token on the device (which also advances the position) with `pick`, else the
    /// position's advance alone.
    pub(super) fn forward_no_readback(
        &self,
        tokens: &[u32],
        st: &mut GpuState,
        which: Logits,
        obs: &mut dyn StageObserver,
        pick: bool,
    ) -> Result<usize> {
        // A state made before `set_split_lo` comes without the copies it asks for.
        self.make_fp8_copies()?;
        let t = tokens.len();
        if t > st.max_rows {
            return Err(GpuError::TooManyRows {
                max: st.max_rows,
                requested: t,
            });
        }
        if st.len + t > st.capacity {
            return Err(GpuError::KvCacheFull {
                capacity: st.capacity,
                used: st.len,
                requested: t,
            });
        }
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= self.config.vocab_size)
        {
            return Err(GpuError::TokenOutOfRange {
                id,
                index,
                vocab: self.config.vocab_size,
            });
        }
        obs.begin_pass(Pass {
            pos0: st.len,
            tokens,
        });
        st.ids.write(0, tokens, &st.stream)?;
        let pos0 = st.len;
        let rows = self.forward_inner(st, t, which, obs, pos0)?;
        if pick {
            self.pick_on_device(st, t)?;
        } else {
            self.kernels.advance_pos(&st.stream, &mut st.pos, t)?;
        }
        st.len += t;
        Ok(rows)
    }

    /// Writes the token the state's `TokenPick` chooses from the last logits row into `ids[0]`
    /// and `history` at the position it will take, advancing the position by the pass's
    /// `t` rows.
    pub(super) fn pick_on_device(&self, st: &mut GpuState, t: usize) -> Result<()> {
        let n = self.config.vocab_size;
        let at = PickAt {
            out: &mut st.ids,
            pos: &mut st.pos,
            advance: t,
            history: &mut st.history,
        };
        match st.pick {
            TokenPick::Argmax => self.kernels.argmax(&st.stream, &st.logits, n, at)?,
            TokenPick::Sample { cfg, .. } => {
                self.kernels
                    .sample(&st.stream, &st.logits, n, cfg, &mut st.rng, at)?
            }
        }
        Ok(())
    }

    /// Computes the keys and values of all but the last part of `prompt` into the cache,
    /// the state's rows (`new_state`'s `max_rows`) a pass, and returns that last part (1 to
    /// `max_rows` tokens), whose pass gives the logits: a prompt longer than the state's
    /// rows is prefilled in parts (as llama.cpp's batches do) instead of refused. Nothing is
    /// read back or waited for; a prompt that fits one pass comes back whole.
    pub fn prefill_head<'p>(&self, prompt: &'p [u32], st: &mut GpuState) -> Result<&'p [u32]> {
        let last = match prompt.len() {
            0 => 0,
            n => (n - 1) % st.max_rows + 1,
        };
        let (head, tail) = prompt.split_at(prompt.len() - last);
        for part in head.chunks(st.max_rows) {
            self.forward_no_readback(part, st, Logits::Last, &mut greta_trace::NoTrace, false)?;
        }
        Ok(tail)
    }

    /// Prefills `prompt` and leaves the next token (chosen on the device) in `ids[0]`;
    /// returns it.
    pub fn prefill_pick(&self, prompt: &[u32], st: &mut GpuState) -> Result<u32> {
        self.prefill_enqueue(prompt, st)?;
        st.picked()
    }

    /// `prefill_pick` up to the read-back: every launch of the prompt's pass and the pick is
    /// issued, none waited for (`GpuState::picked` then reads the token). `greta bench` times
    /// the two apart to tell a host-bound prefill from a GPU-bound one.
    pub fn prefill_enqueue(&self, prompt: &[u32], st: &mut GpuState) -> Result<()> {
        self.forward_no_readback(prompt, st, Logits::Last, &mut greta_trace::NoTrace, true)?;
        Ok(())
    }

    /// One decode step of the token in `ids[0]`, entirely on the device: embed, layers,
    /// logits, the pick into `ids[0]`, position + 1.
    pub(super) fn decode_step_device(&self, st: &mut GpuState) -> Result<()> {
        let pos0 = st.len;
        self.forward_inner(st, 1, Logits::Last, &mut greta_trace::NoTrace, pos0)?;
        self.pick_on_device(st, 1)
    }

    /// Decodes the token in `ids[0]` and returns the next (chosen on the device). With
    /// `graph`, the step is captured (once per split count of the decode attention: see
    /// `GpuState::graphs`) and replayed; without, its kernels are launched one by one. The
    /// host waits for the step; [`DecodeAhead`] keeps one step ahead instead.
    pub fn decode_on_device(&self, st: &mut GpuState, graph: bool) -> Result<u32> {
        self.decode_enqueue(st, graph)?;
        st.picked()
    }

    /// Issues one decode step of the token in `ids[0]` (see `decode_on_device`) without
    /// waiting for it: its token lands in `ids[0]` and at `history[st.len()]` afterwards.
    pub fn decode_enqueue(&self, st: &mut GpuState, graph: bool) -> Result<()> {
        if st.len + 1 > st.capacity {
            return Err(GpuError::KvCacheFull {
                capacity: st.capacity,
                used: st.len,
                requested: 1,
            });
        }
        if graph {
            let splits = decode_splits(st.len + 1);
            let at = match st.graphs.iter().position(|(n, _)| *n == splits) {
                Some(at) => at,
                None => {
                    st.stream.begin_capture()?;
                    let captured = self.decode_step_device(st);
                    let g = st.stream.end_capture()?;
                    captured?;
                    if st.graphs.len() == GRAPHS_KEPT {
                        // The oldest, for a split count the position has left; were it still
                        // in flight, the driver frees it when it completes.
                        st.graphs.remove(0);
                    }
                    st.graphs.push((splits, g.instantiate()?));
                    st.graphs.len() - 1
                }
            };
            st.graphs[at].1.launch(&st.stream)?;
        } else {
            self.decode_step_device(st)?;
        }
        st.len += 1;
        Ok(())
    }
}

/// Captured decode steps a state keeps (`GpuState::graphs`): a long cache would otherwise
/// hold one for every 128 positions it has passed.
pub(super) const GRAPHS_KEPT: usize = 2;
