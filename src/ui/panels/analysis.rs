//! The analysis views, one tab each in the dock (see [`dock`](super::dock)): probe chart, score
//! table, K/V difference heatmaps, and sweeps (in [`sweeps`](super::sweeps)).

use egui::{Color32, RichText, Sense, Ui, Vec2};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::sweeps::SweepsTab;
use super::{ViewCtx, hint, set_pref_if, verdict_color};
use crate::experiment::grid;
use crate::ui::commands::Commands;
use crate::ui::document::Document;
use crate::ui::prefs::PrefEdit;

/// The analysis views' own state.
#[derive(Debug, Default)]
pub struct AnalysisPanel {
    /// The sweep tab.
    pub sweeps: SweepsTab,
    /// The dataset tab.
    pub dataset: super::DatasetTab,
    /// The attention tab.
    pub attention: super::attention::AttentionTab,
}

impl AnalysisPanel {
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
            // As tall as its area (in the dock), but never too small to read.
            .height((ui.available_height() - 4.0).max(180.0))
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
        let sliding = doc
            .results
            .as_ref()
            .map_or(&[][..], |r| &r.model_info.sliding_layers[..]);
        if let Some(w) = doc
            .results
            .as_ref()
            .and_then(|r| r.model_info.sliding_window)
        {
            ui.label(
                RichText::new(format!(
                    "Layers marked on the left slide: they attend to the last {w} tokens only."
                ))
                .color(SLIDING_MARK),
            );
        }
        ui.horizontal(|ui| {
            let axes = HeatAxes::new("layer", "position").sliding(sliding);
            ui.vertical(|ui| heatmap(ui, "K", &d.k_l2, Vec2::new(4.0, 6.0), &axes));
            ui.add_space(12.0);
            ui.vertical(|ui| heatmap(ui, "V", &d.v_l2, Vec2::new(4.0, 6.0), &axes));
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
            let axes = HeatAxes::new("position", "channel");
            heatmap(ui, "K", &abs(&rows.k), Vec2::new(2.0, 3.0), &axes);
            heatmap(ui, "V", &abs(&rows.v), Vec2::new(2.0, 3.0), &axes);
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
        let noise = crate::experiment::samples::noise_summaries(r);
        if !noise.is_empty() {
            ui.add_space(8.0);
            ui.label(RichText::new("Noise draws").strong())
                .on_hover_text(
                    "Noise conditions that differ only in their seed, taken together: one draw is \
                 an anecdote.",
                );
            for n in noise {
                ui.label(n.to_string());
            }
        }
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

/// The colour of `value` on a dark-to-yellow scale from `lo` to `hi`.
fn heat(value: f32, lo: f32, hi: f32) -> Color32 {
    let t = if hi > lo {
        ((value - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let c = |a: f32, b: f32| (a + (b - a) * t) as u8;
    Color32::from_rgb(c(20.0, 255.0), c(24.0, 200.0), c(60.0, 40.0))
}

/// Which of `n` cells `cell` pixels apart get a number so that numbers stay `gap` pixels apart:
/// every 1, 2, 5, 10, 20, 50 … cells from 0.
pub(super) fn ticks(n: usize, cell: f32, gap: f32) -> Vec<usize> {
    let mut step = 1usize;
    for s in [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] {
        step = s;
        if s as f32 * cell >= gap {
            break;
        }
    }
    (0..n).step_by(step).collect()
}

/// What a marked heatmap row is.
pub(super) const SLIDING_ROW: &str = "sliding-window layer";

/// The colour that marks sliding-window layers (rows, bars).
pub(super) const SLIDING_MARK: Color32 = Color32::from_rgb(235, 170, 60);

/// What a heatmap's axes say besides the values.
pub(super) struct HeatAxes<'a> {
    /// What a row is ("layer").
    pub row_name: &'a str,
    /// What a column is ("position").
    pub col_name: &'a str,
    /// The number of the first column (a map that starts at position 5 says 5 there).
    pub first_col: usize,
    /// Each column's text (tokens), shown on hover.
    pub col_text: Option<&'a dyn Fn(usize) -> Option<String>>,
    /// Columns to frame and call so on hover (the needle).
    pub marked: Option<(std::ops::Range<usize>, &'a str)>,
    /// Rows to mark with a bar on the left and call so on hover (sliding-window layers).
    pub marked_rows: Option<(&'a [u32], &'a str)>,
    /// Signed values (a difference): blue below 0, red above, grey at 0, on a scale symmetric
    /// around 0, so the sign shows at a glance.
    pub diverging: bool,
}

impl<'a> HeatAxes<'a> {
    /// Rows and columns named, numbered from 0, nothing marked.
    pub fn new(row_name: &'a str, col_name: &'a str) -> Self {
        HeatAxes {
            row_name,
            col_name,
            first_col: 0,
            col_text: None,
            marked: None,
            marked_rows: None,
            diverging: false,
        }
    }

    /// The same axes with the model's sliding-window layers marked, when rows are layers.
    pub fn sliding(self, layers: &'a [u32]) -> Self {
        HeatAxes {
            marked_rows: (!layers.is_empty()).then_some((layers, SLIDING_ROW)),
            ..self
        }
    }
}

/// A heatmap of `rows`, one `cell` per value: row numbers on the left, column numbers below,
/// the colour scale with its lowest and highest value beside it, and the value under the
/// pointer on hover.
pub(super) fn heatmap(ui: &mut Ui, title: &str, rows: &[Vec<f32>], cell: Vec2, axes: &HeatAxes) {
    ui.label(RichText::new(title).strong());
    let values = || rows.iter().flatten().copied().filter(|v| v.is_finite());
    let hi = values().fold(f32::NEG_INFINITY, f32::max);
    let lo = values().fold(f32::INFINITY, f32::min);
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    let (lo, hi) = if axes.diverging {
        let m = lo.abs().max(hi.abs());
        (-m, m)
    } else {
        (lo, hi)
    };
    let colour = |v: f32| {
        if axes.diverging {
            diverge(v, hi)
        } else {
            heat(v, lo, hi)
        }
    };
    let n_cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let font = egui::FontId::monospace(9.0);
    let ink = ui.visuals().text_color();
    let last_row = rows.len().saturating_sub(1);
    let last_col = axes.first_col + n_cols.saturating_sub(1);
    let digits = |n: usize| n.to_string().len() as f32;
    // Room for the row numbers, and for the marks of marked rows.
    let mark = if axes.marked_rows.is_some() { 5.0 } else { 0.0 };
    let left = 6.0 * digits(last_row) + 4.0 + mark;
    // Room above for the first row's number, which is taller than a row.
    let (above, below) = (4.0, 12.0);
    let map = Vec2::new(n_cols as f32 * cell.x, rows.len() as f32 * cell.y);
    let size = map + Vec2::new(left, above + below);
    let (resp, painter) = ui.allocate_painter(size, Sense::hover());
    let origin = resp.rect.min + Vec2::new(left, above);
    for (ri, row) in rows.iter().enumerate() {
        for (ci, &v) in row.iter().enumerate() {
            let min = origin + Vec2::new(ci as f32 * cell.x, ri as f32 * cell.y);
            painter.rect_filled(egui::Rect::from_min_size(min, cell), 0.0, colour(v));
        }
    }
    if let Some((marked, _)) = axes.marked_rows {
        for &ri in marked.iter().filter(|&&r| (r as usize) < rows.len()) {
            let y = origin.y + ri as f32 * cell.y;
            let r = egui::Rect::from_min_size(
                egui::pos2(origin.x - mark, y),
                Vec2::new(mark - 2.0, cell.y),
            );
            painter.rect_filled(r, 0.0, SLIDING_MARK);
        }
    }
    for ri in ticks(rows.len(), cell.y, 11.0) {
        let y = origin.y + (ri as f32 + 0.5) * cell.y;
        painter.text(
            egui::pos2(origin.x - 3.0 - mark, y),
            egui::Align2::RIGHT_CENTER,
            ri.to_string(),
            font.clone(),
            ink,
        );
    }
    let col_gap = 6.0 * digits(last_col) + 8.0;
    for ci in ticks(n_cols, cell.x, col_gap) {
        let x = origin.x + ci as f32 * cell.x;
        painter.line_segment(
            [
                egui::pos2(x, origin.y + map.y),
                egui::pos2(x, origin.y + map.y + 3.0),
            ],
            egui::Stroke::new(1.0, ink),
        );
        painter.text(
            egui::pos2(x, origin.y + map.y + 2.0),
            egui::Align2::LEFT_TOP,
            (axes.first_col + ci).to_string(),
            font.clone(),
            ink,
        );
    }
    if let Some((cols, _)) = &axes.marked
        && cols.start < n_cols
    {
        let x0 = origin.x + cols.start as f32 * cell.x;
        let x1 = origin.x + cols.end.min(n_cols) as f32 * cell.x;
        let r = egui::Rect::from_x_y_ranges(x0..=x1, origin.y..=origin.y + map.y);
        painter.rect_stroke(
            r.expand(1.0),
            0.0,
            egui::Stroke::new(1.5, ink),
            egui::StrokeKind::Outside,
        );
    }
    let name = format!(
        "{title}: {} 0–{last_row} (rows), {} {}–{last_col} (columns), from {lo:.4} to {hi:.4}",
        axes.row_name, axes.col_name, axes.first_col
    );
    let name = match axes.marked_rows {
        Some((marked, what)) => format!("{name}; {} rows marked: {what}", marked.len()),
        None => name,
    };
    let resp = super::named(resp, name);
    if let Some(p) = resp.hover_pos() {
        let rel = p - origin;
        if rel.x >= 0.0 && rel.y >= 0.0 {
            let (ri, ci) = ((rel.y / cell.y) as usize, (rel.x / cell.x) as usize);
            if let Some(v) = rows.get(ri).and_then(|r| r.get(ci)) {
                let col = axes.first_col + ci;
                let mut text = format!("{} {ri}, {} {col}", axes.row_name, axes.col_name);
                if let Some(t) = axes.col_text.and_then(|f| f(col)) {
                    text += &format!(" ({t:?})");
                }
                if let Some((cols, what)) = &axes.marked
                    && cols.contains(&ci)
                {
                    text += &format!(", {what}");
                }
                if let Some((marked, what)) = axes.marked_rows
                    && marked.contains(&(ri as u32))
                {
                    text += &format!(", {what}");
                }
                resp.on_hover_text(format!("{text}: {v:.4}"));
            }
        }
    }
    colour_scale(ui, lo, hi, axes.diverging);
}

/// A signed value's colour on a scale from -`m` (blue) through 0 (grey) to `m` (red).
fn diverge(value: f32, m: f32) -> Color32 {
    let t = if m > 0.0 {
        (value / m).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let (to, a) = if t < 0.0 {
        ([70.0, 130.0, 235.0], -t)
    } else {
        ([235.0, 90.0, 70.0], t)
    };
    let grey = [58.0, 58.0, 64.0];
    let c = |i: usize| (grey[i] + (to[i] - grey[i]) * a) as u8;
    Color32::from_rgb(c(0), c(1), c(2))
}

/// The colour scale: the lowest value, the colours, the highest value.
fn colour_scale(ui: &mut Ui, lo: f32, hi: f32, diverging: bool) {
    ui.horizontal(|ui| {
        ui.spacing_mut().item_spacing.x = 4.0;
        ui.label(RichText::new(format!("{lo:.4}")).small())
            .on_hover_text(if diverging {
                "the most negative value's size: blue; grey is 0"
            } else {
                "the lowest value: the darkest colour"
            });
        let (rect, _) = ui.allocate_exact_size(Vec2::new(96.0, 10.0), Sense::hover());
        let steps = 24;
        for i in 0..steps {
            let t = i as f32 / (steps - 1) as f32;
            let w = rect.width() / steps as f32;
            let r = egui::Rect::from_min_size(
                rect.min + Vec2::new(i as f32 * w, 0.0),
                Vec2::new(w + 0.5, rect.height()),
            );
            let c = if diverging {
                diverge(2.0 * t - 1.0, 1.0)
            } else {
                heat(t, 0.0, 1.0)
            };
            ui.painter().rect_filled(r, 0.0, c);
        }
        ui.label(RichText::new(format!("{hi:.4}")).small())
            .on_hover_text(if diverging {
                "the largest positive value: red; grey is 0"
            } else {
                "the highest value: the brightest colour"
            });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_stay_apart_and_start_at_zero() {
        assert_eq!(ticks(5, 20.0, 11.0), vec![0, 1, 2, 3, 4]);
        assert_eq!(ticks(30, 6.0, 11.0), (0..30).step_by(2).collect::<Vec<_>>());
        assert_eq!(ticks(30, 4.0, 11.0), vec![0, 5, 10, 15, 20, 25]);
        assert!(ticks(0, 4.0, 11.0).is_empty());
    }

    #[test]
    fn a_diverging_scale_shows_the_sign_around_grey() {
        assert_eq!(diverge(0.0, 2.0), diverge(0.0, 0.0), "0 is grey");
        assert_eq!(diverge(2.0, 2.0), Color32::from_rgb(235, 90, 70));
        assert_eq!(diverge(-2.0, 2.0), Color32::from_rgb(70, 130, 235));
        assert_eq!(diverge(5.0, 2.0), diverge(2.0, 2.0), "clamped");
        let (half_up, half_down) = (diverge(1.0, 2.0), diverge(-1.0, 2.0));
        assert!(half_up.r() > half_up.b() && half_down.b() > half_down.r());
    }

    #[test]
    fn the_scale_runs_from_the_lowest_to_the_highest_value() {
        assert_eq!(heat(1.0, 1.0, 3.0), heat(0.0, 0.0, 1.0));
        assert_eq!(heat(3.0, 1.0, 3.0), heat(1.0, 0.0, 1.0));
        assert_eq!(heat(2.0, 2.0, 2.0), heat(0.0, 0.0, 1.0));
    }
}
