//! The panels of the window, one file each. Each reads the app and the document and queues
//! commands; edits to the experiment spec are direct (it is the document being edited).

mod analysis;
mod experiment;
mod grid;
mod menu;
mod model;

use egui::{Color32, RichText, Ui};

use crate::ui::app::KvlabApp;

pub use analysis::{kv_delta, probe_chart, score_table, sweeps};
pub use experiment::{conditions, experiment_editor, token_strip};
pub use grid::outcome_grid;
pub use menu::{WELCOME_TEXT, close_dialog, notes, read_only_banner, status_bar, top_bar, welcome};
pub use model::model_panel;

use crate::experiment::grid::preview;
use crate::experiment::results::Verdict;

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

fn verdict_color(v: &Verdict) -> Color32 {
    match v {
        Verdict::Keeps { .. } => GOOD,
        Verdict::FlipsTo { .. } => BAD,
        Verdict::Undecided { .. } => WARN,
    }
}

/// Says so above results measured on an earlier version of the experiment (they stay readable,
/// greyed, until the next run replaces them).
pub fn stale_banner(app: &KvlabApp, ui: &mut Ui) {
    if !app.doc.results_are_current() {
        ui.label(RichText::new(STALE_TEXT).color(WARN));
    }
}

/// What stale results say.
pub const STALE_TEXT: &str = "From an earlier version of the experiment — Run to refresh. The experiment changed since \
     these results were measured.";
