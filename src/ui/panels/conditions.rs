//! The conditions: what each grid row does to the cache (variant, intervention, layers, K/V
//! part); add, remove, the seed grid. Read-only as a list when the results came from another
//! model.

use egui::Ui;

use super::{ViewCtx, named};
use crate::experiment::spec::KvPart;
use crate::experiment::{Condition, LayerSet, Op};
use crate::ui::commands::{Command, Commands};
use crate::ui::document::Document;

/// The conditions editor.
#[derive(Debug, Default)]
pub struct ConditionsPanel;

impl ConditionsPanel {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &mut Document, cmds: &mut Commands) {
        if ctx.read_only {
            ui.heading("Conditions");
            for c in &doc.spec.conditions {
                ui.label(format!(
                    "{} ({}) — layers {}, {:?}",
                    c.row_label(),
                    c.variant,
                    c.site.layers,
                    c.site.part
                ));
            }
            return;
        }
        // Layer ranges are a model's: before one is loaded, no made-up layer count is shown.
        let n_layer = ctx.model.map(|m| m.info.n_layer.max(1));
        let n_head_kv = ctx.model.map(|m| m.info.n_head_kv);
        let names: Vec<String> = doc.spec.variants.iter().map(|v| v.name.clone()).collect();
        ui.horizontal(|ui| {
            ui.heading("Conditions");
            if ui.button("Add condition").clicked() {
                doc.spec.conditions.push(Condition::new(
                    names.first().cloned().unwrap_or_default(),
                    Op::Zero,
                ));
            }
            if ui
                .button("Seed grid")
                .on_hover_text("none, zero, transplant and remove for every variant")
                .clicked()
            {
                cmds.push(Command::SeedGrid);
            }
            if ui.button("Clear").clicked() {
                doc.spec.conditions.clear();
            }
            let noisy = doc
                .spec
                .conditions
                .iter()
                .rposition(|c| matches!(c.op, Op::Noise { .. }));
            if let Some(last) = noisy
                && ui
                    .button("4 more noise draws")
                    .on_hover_text(
                        "Copies the last noise condition with the next four seeds: the grid then \
                         summarizes the draws (mean, spread, how many flip)",
                    )
                    .clicked()
            {
                let template = doc.spec.conditions[last].clone();
                let top = (doc.spec.conditions.iter())
                    .filter_map(|c| match c.op {
                        Op::Noise { seed, .. } => Some(seed),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                for k in 1..=4 {
                    let mut c = template.clone();
                    if let Op::Noise { seed, .. } = &mut c.op {
                        *seed = top + k;
                    }
                    doc.spec.conditions.insert(last + k as usize, c);
                }
            }
        });
        let mut remove = None;
        egui::Grid::new("conditions")
            .striped(true)
            .num_columns(7)
            .show(ui, |ui| {
                for (i, c) in doc.spec.conditions.iter_mut().enumerate() {
                    if condition_row(ui, i, c, &names, (n_layer, n_head_kv)) {
                        remove = Some(i);
                    }
                    ui.end_row();
                }
            });
        if let Some(i) = remove {
            doc.spec.conditions.remove(i);
        }
    }
}

/// One condition's row; returns whether its × was clicked.
fn condition_row(
    ui: &mut Ui,
    i: usize,
    c: &mut Condition,
    names: &[String],
    (n_layer, n_head_kv): (Option<u32>, Option<u32>),
) -> bool {
    let combo = egui::ComboBox::from_id_salt(("cv", i))
        .selected_text(c.variant.clone())
        .width(60.0)
        .show_ui(ui, |ui| {
            for n in names {
                ui.selectable_value(&mut c.variant, n.clone(), n);
            }
        });
    named(combo.response, format!("Variant of condition {}", i + 1));
    intervention_combo(ui, i, c, names);
    match &mut c.op {
        Op::Transplant { from } => {
            ui.label(format!("from {from}"));
        }
        Op::Noise { scale, seed } => noise_settings(ui, i, scale, seed),
        Op::Mean { .. } => {
            ui.label(c.op.short());
        }
        _ => {
            ui.label("");
        }
    };
    let removing = c.op == Op::Remove;
    ui.add_enabled_ui(!removing, |ui| match n_layer {
        Some(n) => layer_range(ui, i, c, n),
        None => {
            ui.label(format!("layers {}", c.site.layers))
                .on_hover_text("Load a model to choose layers by number.");
        }
    });
    ui.add_enabled_ui(!removing, |ui| {
        ui.horizontal(|ui| {
            ui.selectable_value(&mut c.site.part, KvPart::K, "K");
            ui.selectable_value(&mut c.site.part, KvPart::V, "V");
            ui.selectable_value(&mut c.site.part, KvPart::Both, "K+V");
        });
    });
    ui.add_enabled_ui(!removing, |ui| match n_head_kv {
        Some(n) if n > 1 => head_choice(ui, i, c, n),
        _ => {
            ui.label(match &c.site.heads {
                None => "all heads".to_string(),
                Some(h) => format!("heads {}", join(h)),
            });
        }
    });
    ui.small_button("×")
        .on_hover_text("Remove this condition")
        .clicked()
}

/// A noise condition's σ (in units of each layer's spread) and seed. Several noise conditions
/// that differ only in their seed are summarized together (mean, spread, flips) under the grid.
fn noise_settings(ui: &mut Ui, i: usize, scale: &mut f32, seed: &mut u64) {
    ui.horizontal(|ui| {
        named(
            ui.add(
                egui::DragValue::new(scale)
                    .range(0.0..=100.0)
                    .speed(0.1)
                    .suffix(" σ"),
            ),
            format!("Noise scale of condition {}", i + 1),
        )
        .on_hover_text("σ of the noise in units of each layer's standard deviation over the prompt (causal tracing uses 3)");
        ui.label("seed");
        named(
            ui.add(egui::DragValue::new(seed)),
            format!("Noise seed of condition {}", i + 1),
        )
        .on_hover_text("The same seed draws the same noise; add conditions with other seeds to see the spread");
    });
}

/// The intervention: none, zero, remove, or a transplant from another variant.
fn intervention_combo(ui: &mut Ui, i: usize, c: &mut Condition, names: &[String]) {
    let kind = match &c.op {
        Op::None => "none",
        Op::Zero => "zero",
        Op::Transplant { .. } => "transplant",
        Op::Remove => "remove",
        Op::Mean { .. } => "mean",
        Op::Noise { .. } => "noise",
    };
    let combo = egui::ComboBox::from_id_salt(("ci", i))
        .selected_text(kind)
        .width(90.0)
        .show_ui(ui, |ui| {
            if ui.selectable_label(kind == "none", "none").clicked() {
                c.op = Op::None;
            }
            if ui.selectable_label(kind == "zero", "zero").clicked() {
                c.op = Op::Zero;
            }
            if ui
                .selectable_label(kind == "mean", "mean")
                .on_hover_text(
                    "The rows become their mean over every variant at the same positions",
                )
                .clicked()
            {
                c.op = Op::Mean { over: Vec::new() };
            }
            if ui
                .selectable_label(kind == "noise", "noise")
                .on_hover_text(
                    "Gaussian noise of 3 σ of each layer's values added to the rows (seed 0)",
                )
                .clicked()
            {
                c.op = Op::Noise {
                    scale: crate::experiment::spec::DEFAULT_NOISE_SCALE,
                    seed: 0,
                };
            }
            if ui.selectable_label(kind == "remove", "remove").clicked() {
                c.op = Op::Remove;
                c.site.layers = LayerSet::All;
                c.site.part = KvPart::Both;
                c.site.heads = None;
            }
            for n in names.iter().filter(|n| **n != c.variant) {
                if ui
                    .selectable_label(false, format!("transplant from {n}"))
                    .clicked()
                {
                    c.op = Op::Transplant { from: n.clone() };
                }
            }
        });
    named(
        combo.response,
        format!("Intervention of condition {}", i + 1),
    );
}

/// Which KV heads the intervention edits (a K or V row holds `n_head_kv` heads one after
/// another): all, or a chosen few, as per-head ablations need.
fn head_choice(ui: &mut Ui, i: usize, c: &mut Condition, n_head_kv: u32) {
    let text = match &c.site.heads {
        None => "all heads".to_string(),
        Some(h) => format!("heads {}", join(h)),
    };
    let menu = ui.menu_button(text, |ui| {
        let mut all = c.site.heads.is_none();
        if ui.checkbox(&mut all, "all heads").changed() {
            c.site.heads = if all {
                None
            } else {
                Some(std::iter::once(0).collect())
            };
        }
        ui.separator();
        for h in 0..n_head_kv {
            let mut on = c.site.heads.as_ref().is_none_or(|s| s.contains(&h));
            let label = format!("KV head {h}");
            if named(
                ui.checkbox(&mut on, label.clone()),
                format!("{label} of condition {}", i + 1),
            )
            .changed()
            {
                let mut set = c
                    .site
                    .heads
                    .clone()
                    .unwrap_or_else(|| (0..n_head_kv).collect());
                if on {
                    set.insert(h);
                } else {
                    set.remove(&h);
                }
                // Every head is "all"; no head at all would edit nothing: keep one.
                c.site.heads = match set.len() as u32 {
                    n if n == n_head_kv => None,
                    0 => Some(std::iter::once(h).collect()),
                    _ => Some(set),
                };
            }
        }
    });
    named(menu.response, format!("Heads of condition {}", i + 1));
}

/// "0,2,3".
fn join(heads: &std::collections::BTreeSet<u32>) -> String {
    heads
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The first and last layer edited.
fn layer_range(ui: &mut Ui, i: usize, c: &mut Condition, n_layer: u32) {
    let layers = c.site.layers.resolve(n_layer);
    let (mut lo, mut hi) = (
        *layers.first().unwrap_or(&0),
        *layers.last().unwrap_or(&(n_layer - 1)),
    );
    ui.horizontal(|ui| {
        ui.label("layers");
        let a = named(
            ui.add(egui::DragValue::new(&mut lo).range(0..=n_layer - 1)),
            format!("First layer of condition {}", i + 1),
        );
        ui.label("–");
        let b = named(
            ui.add(egui::DragValue::new(&mut hi).range(0..=n_layer - 1)),
            format!("Last layer of condition {}", i + 1),
        );
        if a.changed() || b.changed() {
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            c.site.layers = if lo == 0 && hi == n_layer - 1 {
                LayerSet::All
            } else {
                LayerSet::parse(&format!("{lo}-{hi}")).unwrap_or_default()
            };
        }
    });
}
