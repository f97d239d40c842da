//! Options every GPU-running command takes (generate, bench, audit backend).

use clap::Args;
use greta_model::llama::gpu::{GpuLlama, SplitInputs};

#[derive(Args, Clone, Copy)]
pub struct GpuArgs {
    /// GPU prefill: which products take their f32 input as hi + lo (two f16) on the matrix
    /// units; the rest round it to one f16. all, none, or a comma list of qkv, o, gate_up,
    /// down, head (docs/gpu.md, "Numerics").
    #[arg(long, value_name = "LIST", default_value_t = SplitInputs::default())]
    pub split_inputs: SplitInputs,
}

impl GpuArgs {
    /// Sets the options on a loaded model.
    pub fn apply(self, model: &mut GpuLlama) {
        model.split_inputs = self.split_inputs;
    }
}
