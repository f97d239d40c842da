//! The Llama family: config, weights, stages, KV cache.

pub mod config;
pub mod forward;
pub mod gpu;
pub mod kv_cache;
pub mod weights;

pub use config::{LlamaConfig, RopeStyle};
pub use forward::{ForwardError, Llama, Logits};
pub use kv_cache::{KvCache, KvCacheFull, KvFormat, UnknownKvFormat};
