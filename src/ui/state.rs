//! What the worker and the side tasks have told the UI, in the shapes panels read: the loaded
//! model, a file's header read before loading, what the worker is doing, the live grid.
//!
//! These live apart from [`app`](super::app) so that panels can read them without importing the
//! app (which imports the panels): the app owns the values, panels see them through
//! [`ViewCtx`](super::panels::ViewCtx).

use std::path::PathBuf;
use std::time::Instant;

use crate::engine::{ModelFingerprint, ModelInfo};
use crate::gguf::GgufSummary;

/// The loaded model, as the UI knows it.
#[derive(Debug, Clone)]
pub struct ModelView {
    /// The GGUF file it was loaded from.
    pub path: PathBuf,
    /// Its metadata.
    pub info: ModelInfo,
    /// Its fingerprint.
    pub fingerprint: ModelFingerprint,
    /// Layers offloaded to a GPU when it was loaded (`None`: all).
    pub gpu_layers: Option<u32>,
    /// Why kvlab cannot edit this model's cache (the engine's verdict, asked once at load);
    /// `None` when it can. Such a model is loaded for inspection only: no runs, no sweeps.
    pub unsupported: Option<String>,
    /// Its sliding window in words (which layers slide, how far they see), if it has one.
    pub attention: Option<String>,
}

/// A model file's metadata read without loading it (for the estimate shown before loading).
#[derive(Debug)]
pub struct ModelPeek {
    /// The file.
    pub path: PathBuf,
    /// Its metadata, or why it cannot be read; `None` while reading.
    pub summary: Option<Result<GgufSummary, String>>,
}

/// What the worker is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Busy {
    /// Nothing.
    Idle,
    /// Loading a model (progress 0..1).
    Loading(f32),
    /// Running an experiment.
    Running {
        /// The current stage.
        stage: String,
        /// Steps done.
        done: usize,
        /// Steps in all.
        total: usize,
    },
}

/// Text streaming into the grid during a run.
#[derive(Debug, Clone, Default)]
pub struct LiveGrid {
    /// Per variant, its baseline's text so far.
    pub baselines: Vec<String>,
    /// Per condition, its text so far.
    pub conditions: Vec<String>,
    /// Tokens received.
    pub tokens: usize,
    /// When the run started.
    pub started: Option<Instant>,
    /// The run is a sweep: its progress counts items (the status bar says how many and how
    /// long the rest will take).
    pub sweep: bool,
}

/// Why the experiment cannot run now, in words for a disabled Run button's hover text; `None`
/// when it can. The one rule for the Run and Run-sweep buttons and for the commands.
pub fn run_blocker(model: Option<&ModelView>, busy: &Busy) -> Option<String> {
    match (model, busy) {
        (None, _) => Some("Load a model first.".into()),
        (
            Some(ModelView {
                unsupported: Some(why),
                ..
            }),
            _,
        ) => Some(format!("This model is loaded for inspection only: {why}")),
        (_, Busy::Loading(_)) => Some("A model is loading.".into()),
        (_, Busy::Running { .. }) => Some("A run is in progress.".into()),
        (Some(_), Busy::Idle) => None,
    }
}
