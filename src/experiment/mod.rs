//! Pure experiment logic, testable without a model or a window: the spec users write, needle
//! finding, metrics, the results a run produces and the outcome grid.

pub mod attention;
pub mod compare;
pub mod dataset;
pub mod floats;
pub mod grid;
pub mod jinja;
pub mod memory;
pub mod metrics;
pub mod needle;
pub mod outcome;
pub mod results;
pub mod samples;
pub mod spec;
pub mod stats;
pub mod sweep;
pub mod window;

pub use results::RunResults;
pub use spec::{Condition, ExperimentSpec, LayerSet, Op, PromptMode, Site, Span, Variant};
