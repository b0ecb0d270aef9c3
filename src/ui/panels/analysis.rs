//! The analysis views under the grid, one tab each: probe chart, score table, K/V difference
//! heatmaps, and sweeps (in [`sweeps`](super::sweeps)).

use egui::{Color32, RichText, Sense, Ui, Vec2};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::sweeps::SweepsTab;
use super::{ViewCtx, hint, set_pref_if, stale_banner, verdict_color};
use crate::experiment::grid;
use crate::ui::commands::Commands;
use crate::ui::document::Document;
use crate::ui::prefs::{AnalysisTab, PrefEdit};

/// The tabs under the grid.
#[derive(Debug, Default)]
pub struct AnalysisPanel {
    /// The sweep tab.
    pub sweeps: SweepsTab,
}

impl AnalysisPanel {
    /// Draws the tab row and the chosen tab.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &mut Document, cmds: &mut Commands) {
        let mut tab = ctx.prefs.tab;
        ui.horizontal(|ui| {
            ui.selectable_value(&mut tab, AnalysisTab::Probes, "Probe chart");
            ui.selectable_value(&mut tab, AnalysisTab::Scores, "Score table");
            ui.selectable_value(&mut tab, AnalysisTab::KvDelta, "KV delta");
            ui.selectable_value(&mut tab, AnalysisTab::Sweeps, "Sweeps");
        });
        set_pref_if(cmds, ctx.prefs.tab, tab, PrefEdit::Tab);
        if tab != AnalysisTab::Sweeps {
            stale_banner(ui, doc);
        }
        match tab {
            AnalysisTab::Probes => self.probe_chart(ui, ctx, doc, cmds),
            AnalysisTab::Scores => score_table(ui, doc),
            AnalysisTab::KvDelta => self.kv_delta(ui, ctx, doc, cmds),
            AnalysisTab::Sweeps => self.sweeps.ui(ui, ctx, doc, cmds),
        }
    }

    /// Probe-token probability per step, one line per condition.
    pub fn probe_chart(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &Document, cmds: &mut Commands) {
        let Some(r) = &doc.results else {
            hint(ui, "No results yet.");
            return;
        };
        if r.spec.probes.is_empty() {
            ui.label("The experiment has no probes.");
            return;
        }
        let mut chosen = ctx.prefs.probe_index;
        ui.horizontal(|ui| {
            ui.label("Probe");
            for (i, p) in r.spec.probes.iter().enumerate() {
                ui.selectable_value(&mut chosen, i, format!("{p:?}"));
            }
        });
        set_pref_if(cmds, ctx.prefs.probe_index, chosen, PrefEdit::ProbeIndex);
        let probe = chosen.min(r.spec.probes.len() - 1);
        Plot::new("probes")
            .height(220.0)
            .legend(Legend::default())
            .x_axis_label("step")
            .y_axis_label("probability")
            .show(ui, |plot| {
                for c in &r.conditions {
                    let pts: Vec<[f64; 2]> = c
                        .generation
                        .steps
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            [
                                i as f64,
                                s.probes.get(probe).map_or(0.0, |lp| lp.exp() as f64),
                            ]
                        })
                        .collect();
                    plot.line(Line::new(
                        format!("{} ({})", c.label, c.variant),
                        PlotPoints::from(pts),
                    ));
                }
            });
    }

    /// The K/V difference between the first two variants: layer × position, and one layer's
    /// position × channel (the seed's figures).
    pub fn kv_delta(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &Document, cmds: &mut Commands) {
        let n_layer = ctx.model.map(|m| m.info.n_layer as usize).unwrap_or(1);
        ui.horizontal(|ui| {
            let label = ui.label("Layer for the position × channel view");
            let mut layer = ctx.prefs.delta_layer;
            ui.add(egui::DragValue::new(&mut layer).range(0..=n_layer.saturating_sub(1)))
                .labelled_by(label.id);
            set_pref_if(cmds, ctx.prefs.delta_layer, layer, PrefEdit::DeltaLayer);
            hint(ui, "(recorded at the next run)");
        });
        let Some(d) = doc.results.as_ref().and_then(|r| r.kv_delta.as_ref()) else {
            ui.label(
                RichText::new("No K/V delta yet (it needs two variants of the same length).")
                    .weak(),
            );
            return;
        };
        ui.label(format!(
            "|{} − {}| per layer (rows) and position (columns)",
            d.variant_a, d.variant_b
        ));
        ui.horizontal(|ui| {
            heatmap(ui, "K", &d.k_l2, Vec2::new(4.0, 6.0), "layer", "position");
            ui.add_space(12.0);
            heatmap(ui, "V", &d.v_l2, Vec2::new(4.0, 6.0), "layer", "position");
        });
        if let Some(rows) = &d.layer_rows {
            let abs = |m: &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
                m.iter()
                    .map(|r| r.iter().map(|x| x.abs()).collect())
                    .collect()
            };
            ui.label(format!(
                "layer {}: |difference| per position (rows) and channel (columns)",
                rows.layer
            ));
            heatmap(
                ui,
                "K",
                &abs(&rows.k),
                Vec2::new(2.0, 3.0),
                "position",
                "channel",
            );
            heatmap(
                ui,
                "V",
                &abs(&rows.v),
                Vec2::new(2.0, 3.0),
                "position",
                "channel",
            );
        }
    }
}

