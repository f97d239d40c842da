//! GRETA CORE's Llama-family model: file formats (`io`), tokenizer, chat templates, the
//! model stages (`llama`), generation and perplexity.

pub mod audit;
pub mod bench;
pub mod calibrate;
pub mod chat;
pub mod conversation;
pub mod default_model;
pub mod generate;
pub mod io;
pub mod llama;
pub mod model;
pub mod perplexity;
pub mod synthetic;
pub mod tokenizer;

pub use greta_kernels as kernels;
pub use greta_trace as trace;
