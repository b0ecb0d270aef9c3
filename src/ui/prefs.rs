//! What the app remembers between launches: preferences and panel choices, one struct with
//! `#[serde(default)]` so that fields added later fill in. The experiment itself is not here: it
//! is the [`Document`](super::document::Document), kept by the autosave and session files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How many recent models are remembered.
pub const MAX_RECENT: usize = 8;

/// The analysis views below the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
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
    /// A dataset's aggregates: flip rates and preference changes with intervals.
    Dataset,
    /// Attention to the needle per layer and step, and which prompt tokens read it.
    Attention,
}

impl AnalysisTab {
    /// Every view, in the order of their tabs.
    pub const ALL: [AnalysisTab; 6] = [
        AnalysisTab::Probes,
        AnalysisTab::Scores,
        AnalysisTab::KvDelta,
        AnalysisTab::Sweeps,
        AnalysisTab::Dataset,
        AnalysisTab::Attention,
    ];

    /// Its tab's title.
    pub fn title(self) -> &'static str {
        match self {
            AnalysisTab::Probes => "Probe chart",
            AnalysisTab::Scores => "Score table",
            AnalysisTab::KvDelta => "KV delta",
            AnalysisTab::Sweeps => "Sweeps",
            AnalysisTab::Dataset => "Dataset",
            AnalysisTab::Attention => "Attention",
        }
    }
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

/// The persisted preferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prefs {
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
    /// Whether runs capture attention (the Attention tab).
    pub attention: bool,
    /// The session file the document belonged to when the app last closed: the restored
    /// autosave is saved back to it.
    pub last_session_path: Option<PathBuf>,
    /// Recently opened or saved sessions, newest first.
    pub recent_sessions: Vec<PathBuf>,
    /// The sweep tab's choice.
    pub sweep_choice: SweepChoice,
    /// What a sweep's items do to their cells.
    pub sweep_op: crate::experiment::sweep::SweepOp,
    /// Which variant's prompt sweeps edit (index).
    pub sweep_variant: usize,
    /// The first-start explanation of the demo experiment was dismissed.
    pub welcome_dismissed: bool,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs {
            model_path: None,
            recent_models: Vec::new(),
            dark_mode: true,
            threads: crate::runner::default_threads(),
            gpu_layers: None,
            tab: AnalysisTab::default(),
            probe_index: 0,
            delta_layer: 0,
            attention: false,
            last_session_path: None,
            recent_sessions: Vec::new(),
            sweep_choice: SweepChoice::default(),
            sweep_op: Default::default(),
            sweep_variant: 0,
            welcome_dismissed: false,
        }
    }
}

/// One change to the preferences, asked for by a panel (as [`Command::SetPref`]) and made by the
/// app after the frame: panels read the preferences but never write them.
///
/// [`Command::SetPref`]: super::commands::Command::SetPref
#[derive(Debug, Clone, PartialEq)]
pub enum PrefEdit {
    /// The model path typed or chosen (`None`: cleared).
    ModelPath(Option<PathBuf>),
    /// Layers to offload to a GPU at the next load (`None`: all).
    GpuLayers(Option<u32>),
    /// CPU threads for llama.cpp.
    Threads(i32),
    /// Dark (true) or light theme.
    DarkMode(bool),
    /// The analysis view shown.
    Tab(AnalysisTab),
    /// Which probe the chart shows.
    ProbeIndex(usize),
    /// Which layer's position × channel K/V difference to record.
    DeltaLayer(usize),
    /// Whether runs capture attention.
    Attention(bool),
    /// What the sweep tab runs.
    SweepChoice(SweepChoice),
    /// Sweeps remove cells (true) or zero them.
    SweepOp(crate::experiment::sweep::SweepOp),
    /// Which variant's prompt sweeps edit.
    SweepVariant(usize),
    /// The first-start explanation was dismissed.
    WelcomeDismissed,
}

impl Prefs {
    /// Makes one change.
    pub fn apply(&mut self, edit: PrefEdit) {
        match edit {
            PrefEdit::ModelPath(p) => self.model_path = p,
            PrefEdit::GpuLayers(n) => self.gpu_layers = n,
            PrefEdit::Threads(n) => self.threads = n,
            PrefEdit::DarkMode(d) => self.dark_mode = d,
            PrefEdit::Tab(t) => self.tab = t,
            PrefEdit::ProbeIndex(i) => self.probe_index = i,
            PrefEdit::DeltaLayer(l) => self.delta_layer = l,
            PrefEdit::Attention(a) => self.attention = a,
            PrefEdit::SweepChoice(c) => self.sweep_choice = c,
            PrefEdit::SweepOp(o) => self.sweep_op = o,
            PrefEdit::SweepVariant(v) => self.sweep_variant = v,
            PrefEdit::WelcomeDismissed => self.welcome_dismissed = true,
        }
    }

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
        self.recent_sessions.insert(0, path);
        self.recent_sessions.truncate(MAX_RECENT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_fills_missing_fields() {
        let mut s = Prefs::default();
        s.remember_model("/a.gguf".into());
        s.remember_model("/b.gguf".into());
        s.remember_model("/a.gguf".into());
        assert_eq!(
            s.recent_models,
            vec![PathBuf::from("/a.gguf"), PathBuf::from("/b.gguf")]
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Prefs>(&json).unwrap(), s);
        let partial: Prefs = serde_json::from_str("{\"dark_mode\": false}").unwrap();
        assert!(!partial.dark_mode);
        assert!(!partial.welcome_dismissed, "new fields fill in");
    }
}
