//! The experiment editor: name, prompt mode and turns, variants and their expected answers,
//! generation settings. It edits the document's spec directly and needs nothing else: the
//! spec is what the user edits.

use egui::{RichText, Ui};

use super::{hint, named};
use crate::experiment::ExperimentSpec;
use crate::experiment::spec::{PromptMode, Turn, Variant};
use crate::ui::document::Document;

/// The experiment: prompt turns, mode, variants, generation settings.
#[derive(Debug, Default)]
pub struct ExperimentEditor;

impl ExperimentEditor {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, doc: &mut Document) {
        let spec = &mut doc.spec;
        ui.heading("Experiment");
        ui.horizontal(|ui| {
            let label = ui.label("Name");
            ui.text_edit_singleline(&mut spec.name)
                .labelled_by(label.id);
        });
        prompt(ui, spec);
        ui.separator();
        variants(ui, spec);
        ui.separator();
        ui.label(RichText::new("Generation").strong());
        ui.horizontal(|ui| {
            let label = ui.label("Tokens");
            ui.add(egui::DragValue::new(&mut spec.generation.max_tokens).range(1..=4096))
                .labelled_by(label.id);
            ui.checkbox(&mut spec.generation.stop_at_eog, "stop at end of turn");
        });
        cache_types(ui, spec);
    }
}

/// The KV cache's number types: quantized ones shrink the cache (and change the numbers a run
/// measures a little; every intervention works on them).
fn cache_types(ui: &mut Ui, spec: &mut ExperimentSpec) {
    use crate::engine::CacheType;
    ui.horizontal(|ui| {
        ui.label("KV cache").on_hover_text(
            "The number types of the cache's K and V (f16 by default). q8_0 halves the cache, \
             q4_0 quarters it; a quantized V runs with flash attention.",
        );
        for (name, t) in [("keys", &mut spec.cache.k), ("values", &mut spec.cache.v)] {
            egui::ComboBox::new(("cache-type", name), name)
                .selected_text(t.name())
                .show_ui(ui, |ui| {
                    for c in CacheType::ALL {
                        ui.selectable_value(t, c, c.name());
                    }
                });
        }
    });
}

/// The prompt mode and the turns.
fn prompt(ui: &mut Ui, spec: &mut ExperimentSpec) {
    ui.horizontal(|ui| {
        ui.label("Prompt");
        ui.selectable_value(&mut spec.prompt.mode, PromptMode::Plain, "Plain text");
        ui.selectable_value(
            &mut spec.prompt.mode,
            PromptMode::ChatTemplate,
            "Chat template",
        );
        ui.selectable_value(
            &mut spec.prompt.mode,
            PromptMode::ChatBuiltin,
            "Built-in template",
        );
    });
    hint(ui, "Write {needle} where the variants differ.");
    let mut remove_turn = None;
    for (i, turn) in spec.prompt.turns.iter_mut().enumerate() {
        ui.horizontal(|ui| {
            let combo = egui::ComboBox::from_id_salt(("role", i))
                .selected_text(turn.role.clone())
                .width(80.0)
                .show_ui(ui, |ui| {
                    for r in ["system", "user", "assistant"] {
                        ui.selectable_value(&mut turn.role, r.to_string(), r);
                    }
                });
            named(combo.response, format!("Role of turn {}", i + 1));
            if ui
                .small_button("×")
                .on_hover_text("Remove this turn")
                .clicked()
            {
                remove_turn = Some(i);
            }
        });
        named(
            ui.add(
                egui::TextEdit::multiline(&mut turn.content)
                    .desired_rows(2)
                    .desired_width(f32::INFINITY),
            ),
            format!("Text of turn {}", i + 1),
        );
    }
    if let Some(i) = remove_turn {
        spec.prompt.turns.remove(i);
    }
    if ui.button("Add turn").clicked() {
        let role = match spec.prompt.turns.last().map(|t| t.role.as_str()) {
            Some("user") => "assistant",
            _ => "user",
        };
        spec.prompt.turns.push(Turn {
            role: role.into(),
            content: String::new(),
        });
    }
}

/// The variants: name, needle text, first expected answer.
fn variants(ui: &mut Ui, spec: &mut ExperimentSpec) {
    ui.label(RichText::new("Variants").strong());
    let mut remove_variant = None;
    for (i, v) in spec.variants.iter_mut().enumerate() {
        ui.horizontal(|ui| {
            named(
                ui.add(
                    egui::TextEdit::singleline(&mut v.name)
                        .desired_width(60.0)
                        .hint_text("name"),
                ),
                format!("Name of variant {}", i + 1),
            );
            named(
                ui.add(
                    egui::TextEdit::singleline(&mut v.needle)
                        .desired_width(120.0)
                        .hint_text("needle text"),
                ),
                format!("Needle of variant {}", i + 1),
            );
            if ui
                .small_button("×")
                .on_hover_text("Remove this variant")
                .clicked()
            {
                remove_variant = Some(i);
            }
        });
        if let Some(answer) = v.expected.first_mut() {
            ui.horizontal(|ui| {
                let label = ui.label(RichText::new("expects").weak());
                ui.add(egui::TextEdit::singleline(answer).desired_width(f32::INFINITY))
                    .labelled_by(label.id);
            });
        }
    }
    if let Some(i) = remove_variant {
        let name = spec.variants.remove(i).name;
        spec.conditions.retain(|c| c.variant != name);
    }
    if ui.button("Add variant").clicked() {
        let n = spec.variants.len() + 1;
        spec.variants.push(Variant {
            name: format!("V{n}"),
            needle: String::new(),
            expected: vec![],
            keywords: vec![],
        });
    }
}
