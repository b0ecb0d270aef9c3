//! The Attention tab (runs with "capture attention"): for a chosen grid row, a layer × step
//! heatmap of attention to the needle, the same for its baseline and their difference; the
//! prompt tokens after the needle coloured by how much each read the needle while the prompt was
//! read (summed over layers, or one layer); and one layer's heads. It draws from
//! `results.attention` only (see `experiment::attention`), and greys out with the other views
//! when the experiment changed since the run.

use egui::{Color32, RichText, Ui, Vec2};

use super::analysis::{HeatAxes, heatmap};
use super::{ViewCtx, hint, set_pref_if};
use crate::experiment::RunResults;
use crate::experiment::attention::{AttentionResults, Measure, Scale, difference};
use crate::ui::commands::Commands;
use crate::ui::document::Document;
use crate::ui::prefs::PrefEdit;

/// What the tab shows: which condition, which layer's heads, the strip's layer.
#[derive(Debug, Default)]
pub struct AttentionTab {
    /// The condition (index in the results); at first the first that zeroes the needle.
    row: Option<usize>,
    /// The layer whose heads are shown.
    layer: usize,
    /// The strip's layer (`None`: summed over layers).
    strip_layer: Option<usize>,
}

/// Shown when the results have no attention.
pub const NO_ATTENTION_TEXT: &str = "These results have no attention: tick \"capture attention\" \
    next to Run and run again.";

