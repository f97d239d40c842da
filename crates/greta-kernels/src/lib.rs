//! Ops of the Llama forward pass. `cpu` is the reference implementation: f32, parallel over
//! rows with rayon. GPU ops (a later layer) keep the same signatures and are checked
//! against these with NMSE thresholds; these are checked against naive f64 loops.

pub mod cpu;
pub mod gpu;
pub mod quant;
pub mod timeline;
