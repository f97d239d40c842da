//! Token sampling: greedy, temperature, top-k, top-p, repetition penalty, seeded.
//!
//! The random source is splitmix64, chosen because a GPU kernel can run the same generator
//! and so draw the same tokens from the same seed.

#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1.0 means no nucleus cut.
    pub top_p: f32,
    /// 1.0 means none. Applied as llama.cpp does: positive logits divided, negative multiplied.
    pub repetition_penalty: f32,
    /// How many of the last tokens the penalty looks at.
    pub repetition_window: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("{name} = {value} is out of range; accepted: {accepted}")]
    OutOfRange {
        name: &'static str,
        value: f32,
        accepted: &'static str,
    },
    #[error("the logits contain NaN; refusing to sample from them")]
    NanLogits,
}

impl SamplerConfig {
    pub fn validate(&self) -> Result<(), SamplerError> {
        let check = |ok: bool, name, value, accepted| {
            if ok {
                Ok(())
            } else {
                Err(SamplerError::OutOfRange {
                    name,
                    value,
                    accepted,
                })
            }
        };
        check(
            self.temperature >= 0.0 && self.temperature.is_finite(),
            "temperature",
            self.temperature,
            "a finite value >= 0 (0 = greedy)",
        )?;
        check(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "top_p",
            self.top_p,
            "0 < top_p <= 1",
        )?;
        check(
            self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite(),
            "repetition_penalty",
            self.repetition_penalty,
            "a finite value > 0 (1 = off)",
        )
    }
}

pub struct Sampler {
    cfg: SamplerConfig,
    state: u64,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Result<Self, SamplerError> {
        cfg.validate()?;
        let state = cfg.seed;
        Ok(Sampler { cfg, state })
    }

    fn next_f32(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Whether the choice is the plain argmax.
    pub fn is_greedy(&self) -> bool {
        self.cfg.temperature == 0.0 && self.cfg.repetition_penalty == 1.0
    }

    /// Picks the next token from one row of logits, given the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SamplerError> {
        if logits.iter().any(|v| v.is_nan()) {
            return Err(SamplerError::NanLogits);
        }
        let mut logits = std::borrow::Cow::Borrowed(logits);
        if self.cfg.repetition_penalty != 1.0 {
            let logits = logits.to_mut();
            let start = history.len().saturating_sub(self.cfg.repetition_window);
            let mut seen = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / self.cfg.repetition_penalty
                    } else {
                        *l * self.cfg.repetition_penalty
                    };
                }
            }
        }
        if self.cfg.temperature == 0.0 {
            return Ok(argmax(&logits));
        }
        let cand = top_candidates(&logits, self.cfg.temperature, self.cfg.top_k);
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.cfg.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|&p| {
                acc += p;
                acc >= self.cfg.top_p
            });
            let keep = keep.map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            let s: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= s);
        }
        let r = self.next_f32();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return Ok(cand[i].0);
            }
        }
        Ok(cand[probs.len() - 1].0)
    }
}

/// The order of sampling candidates (index, value): value descending by `f32::total_cmp`, then
/// index ascending. No two candidates share an index, so the order is strict: the top k are
/// one set in one order however they are found (the device sampler finds the same).
fn ranked(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The candidates a draw chooses from: (index, logit / temperature) in `ranked` order, the
/// first `top_k` of them (0: all).
fn top_candidates(logits: &[f32], temperature: f32, top_k: usize) -> Vec<(u32, f32)> {
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l / temperature))
        .collect();
    if top_k > 0 && top_k < cand.len() {
        // Only the top k are kept: select them (linear time), then sort those alone.
        // Sorting the whole vocabulary cost ~2 ms a token at 49 152 logits.
        cand.select_nth_unstable_by(top_k - 1, ranked);
        cand.truncate(top_k);
    }
    cand.sort_by(ranked);
    cand
}

/// Index of the largest value; the first one on ties (as torch.argmax and llama.cpp do).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: f32, k: usize, p: f32) -> SamplerConfig {
        SamplerConfig {
            temperature: t,
            top_k: k,
            top_p: p,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_first_max() {
        let mut s = Sampler::new(cfg(0.0, 0, 1.0)).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]).unwrap(), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(SamplerConfig {
            seed: 9,
            ..cfg(5.0, 1, 1.0)
        })
        .unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 1.0, 0.5], &[]).unwrap(), 1);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // p(0) ~ 0.88 alone passes top_p = 0.5: only token 0 may come out.
        let mut s = Sampler::new(SamplerConfig {
            seed: 3,
            ..cfg(1.0, 0, 0.5)
        })
        .unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&[4.0, 2.0, 0.0], &[]).unwrap(), 0);
        }
    }

    #[test]
    fn same_seed_same_draws_and_frequencies_follow_probabilities() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig {
                seed,
                ..cfg(1.0, 0, 1.0)
            })
            .unwrap();
            (0..4000)
                .map(|_| s.sample(&logits, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert_ne!(a, draw(43));
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "frequency {ones}");
    }

    #[test]
    fn repetition_penalty_follows_llama_cpp_sign_rule() {
        let mut s = Sampler::new(SamplerConfig {
            repetition_penalty: 2.0,
            ..cfg(0.0, 0, 1.0)
        })
        .unwrap();
        // token 0 (logit 3) seen: 1.5 < 2 -> token 1 wins.
        assert_eq!(s.sample(&[3.0, 2.0, -1.0], &[0]).unwrap(), 1);
        // negative logits get more negative: token 2 seen, -1 -> -2, token 1 still wins over it.
        assert_eq!(s.sample(&[-3.0, -1.5, -1.0], &[2]).unwrap(), 1);
    }

    proptest::proptest! {
        /// Selecting the top k before sorting keeps the candidates, in the order, that
        /// sorting everything and cutting kept, with ties everywhere (values from a small
        /// set, +0.0 and -0.0 among them) and every k from 0 past the vocabulary.
        #[test]
        fn top_k_selection_keeps_what_a_full_sort_keeps(
            picks in proptest::collection::vec(0usize..7, 1..200),
            top_k in 0usize..210,
            t in 0usize..3,
        ) {
            const VALUES: [f32; 7] = [1.5, 0.0, -0.0, -0.25, 3.0, 1.5, -7.0];
            let logits: Vec<f32> = picks.iter().map(|&i| VALUES[i]).collect();
            let temperature = [0.5, 1.0, 2.0][t];
            let mut want: Vec<(u32, f32)> = logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l / temperature))
                .collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if top_k > 0 {
                want.truncate(top_k);
            }
            let got = top_candidates(&logits, temperature, top_k);
            // Bits, not ==: -0.0 == +0.0 would hide a swap of the two.
            let bits = |c: &[(u32, f32)]| c.iter().map(|&(i, v)| (i, v.to_bits())).collect::<Vec<_>>();
            proptest::prop_assert_eq!(bits(&got), bits(&want));
        }
    }

    #[test]
    fn bad_settings_and_nan_are_errors() {
        assert!(Sampler::new(cfg(-1.0, 0, 1.0)).is_err());
        assert!(Sampler::new(cfg(1.0, 0, 0.0)).is_err());
        let mut s = Sampler::new(cfg(0.0, 0, 1.0)).unwrap();
        assert!(matches!(
            s.sample(&[f32::NAN, 1.0], &[]),
            Err(SamplerError::NanLogits)
        ));
    }
}
