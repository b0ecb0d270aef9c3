//! The panels of the window. Each reads the app's state and queues commands; edits to the
//! experiment spec are direct (it is the document being edited).

use egui::{Color32, RichText, Sense, Ui, Vec2};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::app::{Busy, KvlabApp};
use super::state::Command;
use crate::experiment::grid::{self, preview};
use crate::experiment::spec::{KvPart, PromptMode, Turn, Variant};
use crate::experiment::{Condition, Intervention, LayerSet, Span};

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

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Menu line: file actions, theme, run controls.
pub fn top_bar(app: &mut KvlabApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        ui.heading("kvlab");
        ui.separator();
        ui.menu_button("Session", |ui| {
            if ui.button("Open session…  (Ctrl+O)").clicked() {
                app.queue(Command::Open);
                ui.close();
            }
            if ui.button("Save  (Ctrl+S)").clicked() {
                app.queue(Command::Save);
                ui.close();
            }
            if ui.button("Save as…  (Ctrl+Shift+S)").clicked() {
                app.queue(Command::SaveAs);
                ui.close();
            }
            ui.separator();
            if app.state.recent_sessions.is_empty() {
                ui.label(RichText::new("No recent sessions").weak());
            }
            for p in app.state.recent_sessions.clone() {
                if ui.button(p.display().to_string()).clicked() {
                    app.queue(Command::OpenSession(p));
                    ui.close();
                }
            }
        });
        if ui.button("Open model…").clicked() {
            app.queue(Command::PickModel);
        }
        ui.menu_button("Recent models", |ui| {
            if app.state.recent_models.is_empty() {
                ui.label("No recent models");
            }
            for p in app.state.recent_models.clone() {
                if ui.button(p.display().to_string()).clicked() {
                    app.queue(Command::LoadModel(p));
                    ui.close();
                }
            }
        });
        if ui
            .button("Seed experiment")
            .on_hover_text("Replace the experiment with the seed's")
            .clicked()
        {
            app.queue(Command::ResetToSeed);
        }
        ui.separator();
        let running = matches!(app.busy, Busy::Running { .. });
        if ui
            .add_enabled(
                app.can_run(),
                egui::Button::new(RichText::new("Run").strong()),
            )
            .on_hover_text("Ctrl+Enter")
            .clicked()
        {
            app.queue(Command::Run);
        }
        if ui
            .add_enabled(app.busy != Busy::Idle, egui::Button::new("Stop"))
            .on_hover_text("Esc")
            .clicked()
        {
            app.queue(Command::Stop);
        }
        if running {
            ui.spinner();
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let label = if app.state.dark_mode {
                "Light theme"
            } else {
                "Dark theme"
            };
            if ui.button(label).clicked() {
                app.state.dark_mode = !app.state.dark_mode;
                ui.ctx().set_theme(if app.state.dark_mode {
                    egui::Theme::Dark
                } else {
                    egui::Theme::Light
                });
            }
        });
    });
}

/// Status line: what runs, how fast, progress.
pub fn status_bar(app: &mut KvlabApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        match &app.busy {
            Busy::Idle => {}
            Busy::Loading(p) => {
                ui.add(
                    egui::ProgressBar::new(*p)
                        .desired_width(160.0)
                        .show_percentage(),
                );
            }
            Busy::Running { stage, done, total } => {
                let frac = *done as f32 / (*total).max(1) as f32;
                ui.add(
                    egui::ProgressBar::new(frac)
                        .desired_width(160.0)
                        .text(stage.clone()),
                );
                if let Some(t0) = app.live.started {
                    let s = t0.elapsed().as_secs_f32().max(1e-3);
                    ui.label(format!("{:.1} tokens/s", app.live.tokens as f32 / s));
                }
            }
        }
        ui.label(&app.status);
    });
}

