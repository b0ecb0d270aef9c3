//! The window's panels, one struct each, and the layout that places them.
//!
//! A panel draws from two things: a [`ViewCtx`] (read-only: preferences, the loaded model, the
//! worker's progress, errors) and the [`Document`] (the experiment and notes, edited directly:
//! they are what the user edits). Anything else it wants done — load a model, run, change a
//! preference, show an error — it queues as a [`Command`] for the app to carry out after the
//! frame. Panels own only their transient state (the close dialog's "open", the token strip's
//! memory of the chosen needle), never the app's.
//!
//! Panels do not import [`app`](super::app); the app imports them. Before this split, every view
//! was a function over the whole app that could (and did) change anything in it, and `app` and
//! `views` imported each other.

mod analysis;
mod attention;
mod conditions;
mod dataset;
mod dock;
mod experiment;
mod frame;
mod grid;
mod model;
mod sweeps;
mod tokens;

use egui::{Color32, RichText, Ui};

pub use analysis::AnalysisPanel;
pub use attention::NO_ATTENTION_TEXT;
pub use conditions::ConditionsPanel;
pub use dataset::{DatasetTab, NO_DATASET_TEXT};
pub use dock::{Dock, DockPanels, Pane};
pub use experiment::ExperimentEditor;
pub use frame::{
    CloseDialog, ErrorLine, NotesPanel, ReadOnlyBanner, STALE_TEXT, StatusBar, TopBar,
    WELCOME_TEXT, WelcomePanel, stale_banner,
};
pub use grid::OutcomeGrid;
pub use model::{ModelPanel, UNSUPPORTED_BEFORE_LOADING};
pub use sweeps::{SWEEP_STALE_TEXT, SWEEP_UNKNOWN_TEXT};
pub use tokens::TokenStrip;

use super::commands::{Command, Commands};
use super::document::Document;
use super::prefs::{PrefEdit, Prefs};
use super::state::{Busy, LiveGrid, ModelPeek, ModelView};
use crate::engine::Device;
use crate::experiment::grid::preview;
use crate::runner::Prepared;

/// What panels read but do not change: the app's state as of this frame.
#[derive(Debug, Clone, Copy)]
pub struct ViewCtx<'a> {
    /// The user's preferences (panels ask for changes with [`Command::SetPref`]).
    pub prefs: &'a Prefs,
    /// The loaded model.
    pub model: Option<&'a ModelView>,
    /// The model path's header, read before loading.
    pub peek: Option<&'a ModelPeek>,
    /// The compute devices llama.cpp sees (empty until it has started).
    pub devices: &'a [Device],
    /// What the worker is doing.
    pub busy: &'a Busy,
    /// The run in progress.
    pub live: &'a LiveGrid,
    /// The tokenized prompts of the current spec.
    pub prepared: Option<&'a Prepared>,
    /// Why the prompts could not be tokenized.
    pub prepare_error: Option<&'a str>,
    /// The error shown until dismissed.
    pub error: Option<&'a str>,
    /// The status line.
    pub status: &'a str,
    /// Whether a file is being opened or saved (the status bar's spinner).
    pub files_busy: bool,
    /// Whether the shown results came from another model than the loaded one.
    pub read_only: bool,
    /// Why Run is disabled, or `None` when it can run.
    pub run_blocker: Option<&'a str>,
    /// The demo model, when it is in the cache.
    pub demo_model: Option<&'a std::path::Path>,
}

impl ViewCtx<'_> {
    /// Whether the experiment can run now.
    pub fn can_run(&self) -> bool {
        self.run_blocker.is_none()
    }
}

/// One panel drawn alone (the snapshot tests draw each at a fixed size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The model panel.
    Model,
    /// The experiment editor.
    ExperimentEditor,
    /// The token strip.
    TokenStrip,
    /// The conditions.
    Conditions,
    /// The outcome grid.
    OutcomeGrid,
    /// The probe chart.
    ProbeChart,
    /// The score table.
    ScoreTable,
    /// The K/V difference heatmaps.
    KvDelta,
    /// The sweeps tab.
    Sweeps,
    /// The attention tab.
    Attention,
}

/// Every panel of the window.
#[derive(Debug, Default)]
pub struct Panels {
    /// The menu line.
    pub top_bar: TopBar,
    /// The status line.
    pub status_bar: StatusBar,
    /// Model choice, metadata and devices.
    pub model: ModelPanel,
    /// Prompt, variants, generation.
    pub editor: ExperimentEditor,
    /// Notes saved with the session.
    pub notes: NotesPanel,
    /// The first-start explanation.
    pub welcome: WelcomePanel,
    /// The error line.
    pub error: ErrorLine,
    /// The read-only banner.
    pub read_only: ReadOnlyBanner,
    /// The tokenized prompts, where the needle is chosen.
    pub tokens: TokenStrip,
    /// The conditions.
    pub conditions: ConditionsPanel,
    /// The outcome grid.
    pub grid: OutcomeGrid,
    /// The analysis views.
    pub analysis: AnalysisPanel,
    /// The central area's layout: the experiment, the grid and the analysis views.
    pub dock: Dock,
    /// "Save changes?" when closing.
    pub close: CloseDialog,
}