impl AttentionTab {
    /// Draws the tab.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &Document, cmds: &mut Commands) {
        let mut on = ctx.prefs.attention;
        ui.checkbox(&mut on, "capture attention in the next run")
            .on_hover_text(super::frame::ATTENTION_HELP);
        set_pref_if(cmds, ctx.prefs.attention, on, PrefEdit::Attention);
        let Some(r) = &doc.results else {
            hint(ui, "No results yet.");
            return;
        };
        let Some(a) = &r.attention else {
            hint(ui, NO_ATTENTION_TEXT);
            return;
        };
        if r.conditions.is_empty() {
            hint(ui, "The experiment has no conditions.");
            return;
        }
        ui.add_enabled_ui(doc.results_are_current(), |ui| self.views(ui, doc, r, a));
    }

    fn views(&mut self, ui: &mut Ui, doc: &Document, r: &RunResults, a: &AttentionResults) {
        let first_zero = r
            .conditions
            .iter()
            .position(|c| c.op == crate::experiment::Op::Zero);
        let mut chosen = self
            .row
            .or(first_zero)
            .unwrap_or(0)
            .min(r.conditions.len() - 1);
        self.layer = self.layer.min(a.n_layer.saturating_sub(1));
        let name = |i: usize| format!("{} ({})", r.conditions[i].label, r.conditions[i].variant);
        ui.horizontal(|ui| {
            let label = ui.label("Row");
            egui::ComboBox::from_id_salt("attention-row")
                .selected_text(name(chosen))
                .show_ui(ui, |ui| {
                    for i in 0..r.conditions.len() {
                        if ui.selectable_value(&mut chosen, i, name(i)).clicked() {
                            self.row = Some(i);
                        }
                    }
                })
                .response
                .labelled_by(label.id);
        });
        let c = &r.conditions[chosen];
        let Some(vi) = r.variants.iter().position(|v| v.name == c.variant) else {
            return;
        };
        let (row, base) = (&a.conditions[chosen], &a.baselines[vi]);
        // The query token of each step: the last prompt token, then the generated ones.
        let last = r.variants[vi].tokens.last().map(|t| t.piece.clone());
        let row_tokens: Vec<String> = last
            .iter()
            .cloned()
            .chain(c.generation.steps.iter().map(|s| s.token.piece.clone()))
            .collect();
        let base_tokens: Vec<String> = last
            .into_iter()
            .chain(
                r.variants[vi]
                    .baseline
                    .steps
                    .iter()
                    .map(|s| s.token.piece.clone()),
            )
            .collect();
        ui.label(
            "Attention to the needle: mean over heads, per layer (rows) and step (columns; \
             step 0 is the last prompt token, then each generated token). Hover for values.",
        );
        let cond = row.layer_by_step(Measure::Needle, a.n_head, None);
        let baseline = base.layer_by_step(Measure::Needle, a.n_head, None);
        let n_steps = cond.first().map_or(1, Vec::len).max(1);
        let cell = Vec2::new((360.0 / n_steps as f32).clamp(3.0, 14.0), 6.0);
        let row_text = |s: usize| row_tokens.get(s).cloned();
        let base_text = |s: usize| base_tokens.get(s).cloned();
        ui.horizontal(|ui| {
            let axes = HeatAxes {
                col_text: Some(&row_text),
                ..HeatAxes::new("layer", "step")
            };
            ui.vertical(|ui| heatmap(ui, &name(chosen), &cond, cell, &axes));
            ui.add_space(12.0);
            let axes = HeatAxes {
                col_text: Some(&base_text),
                ..HeatAxes::new("layer", "step")
            };
            let title = format!("baseline {}", c.variant);
            ui.vertical(|ui| heatmap(ui, &title, &baseline, cell, &axes));
            ui.add_space(12.0);
            let axes = HeatAxes {
                diverging: true,
                ..HeatAxes::new("layer", "step")
            };
            let diff = difference(&cond, &baseline);
            ui.vertical(|ui| heatmap(ui, "row − baseline", &diff, cell, &axes));
        });
        ui.separator();
        self.strip(ui, r, a, vi);
        sweep_beside(ui, doc, &r.variants[vi].name);
        ui.separator();
        ui.horizontal(|ui| {
            let label = ui.label("Heads of layer");
            ui.add(egui::DragValue::new(&mut self.layer).range(0..=a.n_layer.saturating_sub(1)))
                .labelled_by(label.id);
        });
        ui.horizontal(|ui| {
            let axes = HeatAxes {
                col_text: Some(&row_text),
                ..HeatAxes::new("head", "step")
            };
            let heads = row.head_by_step(Measure::Needle, a.n_head, self.layer);
            let title = format!("{}, layer {}", name(chosen), self.layer);
            ui.vertical(|ui| heatmap(ui, &title, &heads, cell, &axes));
            ui.add_space(12.0);
            let axes = HeatAxes {
                col_text: Some(&base_text),
                ..HeatAxes::new("head", "step")
            };
            let heads = base.head_by_step(Measure::Needle, a.n_head, self.layer);
            let title = format!("baseline {}, layer {}", c.variant, self.layer);
            ui.vertical(|ui| heatmap(ui, &title, &heads, cell, &axes));
        });
    }

    /// The variant's prompt, each token after the needle coloured by its weight on the needle.
    fn strip(&mut self, ui: &mut Ui, r: &RunResults, a: &AttentionResults, vi: usize) {
        let pass = &a.variants[vi];
        ui.horizontal(|ui| {
            let label = ui.label(format!(
                "Which prompt tokens read the needle ({}): mean over heads,",
                r.variants[vi].name
            ));
            let text =
                |l: Option<usize>| l.map_or("summed over layers".into(), |l| format!("layer {l}"));
            egui::ComboBox::from_id_salt("attention-strip-layer")
                .selected_text(text(self.strip_layer))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.strip_layer, None, text(None));
                    for l in 0..a.n_layer {
                        ui.selectable_value(&mut self.strip_layer, Some(l), text(Some(l)));
                    }
                })
                .response
                .labelled_by(label.id);
        });
        let values = pass.strip(a.n_head, self.strip_layer);
        let scale = Scale::weights([&values]);
        let tokens = &r.variants[vi].tokens;
        ui.horizontal_wrapped(|ui| {
            ui.spacing_mut().item_spacing = Vec2::new(2.0, 2.0);
            for (i, t) in tokens.iter().enumerate() {
                let piece = t.piece.replace('\n', "¶");
                let mut text = RichText::new(&piece).monospace();
                let mut hover = format!("position {i}");
                if a.needle.positions().contains(&i) {
                    // Not a colour of the scale: the needle is what the others read.
                    text = text
                        .background_color(Color32::from_rgb(230, 120, 200))
                        .color(Color32::BLACK)
                        .strong();
                    hover += ", the needle";
                } else if let Some(v) = i
                    .checked_sub(pass.carriers.start)
                    .and_then(|k| values.get(k))
                {
                    let [red, g, b] = scale.rgb(*v);
                    let ink = if red as u32 + g as u32 + b as u32 > 400 {
                        Color32::BLACK
                    } else {
                        Color32::WHITE
                    };
                    text = text
                        .background_color(Color32::from_rgb(red, g, b))
                        .color(ink);
                    hover += &format!(": {v:.4} on the needle");
                }
                ui.label(text).on_hover_text(hover);
            }
        });
        let (_, hi) = scale.range();
        let mut top: Vec<(usize, f32)> = values.iter().copied().enumerate().collect();
        top.sort_by(|x, y| y.1.total_cmp(&x.1));
        let named: Vec<String> = top
            .iter()
            .take(5)
            .filter_map(|&(k, v)| {
                let t = tokens.get(pass.carriers.start + k)?;
                Some(format!("{:?} {v:.3}", t.piece))
            })
            .collect();
        ui.label(format!(
            "Colour scale 0 (dark) to {hi:.3} (bright). Read the needle most: {}",
            named.join(", ")
        ));
    }
}

/// Under the reading strip, the position sweep's strip of the same variant, when one measured on
/// this experiment exists: which tokens read the needle next to which tokens carry it.
fn sweep_beside(ui: &mut Ui, doc: &Document, variant: &str) {
    let sweep = doc.sweep.as_ref().filter(|s| {
        matches!(
            s.sweep.kind,
            crate::experiment::sweep::SweepKind::Position { .. }
        ) && s.sweep.variant == variant
            && doc.sweep_is_current()
    });
    let Some(s) = sweep else {
        hint(
            ui,
            format!(
                "Run a position sweep on the {variant} prompt (Sweeps tab) to see, under this \
                 strip, which tokens carry the needle."
            ),
        );
        return;
    };
    ui.label(format!(
        "Beside it, what each position carries: the position sweep of {} on {variant}",
        s.sweep.op.short()
    ));
    let own = doc.spec.variant_index(variant).unwrap_or(0);
    let needle = doc.results.as_ref().map(|r| r.needle_span);
    super::sweeps::position_strip(ui, s, &s.effects(own), needle);
}