/// The model: open, load by path, progress with Cancel, metadata, memory estimate.
pub fn model_panel(app: &mut KvlabApp, ui: &mut Ui) {
    ui.heading("Model");
    let mut path_text = app
        .state
        .model_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    ui.horizontal(|ui| {
        let label = ui.label("Model path");
        let edit = ui
            .add(
                egui::TextEdit::singleline(&mut path_text)
                    .hint_text("path/to/model.gguf")
                    .desired_width(200.0),
            )
            .labelled_by(label.id);
        if edit.changed() {
            app.state.model_path = (!path_text.is_empty()).then(|| path_text.clone().into());
        }
        let load = ui.add_enabled(
            app.busy == Busy::Idle && !path_text.is_empty(),
            egui::Button::new("Load"),
        );
        if load.clicked() || (edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter))) {
            app.queue(Command::LoadModel(path_text.clone().into()));
        }
    });
    if let Busy::Loading(p) = app.busy {
        ui.horizontal(|ui| {
            ui.add(
                egui::ProgressBar::new(p)
                    .show_percentage()
                    .desired_width(200.0),
            );
            if ui.button("Cancel").clicked() {
                app.queue(Command::Stop);
            }
        });
    }
    model_before_loading(app, ui);
    if let Some(m) = &app.model {
        let info = &m.info;
        let per_cell = crate::gguf::kv_bytes_per_cell(
            std::iter::repeat_n(info.n_head_kv, info.n_layer as usize),
            info.n_embd / info.n_head.max(1),
            info.n_embd / info.n_head.max(1),
        );
        let (kv_bytes, n_seq) = run_kv_estimate(app, per_cell);
        egui::Grid::new("model-info").num_columns(2).show(ui, |ui| {
            let mut row = |k: &str, v: String| {
                ui.label(RichText::new(k).weak());
                ui.label(v);
                ui.end_row();
            };
            row(
                "file",
                format!(
                    "{} ({})",
                    m.fingerprint.file_name,
                    mib(m.fingerprint.file_size)
                ),
            );
            row("architecture", info.architecture.clone());
            row("quantization", info.quantization.clone());
            row("layers", info.n_layer.to_string());
            row("heads", format!("{} (KV {})", info.n_head, info.n_head_kv));
            row("context", format!("{} trained", info.n_ctx_train));
            row(
                "chat template",
                if info.has_chat_template { "yes" } else { "no" }.into(),
            );
            row(
                "KV cache for a run",
                format!("≈ {} ({} sequences)", mib(kv_bytes), n_seq),
            );
        });
    } else if app.peek.is_none() {
        ui.label(
            RichText::new("No model loaded. Open a .gguf file or drop one on the window.").weak(),
        );
    }
    devices_and_offload(app, ui);
    ui.horizontal(|ui| {
        let label = ui.label("Threads");
        ui.add(egui::DragValue::new(&mut app.state.threads).range(1..=64))
            .labelled_by(label.id);
    });
}

/// The KV cache a run of the current experiment allocates, and its number of sequences (one
/// stream per variant and per condition). Before the prompts are tokenized, their length is
/// guessed from the text (about four characters a token; streams round up to 256 cells).
fn run_kv_estimate(app: &KvlabApp, bytes_per_cell: u64) -> (u64, u64) {
    let spec = &app.state.spec;
    let n_seq = (spec.variants.len() + spec.conditions.len()) as u64;
    let prompt = match &app.prepared {
        Some(p) => p.prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0) as u64,
        None => {
            let text: usize = spec.prompt.turns.iter().map(|t| t.content.len() + 8).sum();
            let needle = spec
                .variants
                .iter()
                .map(|v| v.needle.len())
                .max()
                .unwrap_or(0);
            ((text + needle) / 4) as u64
        }
    };
    let cells = crate::gguf::kv_cells_for_run(n_seq, prompt, spec.generation.max_tokens as u64);
    (cells * bytes_per_cell, n_seq)
}

/// What the chosen file's header says, before (or instead of) loading it: enough to know
/// whether it fits in memory.
fn model_before_loading(app: &KvlabApp, ui: &mut Ui) {
    let Some(peek) = &app.peek else { return };
    let shown = app.state.model_path.as_ref() == Some(&peek.path)
        && app.model.as_ref().is_none_or(|m| m.path != peek.path);
    if !shown {
        return;
    }
    match &peek.summary {
        None => {
            ui.label(RichText::new("Reading the file's metadata …").weak());
        }
        Some(Err(e)) => {
            ui.label(RichText::new(e).color(BAD));
        }
        Some(Ok(s)) => {
            let (kv_bytes, n_seq) = run_kv_estimate(app, s.kv_bytes_per_cell());
            ui.label(RichText::new("Before loading").strong());
            egui::Grid::new("model-peek").num_columns(2).show(ui, |ui| {
                let mut row = |k: &str, v: String| {
                    ui.label(RichText::new(k).weak());
                    ui.label(v);
                    ui.end_row();
                };
                if let Some(name) = &s.name {
                    row("name", name.clone());
                }
                row("architecture", s.architecture.clone());
                row(
                    "quantization",
                    s.quantization.clone().unwrap_or_else(|| "unknown".into()),
                );
                row("layers", s.n_layer.to_string());
                row("context", format!("{} trained", s.n_ctx_train));
                row(
                    "memory needed",
                    format!(
                        "≈ {} (weights {} + KV cache {} for {} sequences)",
                        mib(s.file_size + kv_bytes),
                        mib(s.file_size),
                        mib(kv_bytes),
                        n_seq
                    ),
                );
            });
        }
    }
}

