//! The sweep tab: choose a sweep, run it (progress and Stop are in the status bar), and see each
//! item's effect — a heat strip over the prompt's tokens for position sweeps, a layer × position
//! heatmap, bars for span and layer sweeps.

use egui::{Color32, RichText, Ui, Vec2};
use egui_plot::Plot;

use super::analysis::{HeatAxes, SLIDING_MARK, SLIDING_ROW, heatmap};
use super::{BAD, GOOD, ViewCtx, WARN, hint, set_pref_if, text_on};
use crate::experiment::Span;
use crate::experiment::sweep::{SweepKind, SweepOp, SweepResults};
use crate::ui::commands::{Command, Commands};
use crate::ui::document::Document;
use crate::ui::prefs::{PrefEdit, SweepChoice};

/// The sweep tab.
#[derive(Debug, Default)]
pub struct SweepsTab;

impl SweepsTab {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &Document, cmds: &mut Commands) {
        controls(ui, ctx, doc, cmds);
        let Some(r) = &doc.sweep else {
            hint(
                ui,
                "Each item is measured by the expected answers' preference (or the own baseline's log-prob).",
            );
            return;
        };
        // Indices and tokens come from the experiment the sweep was measured on, never from
        // the prompt on screen (which may have changed since).
        let measured_on = r.spec.as_ref().unwrap_or(&doc.spec);
        let own = measured_on.variant_index(&r.sweep.variant).unwrap_or(0);
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
        let current = doc.sweep_is_current();
        if !current {
            let why = if r.spec.is_some() {
                SWEEP_STALE_TEXT
            } else {
                SWEEP_UNKNOWN_TEXT
            };
            ui.label(RichText::new(why).color(WARN));
        }
        if r.shared_cache {
            ui.label(RichText::new(crate::experiment::sweep::SHARED_CACHE_NOTE).weak());
        }
        // The needle the sweep was measured around: the chosen one, or (for the experiment on
        // screen) the one found where the variants differ.
        let needle = measured_on
            .needle_span
            .or_else(|| ctx.prepared.filter(|_| current).map(|p| p.span));
        ui.add_enabled_ui(current, |ui| draw(ui, r, &effects, needle));
    }
}

/// What a sweep measured on an earlier version of the experiment says above it.
pub const SWEEP_STALE_TEXT: &str = "From an earlier version of the experiment — Run sweep to refresh. \
     Its items are labelled with the prompt it was measured on.";

/// What a sweep from a file that did not record its experiment says above it.
pub const SWEEP_UNKNOWN_TEXT: &str = "From an older session file that did not record which experiment \
     this sweep was measured on — Run sweep to refresh.";

/// The sweep's effects: a strip, a heatmap or bars, by kind.
fn draw(ui: &mut Ui, r: &SweepResults, effects: &[f64], needle: Option<Span>) {
    match r.sweep.kind {
        SweepKind::Position { .. } => position_strip(ui, r, effects, needle),
        SweepKind::PositionLayer { .. } => position_layer_map(ui, r, effects, needle),
        _ => {
            // Single sliding layers get their own colour and legend entry.
            let (sliding, other): (Vec<_>, Vec<_>) = effects
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let bar = egui_plot::Bar::new(i as f64, *e).name(r.points[i].label.clone());
                    (r.slides(&r.points[i]), bar)
                })
                .partition(|(s, _)| *s);
            sliding_note(ui, r);
            Plot::new("sweep-bars")
                .height(220.0)
                .y_axis_label("effect")
                .legend(egui_plot::Legend::default())
                .show(ui, |plot| {
                    let bars =
                        |v: Vec<(bool, egui_plot::Bar)>| v.into_iter().map(|b| b.1).collect();
                    plot.bar_chart(egui_plot::BarChart::new("effect", bars(other)));
                    if !sliding.is_empty() {
                        plot.bar_chart(
                            egui_plot::BarChart::new(SLIDING_ROW, bars(sliding))
                                .color(SLIDING_MARK),
                        );
                    }
                });
        }
    }
}

/// What to sweep, with which intervention, on which variant's prompt, and the Run sweep button.
fn controls(ui: &mut Ui, ctx: &ViewCtx, doc: &Document, cmds: &mut Commands) {
    let prefs = ctx.prefs;
    let (mut choice, mut op, mut variant) =
        (prefs.sweep_choice, prefs.sweep_op, prefs.sweep_variant);
    ui.horizontal_wrapped(|ui| {
        ui.selectable_value(&mut choice, SweepChoice::Position, "Every position");
        ui.selectable_value(&mut choice, SweepChoice::Span, "Needle + next k");
        ui.selectable_value(&mut choice, SweepChoice::Layer, "Layers");
        ui.selectable_value(&mut choice, SweepChoice::PositionLayer, "Position × layer");
        ui.separator();
        egui::ComboBox::new("sweep-op", "Sweep intervention")
            .selected_text(op.label())
            .show_ui(ui, |ui| {
                for o in SweepOp::ALL {
                    ui.selectable_value(&mut op, o, o.label())
                        .on_hover_text(sweep_op_help(o));
                }
            })
            .response
            .on_hover_text(sweep_op_help(op));
        ui.separator();
        for (i, v) in doc.spec.variants.iter().enumerate() {
            ui.selectable_value(&mut variant, i, format!("{} prompt", v.name));
        }
        set_pref_if(cmds, prefs.sweep_choice, choice, PrefEdit::SweepChoice);
        set_pref_if(cmds, prefs.sweep_op, op, PrefEdit::SweepOp);
        set_pref_if(cmds, prefs.sweep_variant, variant, PrefEdit::SweepVariant);
        if ui
            .add_enabled(ctx.can_run(), egui::Button::new("Run sweep"))
            .on_disabled_hover_text(ctx.run_blocker.unwrap_or_default())
            .clicked()
        {
            cmds.push(Command::RunSweep);
        }
    });
}

