//! The analysis views under the grid: probe chart, score table, KV difference heatmaps and
//! sweeps.

use egui::{Color32, RichText, Sense, Ui, Vec2};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::{BAD, GOOD, verdict_color};
use crate::experiment::grid;
use crate::ui::app::KvlabApp;
use crate::ui::commands::Command;

/// Probe-token probability per step, one line per condition.
pub fn probe_chart(app: &mut KvlabApp, ui: &mut Ui) {
    let Some(r) = &app.doc.results else {
        ui.label(RichText::new("No results yet.").weak());
        return;
    };
    if r.spec.probes.is_empty() {
        ui.label("The experiment has no probes.");
        return;
    }
    let probe = app.prefs.probe_index.min(r.spec.probes.len() - 1);
    ui.horizontal(|ui| {
        ui.label("Probe");
        for (i, p) in r.spec.probes.iter().enumerate() {
            ui.selectable_value(&mut app.prefs.probe_index, i, format!("{p:?}"));
        }
    });
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

/// Each condition's scores: the verdict with the numbers it compares (each variant's expected
/// answers, summed), then, labelled as what they are, the mean per-token log-prob of each
/// variant's baseline text under the edited cache.
pub fn score_table(app: &mut KvlabApp, ui: &mut Ui) {
    let Some(r) = &app.doc.results else {
        ui.label(RichText::new("No results yet.").weak());
        return;
    };
    ui.add_enabled_ui(app.doc.results_are_current(), |ui| {
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

fn heat(value: f32, max: f32) -> Color32 {
    let t = if max > 0.0 {
        (value / max).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let c = |a: f32, b: f32| (a + (b - a) * t) as u8;
    Color32::from_rgb(c(20.0, 255.0), c(24.0, 200.0), c(60.0, 40.0))
}

fn heatmap(
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

/// The K/V difference between the first two variants: layer × position, and one layer's
/// position × channel (the seed's figures).
pub fn kv_delta(app: &mut KvlabApp, ui: &mut Ui) {
    let n_layer = app
        .model
        .as_ref()
        .map(|m| m.info.n_layer as usize)
        .unwrap_or(1);
    ui.horizontal(|ui| {
        let label = ui.label("Layer for the position × channel view");
        ui.add(
            egui::DragValue::new(&mut app.prefs.delta_layer).range(0..=n_layer.saturating_sub(1)),
        )
        .labelled_by(label.id);
        ui.label(RichText::new("(recorded at the next run)").weak());
    });
    let Some(d) = app.doc.results.as_ref().and_then(|r| r.kv_delta.as_ref()) else {
        ui.label(
            RichText::new("No K/V delta yet (it needs two variants of the same length).").weak(),
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

/// Sweeps: choose, run (with progress and Stop in the status bar), and see each item's effect —
/// a heat strip over the prompt's tokens for position sweeps, bars for span and layer sweeps.
pub fn sweeps(app: &mut KvlabApp, ui: &mut Ui) {
    use crate::ui::prefs::SweepChoice;
    ui.horizontal(|ui| {
        ui.selectable_value(
            &mut app.prefs.sweep_choice,
            SweepChoice::Position,
            "Every position",
        );
        ui.selectable_value(
            &mut app.prefs.sweep_choice,
            SweepChoice::Span,
            "Needle + next k",
        );
        ui.selectable_value(&mut app.prefs.sweep_choice, SweepChoice::Layer, "Layers");
        ui.selectable_value(
            &mut app.prefs.sweep_choice,
            SweepChoice::PositionLayer,
            "Position × layer",
        );
        ui.separator();
        ui.selectable_value(&mut app.prefs.sweep_remove, false, "zero");
        ui.selectable_value(&mut app.prefs.sweep_remove, true, "remove");
        ui.separator();
        let names: Vec<String> = app
            .doc
            .spec
            .variants
            .iter()
            .map(|v| v.name.clone())
            .collect();
        for (i, n) in names.iter().enumerate() {
            ui.selectable_value(&mut app.prefs.sweep_variant, i, format!("{n} prompt"));
        }
        if ui
            .add_enabled(app.can_run(), egui::Button::new("Run sweep"))
            .clicked()
        {
            app.queue(Command::RunSweep);
        }
    });
    let Some(r) = &app.doc.sweep else {
        ui.label(RichText::new("Each item is measured by the expected answers' preference (or the own baseline's log-prob).").weak());
        return;
    };
    let own = app.doc.spec.variant_index(&r.sweep.variant).unwrap_or(0);
    let effects = r.effects(own);
    let kind = r.sweep.kind.name();
    let kind = format!("{}{} sweep", kind[..1].to_uppercase(), &kind[1..]);
    ui.label(format!(
        "{} of {} on {} — {}; effect against no intervention{}",
        kind,
        r.sweep.op.short(),
        r.sweep.variant,
        r.measure,
        if r.complete {
            ""
        } else {
            " (stopped early: partial)"
        }
    ));
    let max = effects.iter().map(|e| e.abs()).fold(1e-9, f64::max);
    match r.sweep.kind {
        crate::experiment::sweep::SweepKind::Position { .. } => {
            let tokens = app
                .prepared
                .as_ref()
                .and_then(|p| p.prompts.iter().find(|q| q.name == r.sweep.variant))
                .map(|p| p.tokens.clone())
                .unwrap_or_default();
            ui.horizontal_wrapped(|ui| {
                ui.spacing_mut().item_spacing = Vec2::new(1.0, 3.0);
                for (p, e) in r.points.iter().zip(&effects) {
                    let t = (e.abs() / max) as f32;
                    let base = if *e < 0.0 { BAD } else { GOOD };
                    let fill = Color32::from_rgba_unmultiplied(
                        base.r(),
                        base.g(),
                        base.b(),
                        (t * 255.0) as u8,
                    );
                    let piece = tokens
                        .get(p.index)
                        .map(|t| t.piece.replace('\n', "¶"))
                        .unwrap_or_else(|| p.label.clone());
                    let text = RichText::new(piece).monospace().background_color(fill);
                    ui.label(text)
                        .on_hover_text(format!("{}: effect {e:+.3}", p.label));
                }
            });
        }
        crate::experiment::sweep::SweepKind::PositionLayer { .. } => {
            // Rows: layers; columns: positions; colour: |effect|.
            let n_layer = r
                .points
                .iter()
                .filter_map(|p| p.layer)
                .max()
                .map_or(0, |l| l as usize + 1);
            let first = r.points.first().map_or(0, |p| p.index);
            let n_pos = r
                .points
                .iter()
                .map(|p| p.index + 1 - first)
                .max()
                .unwrap_or(0);
            let mut rows = vec![vec![0f32; n_pos]; n_layer];
            for (p, e) in r.points.iter().zip(&effects) {
                if let Some(l) = p.layer {
                    rows[l as usize][p.index - first] = e.abs() as f32;
                }
            }
            ui.label(format!(
                "|effect| per layer (rows) and position (columns, from {first})"
            ));
            heatmap(
                ui,
                "zero one cell",
                &rows,
                Vec2::new(6.0, 6.0),
                "layer",
                "position",
            );
        }
        _ => {
            let bars: Vec<egui_plot::Bar> = effects
                .iter()
                .enumerate()
                .map(|(i, e)| egui_plot::Bar::new(i as f64, *e).name(r.points[i].label.clone()))
                .collect();
            Plot::new("sweep-bars")
                .height(220.0)
                .y_axis_label("effect")
                .show(ui, |plot| {
                    plot.bar_chart(egui_plot::BarChart::new("effect", bars))
                });
        }
    }
}
