//! StageTrace (shared/TRACE.md): the trace points, the selection of what to record, the
//! JSON Lines records with whole-row hashes and statistics, fault injection, and the diff
//! that names the first divergence in pipeline order.
//!
//! The model reports every stage's output to a [`StageObserver`]; everything here is built
//! on that one hook, so tracing is a layer over the stages, not calls inside the compute.

pub mod diff;
pub mod inject;
pub mod point;
pub mod record;
pub mod recorder;
pub mod row;
pub mod selection;

pub use point::{NoTrace, Pass, Phase, Point, StageAt, StageObserver, UnknownPoint};

/// The schema version written in every record.
pub const SCHEMA_VERSION: u32 = 1;
