//! Decode steps issued ahead of the host (`DecodeAhead`): the GPU's queue holds the next
//! step while the host reads this one's token.

use super::*;

/// How many decode steps [`DecodeAhead`] keeps issued beyond the one the host waits for.
const STEPS_AHEAD: usize = 1;

/// Decode steps issued ahead of the host: step t + 1 is on the GPU's queue before the host
/// reads step t's token, so the GPU does not sit idle through the read-back, the host's
/// wake-up and the next launch. Each step's token comes from the device's `history` (the
/// pick writes it there as well as into the next step's input) through a second stream,
/// after an event recorded behind that step, in order, by [`next_token`](Self::next_token).
///
/// At most `steps` steps are issued. [`finish`](Self::finish) waits for a step issued past
/// the last token read and rewinds the state to where a step-by-step loop would have left
/// it (position, next input); a device sampler's generator keeps the extra draw.
pub struct DecodeAhead<'a> {
    model: &'a GpuLlama,
    st: &'a mut GpuState,
    graph: bool,
    steps: usize,
    issued: usize,
    /// Issued steps not yet read: the position their token takes, the event behind them.
    in_flight: std::collections::VecDeque<(usize, Event)>,
    spare: Vec<Event>,
    last: Option<u32>,
}

impl<'a> DecodeAhead<'a> {
    /// A run of up to `steps` decode steps from the token in the state's `ids[0]`; checks
    /// that they fit the KV cache before issuing any.
    pub fn new(
        model: &'a GpuLlama,
        st: &'a mut GpuState,
        graph: bool,
        steps: usize,
    ) -> Result<Self> {
        if st.len + steps > st.capacity {
            return Err(GpuError::KvCacheFull {
                capacity: st.capacity,
                used: st.len,
                requested: steps,
            });
        }
        Ok(DecodeAhead {
            model,
            st,
            graph,
            steps,
            issued: 0,
            in_flight: Default::default(),
            spare: Vec::new(),
            last: None,
        })
    }

    fn issue(&mut self) -> Result<()> {
        self.model.decode_enqueue(self.st, self.graph)?;
        let done = match self.spare.pop() {
            Some(e) => e,
            None => self.model.gpu.event()?,
        };
        done.record(&self.st.stream)?;
        self.in_flight.push_back((self.st.len, done));
        self.issued += 1;
        Ok(())
    }

    /// The next step's token: issues that step and up to `STEPS_AHEAD` more (within
    /// `steps`), then waits for that step alone.
    pub fn next_token(&mut self) -> Result<u32> {
        while self.in_flight.len() <= STEPS_AHEAD && self.issued < self.steps {
            self.issue()?;
        }
        let (pos, done) = self
            .in_flight
            .pop_front()
            .ok_or(GpuError::AheadExhausted { steps: self.steps })?;
        done.synchronize()?;
        let id = read_pick(&self.st.history, pos, &self.st.reads)?;
        self.spare.push(done);
        self.last = Some(id);
        Ok(id)
    }

    /// Ends the run: a step issued past the last token read is waited for and undone.
    pub fn finish(self) -> Result<()> {
        if let Some(&(pos, _)) = self.in_flight.front() {
            // That step decoded the token at pos - 1 and picked the one for pos.
            self.st.rewind(pos - 1)?;
            if let Some(last) = self.last {
                self.st.ids.write(0, &[last], &self.st.stream)?;
            }
        }
        Ok(())
    }
}