/// Each condition's scores: the verdict with the numbers it compares (each variant's expected
/// answers, summed), then, labelled as what they are, the mean per-token log-prob of each
/// variant's baseline text under the edited cache.
pub fn score_table(ui: &mut Ui, doc: &Document) {
    let Some(r) = &doc.results else {
        hint(ui, "No results yet.");
        return;
    };
    ui.add_enabled_ui(doc.results_are_current(), |ui| {
        egui::Grid::new("scores").striped(true).show(ui, |ui| {
            ui.label(RichText::new("condition").strong());
            ui.label(RichText::new("prompt").strong());
            ui.label(RichText::new("verdict").strong())
                .on_hover_text(grid::PREFERENCE_HELP);
            for v in &r.variants {
                ui.label(RichText::new(format!("log P({} answers)", v.name)).strong())
                    .on_hover_text(format!(
                        "The sum of the token log-probs of {}'s expected answers under the \
                         row's cache (several answers: the log of their total probability). \
                         The verdict compares these.",
                        v.name
                    ));
            }
            for v in &r.variants {
                ui.label(RichText::new(format!("{} baseline text, lp/token", v.name)))
                    .on_hover_text(format!(
                        "The mean per-token log-prob of {}'s unedited greedy continuation \
                         under the row's cache: how well the edited cache still predicts that \
                         text. Not the expected answer.",
                        v.name
                    ));
            }
            ui.end_row();
            for c in &r.conditions {
                score_row(ui, r, c);
            }
        });
    });
}

/// One condition's row of the score table.
fn score_row(
    ui: &mut Ui,
    r: &crate::experiment::RunResults,
    c: &crate::experiment::results::ConditionResult,
) {
    ui.label(&c.label);
    ui.label(&c.variant);
    match &c.verdict {
        Some(v) => ui.label(RichText::new(v.to_string()).color(verdict_color(v))),
        None => ui.label("—"),
    };
    for v in &r.variants {
        let own = v.name == c.variant;
        match grid::answer_score(c, &v.name) {
            Some(s) => {
                let t = RichText::new(format!("{s:.3}"));
                let detail: Vec<String> = c
                    .expected
                    .iter()
                    .filter(|e| e.variant == v.name)
                    .map(|e| {
                        format!(
                            "{:?}: sum {:.3}, mean {:.3} over {} tokens",
                            e.answer,
                            e.sum,
                            e.mean,
                            e.per_token.len()
                        )
                    })
                    .collect();
                ui.label(if own { t.strong() } else { t })
                    .on_hover_text(detail.join("\n"));
            }
            None => {
                ui.label("—");
            }
        }
    }
    for v in &r.variants {
        match c.score_of(&v.name) {
            Some(s) => ui
                .label(RichText::new(format!("{:.3}", s.mean)).weak())
                .on_hover_text(format!("sum {:.3} over {} tokens", s.sum, s.n_tokens)),
            None => ui.label("—"),
        };
    }
    ui.end_row();
}

/// The colour of `value` on a dark-to-yellow scale up to `max`.
fn heat(value: f32, max: f32) -> Color32 {
    let t = if max > 0.0 {
        (value / max).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let c = |a: f32, b: f32| (a + (b - a) * t) as u8;
    Color32::from_rgb(c(20.0, 255.0), c(24.0, 200.0), c(60.0, 40.0))
}

/// A heatmap of `rows`, one `cell` per value, with the value under the pointer on hover.
pub(super) fn heatmap(
    ui: &mut Ui,
    title: &str,
    rows: &[Vec<f32>],
    cell: Vec2,
    row_name: &str,
    col_name: &str,
) {
    ui.label(RichText::new(title).strong());
    let max = rows.iter().flatten().copied().fold(0f32, f32::max);
    let n_cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let size = Vec2::new(n_cols as f32 * cell.x, rows.len() as f32 * cell.y);
    let (resp, painter) = ui.allocate_painter(size, Sense::hover());
    for (ri, row) in rows.iter().enumerate() {
        for (ci, &v) in row.iter().enumerate() {
            let min = resp.rect.min + Vec2::new(ci as f32 * cell.x, ri as f32 * cell.y);
            painter.rect_filled(egui::Rect::from_min_size(min, cell), 0.0, heat(v, max));
        }
    }
    if let Some(p) = resp.hover_pos() {
        let rel = p - resp.rect.min;
        let (ri, ci) = ((rel.y / cell.y) as usize, (rel.x / cell.x) as usize);
        if let Some(v) = rows.get(ri).and_then(|r| r.get(ci)) {
            resp.on_hover_text(format!("{row_name} {ri}, {col_name} {ci}: {v:.4}"));
        }
    }
}