impl Panels {
    /// The whole window: menu and status lines, the set-up column on the left, the dock (the
    /// experiment's tokens and conditions, the grid and the analysis views) in the middle, and
    /// the close dialog.
    pub fn show(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &mut Document, cmds: &mut Commands) {
        egui::Panel::top("menu").show(ui, |ui| self.top_bar.ui(ui, ctx, cmds));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar.ui(ui, ctx));
        // The set-up column takes at most half of a narrow window, so that the experiment and
        // its results keep room.
        let width = ui.available_width();
        egui::Panel::left("setup")
            .resizable(true)
            .default_size(380f32.min(width * 0.4))
            .max_size((width * 0.5).max(160.0))
            .show(ui, |ui| {
                // Scrolls sideways too, rather than growing past its share of a narrow window.
                egui::ScrollArea::both()
                    .id_salt("setup-scroll")
                    .show(ui, |ui| {
                        self.model.ui(ui, ctx, doc, cmds);
                        ui.separator();
                        ui.add_enabled_ui(!ctx.read_only, |ui| self.editor.ui(ui, doc));
                        ui.separator();
                        self.notes.ui(ui, doc);
                    });
            });
        egui::CentralPanel::default().show(ui, |ui| {
            // What the user must read whatever the layout: above the dock.
            self.welcome.ui(ui, ctx, cmds);
            self.error.ui(ui, ctx, cmds);
            self.read_only.ui(ui, ctx, doc, cmds);
            let panels = DockPanels {
                tokens: &mut self.tokens,
                conditions: &mut self.conditions,
                grid: &mut self.grid,
                analysis: &mut self.analysis,
            };
            self.dock.ui(ui, panels, ctx, doc, cmds);
        });
        self.close.ui(ui, doc, cmds);
    }

    /// One panel alone.
    pub fn show_one(
        &mut self,
        view: View,
        ui: &mut Ui,
        ctx: &ViewCtx,
        doc: &mut Document,
        cmds: &mut Commands,
    ) {
        match view {
            View::Model => self.model.ui(ui, ctx, doc, cmds),
            View::ExperimentEditor => self.editor.ui(ui, doc),
            View::TokenStrip => self.tokens.ui(ui, ctx, doc, cmds),
            View::Conditions => self.conditions.ui(ui, ctx, doc, cmds),
            View::OutcomeGrid => self.grid.ui(ui, ctx, doc),
            View::ProbeChart => self.analysis.probe_chart(ui, ctx, doc, cmds),
            View::ScoreTable => analysis::score_table(ui, doc),
            View::KvDelta => self.analysis.kv_delta(ui, ctx, doc, cmds),
            View::Sweeps => self.analysis.sweeps.ui(ui, ctx, doc, cmds),
            View::Attention => self.analysis.attention.ui(ui, ctx, doc, cmds),
        }
    }
}

/// Verdict and marker colours: kept, flipped, warnings.
const GOOD: Color32 = Color32::from_rgb(80, 180, 110);

const BAD: Color32 = Color32::from_rgb(225, 95, 85);

const WARN: Color32 = Color32::from_rgb(220, 170, 60);

/// Gives a widget without a visible label an accessible name (for screen readers and UI tests).
fn named(r: egui::Response, name: impl Into<String>) -> egui::Response {
    let name = name.into();
    r.ctx.accesskit_node_builder(r.id, |b| b.set_label(name));
    r
}

/// A cell preview with newlines as pilcrows (the UI font has no return symbol).
fn ui_preview(text: &str) -> String {
    preview(text, 160).replace('⏎', "¶ ")
}

/// Bytes as MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn verdict_color(v: &crate::experiment::results::Verdict) -> Color32 {
    use crate::experiment::results::Verdict;
    match v {
        Verdict::Keeps { .. } => GOOD,
        Verdict::FlipsTo { .. } => BAD,
        Verdict::Undecided { .. } => WARN,
    }
}

/// Queues a preference change when a widget changed a local copy of it (panels draw from the
/// copy for the rest of the frame, so the change shows at once).
fn set_pref_if<T: PartialEq>(
    cmds: &mut Commands,
    old: T,
    new: T,
    edit: impl FnOnce(T) -> PrefEdit,
) {
    if old != new {
        cmds.push(Command::SetPref(edit(new)));
    }
}

/// Text that reads on `fill`: black on light fills, white on dark ones (by relative luminance).
pub fn text_on(fill: Color32) -> Color32 {
    let lin = |c: u8| {
        let c = c as f32 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let l = 0.2126 * lin(fill.r()) + 0.7152 * lin(fill.g()) + 0.0722 * lin(fill.b());
    // Where black and white contrast equally: (l + 0.05) / 0.05 = 1.05 / (l + 0.05).
    if l > 0.179 {
        Color32::BLACK
    } else {
        Color32::WHITE
    }
}

/// A weak label, for hints and empty states.
fn hint(ui: &mut Ui, text: impl Into<String>) {
    ui.label(RichText::new(text.into()).weak());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chip_text_contrasts_with_its_fill() {
        assert_eq!(text_on(Color32::WHITE), Color32::BLACK);
        assert_eq!(text_on(Color32::from_rgb(248, 248, 248)), Color32::BLACK);
        assert_eq!(text_on(Color32::BLACK), Color32::WHITE);
        assert_eq!(text_on(Color32::from_rgb(27, 27, 27)), Color32::WHITE);
        assert_eq!(text_on(BAD), Color32::BLACK);
        assert_eq!(text_on(Color32::from_rgb(40, 90, 200)), Color32::WHITE);
        assert_eq!(text_on(GOOD), Color32::BLACK);
    }
}