/// The devices llama.cpp sees, the GPU-layers slider (in builds with a GPU backend, when a GPU
/// is present) and where the KV cache lives.
fn devices_and_offload(app: &mut KvlabApp, ui: &mut Ui) {
    ui.label(RichText::new("Devices").strong());
    if app.devices.is_empty() {
        ui.label(RichText::new("starting llama.cpp …").weak());
    }
    for d in &app.devices {
        ui.label(d.summary());
    }
    let n_layer = app.model.as_ref().map(|m| m.info.n_layer).or_else(|| {
        app.peek
            .as_ref()
            .and_then(|p| p.summary.as_ref())
            .and_then(|s| s.as_ref().ok())
            .map(|s| s.n_layer)
    });
    let has_gpu = app.devices.iter().any(|d| d.is_gpu);
    if has_gpu {
        // llama.cpp counts the output layer too: n_layer + 1 is every layer.
        let all = n_layer.map_or(100, |n| n + 1);
        let mut value = app.state.gpu_layers.unwrap_or(all).min(all);
        ui.horizontal(|ui| {
            let slider = ui.add(
                egui::Slider::new(&mut value, 0..=all)
                    .text("GPU layers")
                    .custom_formatter(move |v, _| {
                        if v as u32 >= all {
                            "all".into()
                        } else {
                            format!("{v}")
                        }
                    }),
            );
            if slider.changed() {
                app.state.gpu_layers = (value < all).then_some(value);
            }
            if let Some(m) = &app.model
                && m.gpu_layers != app.state.gpu_layers
                && app.busy == Busy::Idle
                && ui.button("Reload to apply").clicked()
            {
                app.queue(Command::LoadModel(m.path.clone()));
            }
        });
    } else if !app.devices.is_empty() {
        let why = if crate::engine::compiled_backends().len() > 1 {
            "no GPU device found"
        } else {
            "this build has no GPU backend (see the README: FEATURES=cuda, metal or vulkan)"
        };
        ui.label(RichText::new(format!("GPU layers: none, {why}")).weak());
    }
    if let Some(n_layer) = n_layer
        && !app.devices.is_empty()
    {
        let layers = app
            .model
            .as_ref()
            .map_or(app.state.gpu_layers, |m| m.gpu_layers);
        ui.label(format!(
            "KV cache: {}",
            crate::engine::kv_cache_home(&app.devices, layers, n_layer)
        ))
        .on_hover_text(
            "KV surgery works wherever the cache lives: llama.cpp copies a sequence's state \
             through host memory.",
        );
    }
}

/// The experiment: prompt turns, mode, variants, generation settings.
pub fn experiment_editor(app: &mut KvlabApp, ui: &mut Ui) {
    let spec = &mut app.state.spec;
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
            let how = if app.state.spec.needle_span.is_some() {
                "chosen"
            } else {
                "found where the variants differ"
            };
            ui.label(format!("needle: {} ({how})", p.span));
            if app.state.spec.needle_span.is_some()
                && ui
                    .button("Auto")
                    .on_hover_text("Use the positions where the variants differ")
                    .clicked()
            {
                app.state.spec.needle_span = None;
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
            let span = match (shift, app.state.spec.needle_span.or(Some(prepared.span))) {
                (true, Some(s)) => Span {
                    start: s.start.min(pos),
                    end: (s.end).max(pos + 1),
                },
                _ => Span {
                    start: pos,
                    end: pos + 1,
                },
            };
            app.state.spec.needle_span = Some(span);
        }
    }
}

