//! What the app remembers between launches (one struct, `#[serde(default)]`), and the commands
//! the UI queues during a frame, executed at its end.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::experiment::ExperimentSpec;

/// How many recent models are remembered.
pub const MAX_RECENT: usize = 8;

/// The analysis views below the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AnalysisTab {
    /// Probe-token probability per step.
    #[default]
    Probes,
    /// Each condition's expected-answer and baseline scores.
    Scores,
    /// K/V difference between the variants.
    KvDelta,
    /// Position, span and layer sweeps.
    Sweeps,
}

/// What the sweep tab will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SweepChoice {
    /// Every position.
    #[default]
    Position,
    /// The needle plus k tokens.
    Span,
    /// Layers.
    Layer,
    /// Positions × layers.
    PositionLayer,
}

/// The persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppState {
    /// The experiment being edited.
    pub spec: ExperimentSpec,
    /// The model last opened.
    pub model_path: Option<PathBuf>,
    /// Recently opened models, newest first.
    pub recent_models: Vec<PathBuf>,
    /// Dark or light theme.
    pub dark_mode: bool,
    /// CPU threads for llama.cpp.
    pub threads: i32,
    /// Layers offloaded to the GPU (`None`: all, llama.cpp's default), in builds with a GPU backend.
    pub gpu_layers: Option<u32>,
    /// The analysis view shown.
    pub tab: AnalysisTab,
    /// Which probe the chart shows.
    pub probe_index: usize,
    /// Which layer's position × channel K/V difference to record.
    pub delta_layer: usize,
    /// The session file being edited, once saved or opened.
    pub session_path: Option<PathBuf>,
    /// Recently opened or saved sessions, newest first.
    pub recent_sessions: Vec<PathBuf>,
    /// The user's notes on the experiment (saved in the session).
    pub notes: String,
    /// The sweep tab's choice.
    pub sweep_choice: SweepChoice,
    /// Sweeps remove cells instead of zeroing them.
    pub sweep_remove: bool,
    /// Which variant's prompt sweeps edit (index).
    pub sweep_variant: usize,
}

impl Default for AppState {
    fn default() -> Self {
        AppState {
            spec: seed_spec(),
            model_path: None,
            recent_models: Vec::new(),
            dark_mode: true,
            threads: crate::runner::default_threads(),
            gpu_layers: None,
            tab: AnalysisTab::default(),
            probe_index: 0,
            delta_layer: 0,
            session_path: None,
            recent_sessions: Vec::new(),
            notes: String::new(),
            sweep_choice: SweepChoice::default(),
            sweep_remove: false,
            sweep_variant: 0,
        }
    }
}

impl AppState {
    /// Remembers a model as the most recent.
    pub fn remember_model(&mut self, path: PathBuf) {
        self.recent_models.retain(|p| p != &path);
        self.recent_models.insert(0, path.clone());
        self.recent_models.truncate(MAX_RECENT);
        self.model_path = Some(path);
    }

    /// Remembers a session file as the most recent.
    pub fn remember_session(&mut self, path: PathBuf) {
        self.recent_sessions.retain(|p| p != &path);
        self.recent_sessions.insert(0, path.clone());
        self.recent_sessions.truncate(MAX_RECENT);
        self.session_path = Some(path);
    }
}

/// The seed experiment.
pub fn seed_spec() -> ExperimentSpec {
    ExperimentSpec::seed()
}

/// Something the UI wants done; queued during the frame, run after it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Show a file dialog to pick a model.
    PickModel,
    /// Load this model file.
    LoadModel(PathBuf),
    /// Stop the current load or run.
    Stop,
    /// Run the experiment.
    Run,
    /// Re-tokenize the prompts.
    Prepare,
    /// Replace the conditions with the seed grid (none, zero, transplant, remove × variants).
    SeedGrid,
    /// Replace the experiment with the seed experiment (a new, unsaved session).
    ResetToSeed,
    /// Save to the current session file (or ask where, the first time).
    Save,
    /// Ask where to save, then save.
    SaveAs,
    /// Ask which session to open.
    Open,
    /// Open this session file.
    OpenSession(PathBuf),
    /// Write the autosave file (in the background).
    Autosave,
    /// Close the window after the user chose to save or discard.
    CloseNow,
    /// Run the sweep chosen in the sweep tab.
    RunSweep,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_fills_missing_fields() {
        let mut s = AppState::default();
        s.remember_model("/a.gguf".into());
        s.remember_model("/b.gguf".into());
        s.remember_model("/a.gguf".into());
        assert_eq!(
            s.recent_models,
            vec![PathBuf::from("/a.gguf"), PathBuf::from("/b.gguf")]
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<AppState>(&json).unwrap(), s);
        let partial: AppState = serde_json::from_str("{\"dark_mode\": false}").unwrap();
        assert!(!partial.dark_mode);
        assert_eq!(partial.spec.name, "seed-short");
    }
}
