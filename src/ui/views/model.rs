//! The model panel: open or type a path, what the file holds before loading (and the memory a
//! run will need), devices and GPU offload, load progress.

use egui::{RichText, Ui};

use super::{BAD, mib};
use crate::ui::app::{Busy, KvlabApp};
use crate::ui::commands::Command;

/// The model: open, load by path, progress with Cancel, metadata, memory estimate.
pub fn model_panel(app: &mut KvlabApp, ui: &mut Ui) {
    ui.heading("Model");
    let mut path_text = app
        .prefs
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
            app.prefs.model_path = (!path_text.is_empty()).then(|| path_text.clone().into());
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
        ui.add(egui::DragValue::new(&mut app.prefs.threads).range(1..=64))
            .labelled_by(label.id);
    });
}

/// The KV cache a run of the current experiment allocates, and its number of sequences (one
/// stream per variant and per condition). Before the prompts are tokenized, their length is
/// guessed from the text (about four characters a token; streams round up to 256 cells).
fn run_kv_estimate(app: &KvlabApp, bytes_per_cell: u64) -> (u64, u64) {
    let spec = &app.doc.spec;
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
    let shown = app.prefs.model_path.as_ref() == Some(&peek.path)
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
        let mut value = app.prefs.gpu_layers.unwrap_or(all).min(all);
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
                app.prefs.gpu_layers = (value < all).then_some(value);
            }
            if let Some(m) = &app.model
                && m.gpu_layers != app.prefs.gpu_layers
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
            .map_or(app.prefs.gpu_layers, |m| m.gpu_layers);
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