/// Free-text notes saved with the session.
pub fn notes(app: &mut KvlabApp, ui: &mut Ui) {
    ui.heading("Notes");
    let label = ui.label(RichText::new("Saved with the session and shown in reports.").weak());
    ui.add(
        egui::TextEdit::multiline(&mut app.state.notes)
            .desired_rows(3)
            .desired_width(f32::INFINITY),
    )
    .labelled_by(label.id);
}

/// Shown when the results came from another model than the loaded one.
pub fn read_only_banner(app: &mut KvlabApp, ui: &mut Ui) {
    if !app.is_read_only() {
        return;
    }
    let from = app
        .results_model
        .as_ref()
        .map(|m| format!("{} ({})", m.fingerprint.file_name, m.path.display()))
        .unwrap_or_default();
    let loaded = app
        .model
        .as_ref()
        .map(|m| format!("the loaded model is {}", m.fingerprint.file_name))
        .unwrap_or_else(|| "no model is loaded".into());
    egui::Frame::group(ui.style())
        .fill(ui.visuals().faint_bg_color)
        .show(ui, |ui| {
            ui.label(
                RichText::new(format!(
                    "Read-only: these results came from {from}; {loaded}."
                ))
                .color(WARN),
            );
            ui.horizontal(|ui| {
                if ui.button("Locate model…").clicked() {
                    app.queue(Command::PickModel);
                }
                if let Some(m) = app.results_model.clone()
                    && m.path.is_file()
                    && ui
                        .button(format!("Load {}", m.fingerprint.file_name))
                        .clicked()
                {
                    app.queue(Command::LoadModel(m.path));
                }
                if app.model.is_some() && ui.button("Re-run on the loaded model").clicked() {
                    app.queue(Command::Run);
                }
            });
        });
    ui.separator();
}

/// Asks what to do with unsaved changes when the window is closed.
pub fn close_dialog(app: &mut KvlabApp, ui: &mut Ui) {
    if !app.confirm_close {
        return;
    }
    egui::Modal::new(egui::Id::unique("kvlab-close-dialog")).show(ui.ctx(), |ui| {
        ui.heading("Save changes?");
        ui.label(format!(
            "\"{}\" has changes that are not saved.",
            app.state.spec.name
        ));
        ui.horizontal(|ui| {
            if ui.button("Save").clicked() {
                app.queue(Command::Save);
                if app.state.session_path.is_some() {
                    app.queue(Command::CloseNow);
                }
                app.confirm_close = false;
            }
            if ui.button("Discard").clicked() {
                app.queue(Command::CloseNow);
            }
            if ui.button("Cancel").clicked() {
                app.confirm_close = false;
            }
        });
    });
}