/// What a sweep intervention does, for its tooltip.
fn sweep_op_help(op: SweepOp) -> &'static str {
    match op {
        SweepOp::Zero => "Each item's rows set to zero",
        SweepOp::Remove => "Each item's cells taken out of the sequence (all layers)",
        SweepOp::Mean => "Each item's rows replaced by their mean over every variant",
        SweepOp::Noise => {
            "Gaussian noise of 3σ (each layer's spread over the prompt) added to each item's rows, the same draw for every item"
        }
        SweepOp::Transplant => {
            "Each item's rows copied from the next variant (the other one of a pair) at the same positions"
        }
    }
}

/// A position sweep: the tokens of the prompt it was measured on, each coloured by its effect
/// (older files without those tokens show the items' labels), the needle framed and underlined.
pub(super) fn position_strip(ui: &mut Ui, r: &SweepResults, effects: &[f64], needle: Option<Span>) {
    let max = effects.iter().map(|e| e.abs()).fold(1e-9, f64::max);
    let tokens = &r.tokens;
    let bg = ui.visuals().panel_fill;
    let ink = ui.visuals().strong_text_color();
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing = Vec2::new(1.0, 3.0);
        for (p, e) in r.points.iter().zip(effects) {
            let t = (e.abs() / max) as f32;
            let base = if *e < 0.0 { BAD } else { GOOD };
            let fill = blend(bg, base, t);
            let piece = tokens
                .get(p.index)
                .map(|t| t.piece.replace('\n', "¶"))
                .unwrap_or_else(|| p.label.clone());
            let is_needle = needle.is_some_and(|n| n.positions().contains(&p.index));
            let mut text = RichText::new(&piece)
                .monospace()
                .background_color(fill)
                .color(text_on(fill));
            if is_needle {
                text = text.underline().strong();
            }
            let resp = ui.label(text);
            if is_needle {
                ui.painter().rect_stroke(
                    resp.rect.expand(1.0),
                    2.0,
                    egui::Stroke::new(1.5, ink),
                    egui::StrokeKind::Outside,
                );
                resp.on_hover_text(format!("{} (the needle): effect {e:+.3}", p.label));
            } else {
                resp.on_hover_text(format!("{}: effect {e:+.3}", p.label));
            }
        }
    });
}

/// `over` laid over `under` with opacity `t` (0..1), as the eye sees it.
fn blend(under: Color32, over: Color32, t: f32) -> Color32 {
    let t = t.clamp(0.0, 1.0);
    let m = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * t).round() as u8;
    Color32::from_rgb(
        m(under.r(), over.r()),
        m(under.g(), over.g()),
        m(under.b(), over.b()),
    )
}

/// A position × layer sweep: rows are layers, columns positions, colour |effect|, the needle's
/// columns framed.
fn position_layer_map(ui: &mut Ui, r: &SweepResults, effects: &[f64], needle: Option<Span>) {
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
    for (p, e) in r.points.iter().zip(effects) {
        if let Some(l) = p.layer {
            rows[l as usize][p.index - first] = e.abs() as f32;
        }
    }
    ui.label(format!(
        "|effect| per layer (rows) and position (columns, from {first})"
    ));
    let token = |pos: usize| r.tokens.get(pos).map(|t| t.piece.clone());
    let marked = needle.map(|n| {
        (
            n.start.saturating_sub(first)..n.end.saturating_sub(first),
            "the needle",
        )
    });
    let axes = HeatAxes {
        first_col: first,
        col_text: Some(&token),
        marked,
        ..HeatAxes::new("layer", "position").sliding(&r.sliding_layers)
    };
    sliding_note(ui, r);
    let title = format!("{} one cell", r.sweep.op.short());
    heatmap(ui, &title, &rows, Vec2::new(6.0, 6.0), &axes);
}

/// Says which layers slide, when the sweep's model has sliding-window layers.
fn sliding_note(ui: &mut Ui, r: &SweepResults) {
    if let Some(w) = r.sliding_window
        && !r.sliding_layers.is_empty()
    {
        ui.label(
            RichText::new(format!(
                "{} of the model's layers slide (marked): they attend to the last {w} tokens only.",
                r.sliding_layers.len()
            ))
            .color(SLIDING_MARK),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_faint_fill_is_the_background_and_a_full_one_the_colour() {
        let bg = Color32::from_rgb(248, 248, 248);
        assert_eq!(blend(bg, BAD, 0.0), bg);
        assert_eq!(blend(bg, BAD, 1.0), BAD);
    }
}
