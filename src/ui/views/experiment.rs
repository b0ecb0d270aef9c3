//! Editing the experiment: prompt and variants, the token strip where the needle is chosen, and
//! the conditions (what each grid row does to the cache).

use egui::{RichText, Ui, Vec2};

use super::{BAD, WARN, named};
use crate::experiment::spec::{KvPart, PromptMode, Turn, Variant};
use crate::experiment::{Condition, LayerSet, Op, Span};
use crate::ui::app::KvlabApp;
use crate::ui::commands::Command;

/// The experiment: prompt turns, mode, variants, generation settings.
pub fn experiment_editor(app: &mut KvlabApp, ui: &mut Ui) {
    let spec = &mut app.doc.spec;
    ui.heading("Experiment");
    ui.horizontal(|ui| {
        let label = ui.label("Name");
        ui.text_edit_singleline(&mut spec.name)
            .labelled_by(label.id);
    });
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
    ui.label(RichText::new("Write {needle} where the variants differ.").weak());
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
    ui.separator();
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
    ui.separator();
    ui.label(RichText::new("Generation").strong());
    ui.horizontal(|ui| {
        let label = ui.label("Tokens");
        ui.add(egui::DragValue::new(&mut spec.generation.max_tokens).range(1..=4096))
            .labelled_by(label.id);
        ui.checkbox(&mut spec.generation.stop_at_eog, "stop at end of turn");
    });
}

/// The tokenized prompts, one row of chips per variant; click / shift-click picks the needle.
pub fn token_strip(app: &mut KvlabApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        ui.heading("Tokens");
        if let Some(p) = &app.prepared {
            let how = if app.doc.spec.needle_span.is_some() {
                "chosen"
            } else {
                "found where the variants differ"
            };
            ui.label(format!("needle: {} ({how})", p.span));
            if app.doc.spec.needle_span.is_some()
                && ui
                    .button("Auto")
                    .on_hover_text("Use the positions where the variants differ")
                    .clicked()
            {
                app.doc.spec.needle_span = None;
            }
        }
    });
    if let Some(e) = &app.prepare_error {
        ui.label(RichText::new(e).color(BAD));
    }
    let Some(prepared) = app.prepared.clone() else {
        if app.model.is_none() {
            ui.label(RichText::new("Load a model to see the prompt's tokens.").weak());
        }
        return;
    };
    for w in &prepared.warnings {
        ui.label(RichText::new(format!("Note: {w}")).color(WARN));
    }
    let first = &prepared.prompts[0];
    let shift = ui.input(|i| i.modifiers.shift);
    let mut clicked: Option<usize> = None;
    egui::ScrollArea::horizontal()
        .id_salt("token-strip")
        .show(ui, |ui| {
            egui::Grid::new("tokens")
                .spacing(Vec2::new(2.0, 4.0))
                .show(ui, |ui| {
                    for p in &prepared.prompts {
                        ui.label(RichText::new(&p.name).strong());
                        for (pos, t) in p.tokens.iter().enumerate() {
                            let differs = prepared
                                .prompts
                                .iter()
                                .any(|q| q.tokens.get(pos).map(|x| x.id) != Some(t.id));
                            let in_span = prepared.span.positions().contains(&pos);
                            let mut text = RichText::new(t.piece.replace('\n', "¶")).monospace();
                            if differs {
                                text = text.color(WARN).strong();
                            }
                            let r = ui
                                .selectable_label(in_span, text)
                                .on_hover_text(format!("position {pos} · token id {}", t.id));
                            if r.clicked() {
                                clicked = Some(pos);
                            }
                        }
                        ui.end_row();
                    }
                });
        });
    if let Some(pos) = clicked {
        let cached = first.tokens.len().saturating_sub(1);
        if pos >= cached {
            app.error = Some(format!(
                "position {pos} is the last prompt token: it is fed after the edit, so it cannot be the needle"
            ));
        } else {
            let span = match (shift, app.doc.spec.needle_span.or(Some(prepared.span))) {
                (true, Some(s)) => Span {
                    start: s.start.min(pos),
                    end: (s.end).max(pos + 1),
                },
                _ => Span {
                    start: pos,
                    end: pos + 1,
                },
            };
            app.doc.spec.needle_span = Some(span);
        }
    }
}

/// The conditions: variant, intervention, layers, part; add, remove, seed grid.
pub fn conditions(app: &mut KvlabApp, ui: &mut Ui) {
    if app.is_read_only() {
        ui.heading("Conditions");
        for c in &app.doc.spec.conditions {
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
    let n_layer = app
        .model
        .as_ref()
        .map(|m| m.info.n_layer)
        .unwrap_or(32)
        .max(1);
    let names: Vec<String> = app
        .doc
        .spec
        .variants
        .iter()
        .map(|v| v.name.clone())
        .collect();
    ui.horizontal(|ui| {
        ui.heading("Conditions");
        if ui.button("Add condition").clicked() {
            app.doc.spec.conditions.push(Condition::new(
                names.first().cloned().unwrap_or_default(),
                Op::Zero,
            ));
        }
        if ui
            .button("Seed grid")
            .on_hover_text("none, zero, transplant and remove for every variant")
            .clicked()
        {
            app.queue(Command::SeedGrid);
        }
        if ui.button("Clear").clicked() {
            app.doc.spec.conditions.clear();
        }
    });
    let spec = &mut app.doc.spec;
    let mut remove = None;
    egui::Grid::new("conditions")
        .striped(true)
        .num_columns(6)
        .show(ui, |ui| {
            for (i, c) in spec.conditions.iter_mut().enumerate() {
                let combo = egui::ComboBox::from_id_salt(("cv", i))
                    .selected_text(c.variant.clone())
                    .width(60.0)
                    .show_ui(ui, |ui| {
                        for n in &names {
                            ui.selectable_value(&mut c.variant, n.clone(), n);
                        }
                    });
                named(combo.response, format!("Variant of condition {}", i + 1));
                let kind = match &c.op {
                    Op::None => "none",
                    Op::Zero => "zero",
                    Op::Transplant { .. } => "transplant",
                    Op::Remove => "remove",
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
                        if ui.selectable_label(kind == "remove", "remove").clicked() {
                            c.op = Op::Remove;
                            c.site.layers = LayerSet::All;
                            c.site.part = KvPart::Both;
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
                if let Op::Transplant { from } = &c.op {
                    ui.label(format!("from {from}"));
                } else {
                    ui.label("");
                }
                let removing = c.op == Op::Remove;
                ui.add_enabled_ui(!removing, |ui| {
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
                });
                ui.add_enabled_ui(!removing, |ui| {
                    ui.horizontal(|ui| {
                        ui.selectable_value(&mut c.site.part, KvPart::K, "K");
                        ui.selectable_value(&mut c.site.part, KvPart::V, "V");
                        ui.selectable_value(&mut c.site.part, KvPart::Both, "K+V");
                    });
                });
                if ui
                    .small_button("×")
                    .on_hover_text("Remove this condition")
                    .clicked()
                {
                    remove = Some(i);
                }
                ui.end_row();
            }
        });
    if let Some(i) = remove {
        spec.conditions.remove(i);
    }
}
