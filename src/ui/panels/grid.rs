//! The outcome grid: live text during a run, then each row's generation with its verdict,
//! divergence and near-tie marks.

use egui::{Color32, RichText, Sense, Ui};

use super::{BAD, ViewCtx, WARN, hint, named, stale_banner, ui_preview, verdict_color};
use crate::experiment::ExperimentSpec;
use crate::experiment::grid::{self};
use crate::ui::document::Document;
use crate::ui::state::{Busy, LiveGrid};

/// The outcome grid: live text during a run, then the results with verdicts, divergence markers
/// and top-k tooltips on every generated token.
#[derive(Debug, Default)]
pub struct OutcomeGrid;

impl OutcomeGrid {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &Document) {
        // A run in progress shows its live text; the results it will replace stay in the
        // document until it completes (a Stop never costs a complete result).
        let live_run = matches!(ctx.busy, Busy::Running { .. }) && !ctx.live.baselines.is_empty();
        if !live_run && let Some(r) = &doc.results {
            let current = doc.results_are_current();
            stale_banner(ui, doc);
            if let Some(w) = crate::experiment::window::describe(r) {
                ui.label(RichText::new(w).color(WARN));
            }
            ui.add_enabled_ui(current, |ui| results_grid(ui, r));
        } else if live_run || ctx.live.tokens > 0 {
            live_grid(ui, ctx.live, &doc.spec);
        } else {
            hint(ui, "Run the experiment to fill the grid (Ctrl+Enter).");
        }
    }
}

/// The finished (or stopped) run: a row per condition under the baselines.
fn results_grid(ui: &mut Ui, r: &crate::experiment::RunResults) {
    {
        let rows = grid::rows(r);
        let width = cell_width(ui.available_width(), r.variants.len());
        egui::Grid::new("outcome")
            .striped(true)
            .min_col_width(120.0)
            .show(ui, |ui| {
                ui.label("");
                for v in &r.variants {
                    ui.label(RichText::new(&v.name).strong());
                }
                ui.end_row();
                ui.label(RichText::new("baseline").strong());
                for v in &r.variants {
                    cell_tokens(ui, &v.baseline, None, width);
                }
                ui.end_row();
                for row in rows {
                    ui.label(RichText::new(&row.label).strong());
                    for cell in &row.cells {
                        match cell {
                            Some(c) => {
                                ui.vertical(|ui| {
                                    if let Some(v) = &c.verdict {
                                        ui.label(
                                            RichText::new(v.to_string())
                                                .color(verdict_color(v))
                                                .strong(),
                                        );
                                    }
                                    let div = match c.first_divergence {
                                        None => "same as baseline".to_string(),
                                        Some(i) if c.fragile => {
                                            format!("departs at token {i} · near-tie")
                                        }
                                        Some(i) => format!("departs at token {i}"),
                                    };
                                    ui.label(RichText::new(div).small().weak());
                                    cell_tokens(ui, &c.generation, c.first_divergence, width);
                                });
                            }
                            None => {
                                ui.label("—");
                            }
                        }
                    }
                    ui.end_row();
                }
            });
        if !r.complete {
            ui.label(RichText::new("Stopped early: partial results, not scored.").color(WARN));
        }
    }
}

/// The text streaming in during a run, row by row.
fn live_grid(ui: &mut Ui, live: &LiveGrid, spec: &ExperimentSpec) {
    egui::Grid::new("live")
        .striped(true)
        .min_col_width(120.0)
        .show(ui, |ui| {
            ui.label(RichText::new("baseline").strong());
            for (v, t) in spec.variants.iter().zip(&live.baselines) {
                ui.label(format!("{}: {}", v.name, ui_preview(t)));
            }
            ui.end_row();
            for (c, t) in spec.conditions.iter().zip(&live.conditions) {
                ui.label(RichText::new(format!("{} ({})", c.row_label(), c.variant)).strong());
                ui.label(ui_preview(t));
                ui.end_row();
            }
        });
}

/// How wide a variant's column may be: an equal share of the area beside the row labels, so
/// that texts use the room there is (and wrap rather than scroll, at any width).
fn cell_width(available: f32, n_variants: usize) -> f32 {
    const LABEL_COLUMN: f32 = 190.0;
    let share = (available - LABEL_COLUMN) / n_variants.max(1) as f32 - 12.0;
    share.clamp(160.0, 900.0)
}

/// A generation as one wrapped text, `width` wide and as tall as it needs (no scroll area of its
/// own: the mouse wheel scrolls the grid, never a cell). One galley, cached by egui, so a
/// 1000-token cell costs one widget, not 1000; the first departing token is marked; hovering a
/// token shows its top-k alternatives, found from the pointer's character position.
fn cell_tokens(
    ui: &mut Ui,
    g: &crate::experiment::results::Generation,
    diverge: Option<usize>,
    width: f32,
) {
    let font = egui::TextStyle::Monospace.resolve(ui.style());
    let color = ui.visuals().text_color();
    let mut job = egui::text::LayoutJob::default();
    job.wrap.max_width = width;
    let mut starts = Vec::with_capacity(g.steps.len());
    let mut chars = 0usize;
    let mut plain = String::new();
    for (i, s) in g.steps.iter().enumerate() {
        starts.push(chars);
        let text = s.token.piece.replace('\n', "¶ ");
        chars += text.chars().count();
        plain.push_str(&text);
        let mut format = egui::TextFormat::simple(font.clone(), color);
        if diverge == Some(i) {
            format.background = BAD;
            format.color = Color32::WHITE;
        }
        job.append(&text, 0.0, format);
    }
    let galley = ui.painter().layout_job(job);
    let (rect, response) = ui.allocate_exact_size(galley.size(), Sense::hover());
    ui.painter().galley(rect.min, galley.clone(), color);
    let response = named(response, plain);
    if let Some(pos) = response.hover_pos() {
        let at = galley.cursor_from_pos(pos - rect.min).index.0;
        let i = starts.partition_point(|&s| s <= at).saturating_sub(1);
        if let Some(s) = g.steps.get(i) {
            response.on_hover_ui_at_pointer(|ui| {
                ui.label(format!("step {i} · {:?} · gap {:.3}", s.token.piece, s.gap));
                for a in &s.top {
                    ui.label(format!("{:>6.1}%  {:?}", a.logprob.exp() * 100.0, a.piece));
                }
            });
        }
    }
}