/// The conditions: variant, intervention, layers, part; add, remove, seed grid.
pub fn conditions(app: &mut KvlabApp, ui: &mut Ui) {
    if app.is_read_only() {
        ui.heading("Conditions");
        for c in &app.state.spec.conditions {
            ui.label(format!(
                "{} ({}) — layers {}, {:?}",
                c.row_label(),
                c.variant,
                c.layers,
                c.part
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
        .state
        .spec
        .variants
        .iter()
        .map(|v| v.name.clone())
        .collect();
    ui.horizontal(|ui| {
        ui.heading("Conditions");
        if ui.button("Add condition").clicked() {
            app.state.spec.conditions.push(Condition {
                label: None,
                variant: names.first().cloned().unwrap_or_default(),
                intervention: Intervention::Zero,
                layers: LayerSet::All,
                part: KvPart::Both,
                span: None,
            });
        }
        if ui
            .button("Seed grid")
            .on_hover_text("none, zero, transplant and remove for every variant")
            .clicked()
        {
            app.queue(Command::SeedGrid);
        }
        if ui.button("Clear").clicked() {
            app.state.spec.conditions.clear();
        }
    });
    let spec = &mut app.state.spec;
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
                let kind = match &c.intervention {
                    Intervention::None => "none",
                    Intervention::Zero => "zero",
                    Intervention::Transplant { .. } => "transplant",
                    Intervention::Remove => "remove",
                };
                let combo = egui::ComboBox::from_id_salt(("ci", i))
                    .selected_text(kind)
                    .width(90.0)
                    .show_ui(ui, |ui| {
                        if ui.selectable_label(kind == "none", "none").clicked() {
                            c.intervention = Intervention::None;
                        }
                        if ui.selectable_label(kind == "zero", "zero").clicked() {
                            c.intervention = Intervention::Zero;
                        }
                        if ui.selectable_label(kind == "remove", "remove").clicked() {
                            c.intervention = Intervention::Remove;
                            c.layers = LayerSet::All;
                            c.part = KvPart::Both;
                        }
                        for n in names.iter().filter(|n| **n != c.variant) {
                            if ui
                                .selectable_label(false, format!("transplant from {n}"))
                                .clicked()
                            {
                                c.intervention = Intervention::Transplant { from: n.clone() };
                            }
                        }
                    });
                named(
                    combo.response,
                    format!("Intervention of condition {}", i + 1),
                );
                if let Intervention::Transplant { from } = &c.intervention {
                    ui.label(format!("from {from}"));
                } else {
                    ui.label("");
                }
                let removing = c.intervention == Intervention::Remove;
                ui.add_enabled_ui(!removing, |ui| {
                    let layers = c.layers.resolve(n_layer);
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
                            c.layers = if lo == 0 && hi == n_layer - 1 {
                                LayerSet::All
                            } else {
                                LayerSet::parse(&format!("{lo}-{hi}")).unwrap_or_default()
                            };
                        }
                    });
                });
                ui.add_enabled_ui(!removing, |ui| {
                    ui.horizontal(|ui| {
                        ui.selectable_value(&mut c.part, KvPart::K, "K");
                        ui.selectable_value(&mut c.part, KvPart::V, "V");
                        ui.selectable_value(&mut c.part, KvPart::Both, "K+V");
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

fn verdict_color(v: &str) -> Color32 {
    if v.starts_with("keeps") {
        GOOD
    } else if v.starts_with("flips") {
        BAD
    } else {
        WARN
    }
}

/// The outcome grid: live text during a run, then the results with verdicts, divergence markers
/// and top-k tooltips on every generated token.
pub fn outcome_grid(app: &mut KvlabApp, ui: &mut Ui) {
    ui.heading("Outcome grid");
    if let Some(r) = &app.results {
        let rows = grid::rows(r);
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
                    cell_tokens(ui, &v.baseline, None, ("base", &v.name));
                }
                ui.end_row();
                for row in rows {
                    ui.label(RichText::new(&row.label).strong());
                    for (col, cell) in row.cells.iter().enumerate() {
                        match cell {
                            Some(c) => {
                                ui.vertical(|ui| {
                                    if let Some(v) = &c.verdict {
                                        ui.label(RichText::new(v).color(verdict_color(v)).strong());
                                    }
                                    let div = match c.first_divergence {
                                        None => "same as baseline".to_string(),
                                        Some(i) if c.fragile => {
                                            format!("departs at token {i} · near-tie")
                                        }
                                        Some(i) => format!("departs at token {i}"),
                                    };
                                    ui.label(RichText::new(div).small().weak());
                                    cell_tokens(
                                        ui,
                                        &c.generation,
                                        c.first_divergence,
                                        (&row.label, &col.to_string()),
                                    );
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
    } else if matches!(app.busy, Busy::Running { .. }) || app.live.tokens > 0 {
        let spec = &app.state.spec;
        egui::Grid::new("live")
            .striped(true)
            .min_col_width(120.0)
            .show(ui, |ui| {
                ui.label(RichText::new("baseline").strong());
                for (v, t) in spec.variants.iter().zip(&app.live.baselines) {
                    ui.label(format!("{}: {}", v.name, ui_preview(t)));
                }
                ui.end_row();
                for (c, t) in spec.conditions.iter().zip(&app.live.conditions) {
                    ui.label(RichText::new(format!("{} ({})", c.row_label(), c.variant)).strong());
                    ui.label(ui_preview(t));
                    ui.end_row();
                }
            });
    } else {
        ui.label(RichText::new("Run the experiment to fill the grid (Ctrl+Enter).").weak());
    }
}

/// A generation as one wrapped text (one galley, cached by egui, so a 1000-token cell costs one
/// widget, not 1000); the first departing token is marked; hovering a token shows its top-k
/// alternatives, found from the pointer's character position.
fn cell_tokens(
    ui: &mut Ui,
    g: &crate::experiment::results::Generation,
    diverge: Option<usize>,
    id: (&str, &str),
) {
    egui::ScrollArea::vertical()
        .id_salt(id)
        .max_height(110.0)
        .show(ui, |ui| {
            let width = 360.0;
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
        });
}

/// Probe-token probability per step, one line per condition.
pub fn probe_chart(app: &mut KvlabApp, ui: &mut Ui) {
    let Some(r) = &app.results else {
        ui.label(RichText::new("No results yet.").weak());
        return;
    };
    if r.spec.probes.is_empty() {
        ui.label("The experiment has no probes.");
        return;
    }
    let probe = app.state.probe_index.min(r.spec.probes.len() - 1);
    ui.horizontal(|ui| {
        ui.label("Probe");
        for (i, p) in r.spec.probes.iter().enumerate() {
            ui.selectable_value(&mut app.state.probe_index, i, format!("{p:?}"));
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

/// Each condition's scores: preference, verdict, and each variant's answer log-probs.
pub fn score_table(app: &mut KvlabApp, ui: &mut Ui) {
    let Some(r) = &app.results else {
        ui.label(RichText::new("No results yet.").weak());
        return;
    };
    egui::Grid::new("scores").striped(true).show(ui, |ui| {
        ui.label(RichText::new("condition").strong());
        ui.label(RichText::new("prompt").strong());
        ui.label(RichText::new("verdict").strong());
        for v in &r.variants {
            ui.label(RichText::new(format!("lp({} answer)", v.name)).strong());
        }
        ui.end_row();
        for c in &r.conditions {
            ui.label(&c.label);
            ui.label(&c.variant);
            match &c.verdict {
                Some(v) => ui.label(RichText::new(v).color(verdict_color(v))),
                None => ui.label("—"),
            };
            for v in &r.variants {
                match c.score_of(&v.name) {
                    Some(s) => {
                        let own = v.name == c.variant;
                        let t = RichText::new(format!("{:.3}", s.mean));
                        ui.label(if own { t.strong() } else { t });
                    }
                    None => {
                        ui.label("—");
                    }
                }
            }
            ui.end_row();
        }
    });
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
            egui::DragValue::new(&mut app.state.delta_layer).range(0..=n_layer.saturating_sub(1)),
        )
        .labelled_by(label.id);
        ui.label(RichText::new("(recorded at the next run)").weak());
    });
    let Some(d) = app.results.as_ref().and_then(|r| r.kv_delta.as_ref()) else {
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
    use super::state::SweepChoice;
    ui.horizontal(|ui| {
        ui.selectable_value(
            &mut app.state.sweep_choice,
            SweepChoice::Position,
            "Every position",
        );
        ui.selectable_value(
            &mut app.state.sweep_choice,
            SweepChoice::Span,
            "Needle + next k",
        );
        ui.selectable_value(&mut app.state.sweep_choice, SweepChoice::Layer, "Layers");
        ui.selectable_value(
            &mut app.state.sweep_choice,
            SweepChoice::PositionLayer,
            "Position × layer",
        );
        ui.separator();
        ui.selectable_value(&mut app.state.sweep_remove, false, "zero");
        ui.selectable_value(&mut app.state.sweep_remove, true, "remove");
        ui.separator();
        let names: Vec<String> = app
            .state
            .spec
            .variants
            .iter()
            .map(|v| v.name.clone())
            .collect();
        for (i, n) in names.iter().enumerate() {
            ui.selectable_value(&mut app.state.sweep_variant, i, format!("{n} prompt"));
        }
        if ui
            .add_enabled(app.can_run(), egui::Button::new("Run sweep"))
            .clicked()
        {
            app.queue(Command::RunSweep);
        }
    });
    let Some(r) = &app.sweep else {
        ui.label(RichText::new("Each item is measured by the expected answers' preference (or the own baseline's log-prob).").weak());
        return;
    };
    let own = app.state.spec.variant_index(&r.sweep.variant).unwrap_or(0);
    let effects = r.effects(own);
    let kind = r.sweep.kind.name();
    let kind = format!("{}{} sweep", kind[..1].to_uppercase(), &kind[1..]);
    ui.label(format!(
        "{} of {} on {} — {}; effect against no intervention{}",
        kind,
        r.sweep.intervention.short(),
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
