//! The model panel: open or type a path, what the file holds before loading (and the memory a
//! run will need), devices and GPU offload, load progress.

use egui::{RichText, Ui};

use super::{BAD, ViewCtx, hint, mib, set_pref_if};
use crate::experiment::ExperimentSpec;
use crate::experiment::memory::RunMemory;
use crate::gguf::GgufSummary;
use crate::runner::Prepared;
use crate::ui::commands::{Command, Commands};
use crate::ui::document::Document;
use crate::ui::prefs::PrefEdit;
use crate::ui::state::{Busy, ModelView};

/// The model: open, load by path, progress with Cancel, metadata, memory estimate, devices.
#[derive(Debug, Default)]
pub struct ModelPanel;

impl ModelPanel {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &Document, cmds: &mut Commands) {
        ui.heading("Model");
        let path = path_row(ui, ctx, cmds);
        if let Busy::Loading(p) = ctx.busy {
            ui.horizontal(|ui| {
                ui.add(
                    egui::ProgressBar::new(*p)
                        .show_percentage()
                        .desired_width(200.0),
                );
                if ui.button("Cancel").clicked() {
                    cmds.push(Command::Stop);
                }
            });
        }
        before_loading(ui, ctx, &path, doc);
        if let Some(m) = ctx.model {
            loaded_model(ui, ctx, m, doc);
        } else {
            if ctx.peek.is_none() {
                hint(
                    ui,
                    "No model loaded. Open a .gguf file or drop one on the window.",
                );
            }
            demo_button(ui, ctx, cmds);
        }
        devices_and_offload(ui, ctx, cmds);
        ui.horizontal(|ui| {
            let label = ui.label("Threads");
            let mut threads = ctx.prefs.threads;
            ui.add(egui::DragValue::new(&mut threads).range(1..=64))
                .labelled_by(label.id);
            set_pref_if(cmds, ctx.prefs.threads, threads, PrefEdit::Threads);
        });
    }
}

/// Offers the demo model (SmolLM2-135M, fetched by `make model`) while nothing is loaded, when
/// it is in the cache: a first start needs no file dialog.
fn demo_button(ui: &mut Ui, ctx: &ViewCtx, cmds: &mut Commands) {
    let Some(demo) = ctx.demo_model else { return };
    let button = ui
        .add_enabled(
            *ctx.busy == Busy::Idle,
            egui::Button::new("Use the demo model"),
        )
        .on_hover_text(format!(
            "SmolLM2-135M-Instruct (94 MiB, tiny: fine for trying kvlab out): {}",
            demo.display()
        ));
    if button.clicked() {
        cmds.push(Command::LoadModel(demo.to_path_buf()));
    }
}

/// The path field and its Load button; returns the path as typed this frame.
fn path_row(ui: &mut Ui, ctx: &ViewCtx, cmds: &mut Commands) -> Option<std::path::PathBuf> {
    let mut path_text = ctx
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
            let path = (!path_text.is_empty()).then(|| path_text.clone().into());
            cmds.push(Command::SetPref(PrefEdit::ModelPath(path)));
        }
        let load = ui.add_enabled(
            *ctx.busy == Busy::Idle && !path_text.is_empty(),
            egui::Button::new("Load"),
        );
        if load.clicked() || (edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter))) {
            cmds.push(Command::LoadModel(path_text.clone().into()));
        }
    });
    (!path_text.is_empty()).then(|| path_text.into())
}

/// The loaded model's metadata, as llama.cpp read it, and the KV cache a run will take.
fn loaded_model(ui: &mut Ui, ctx: &ViewCtx, m: &ModelView, doc: &Document) {
    let info = &m.info;
    let per_cell = crate::runner::fits::kv_bytes_per_cell(info, doc.spec.cache);
    let need = run_memory(&doc.spec, ctx.prepared, per_cell, m.fingerprint.file_size);
    if let Some(why) = &m.unsupported {
        ui.label(RichText::new(format!("KV surgery: not supported. {why}")).color(BAD));
        ui.label("Loaded for inspection only (metadata and tokens): Run is disabled.");
    }
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
        if let Some(a) = &m.attention {
            row("attention", a.clone());
        }
        row(
            "chat template",
            if info.has_chat_template { "yes" } else { "no" }.into(),
        );
        for (k, v) in memory_rows("memory for a run", &need, doc.spec.cache) {
            row(&k, v);
        }
    });
    warn_if_too_big(ui, &need);
}

/// Bytes as MiB, or "too large" where the arithmetic overflowed (a forged header).
fn mib_or_too_large(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "too large".into(), mib)
}

/// The cache types in words: "f16" when K and V share a type, else "K q8_0, V f16".
fn cache_words(cache: crate::engine::CacheTypes) -> String {
    if cache.k == cache.v {
        cache.k.name().to_string()
    } else {
        format!("K {}, V {}", cache.k, cache.v)
    }
}

/// What a run of the current experiment holds: weights, KV cache, prompt copies (see
/// [`RunMemory`]). Before the prompts are tokenized, their length is guessed from the text.
fn run_memory(
    spec: &ExperimentSpec,
    prepared: Option<&Prepared>,
    bytes_per_cell: u64,
    weights: u64,
) -> RunMemory {
    let tokens = prepared.map(|p| p.prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0));
    RunMemory::of(spec, tokens, bytes_per_cell, weights)
}

/// The estimate as rows (label, value): the total under `title`, then its parts.
fn memory_rows(
    title: &str,
    m: &RunMemory,
    cache: crate::engine::CacheTypes,
) -> [(String, String); 4] {
    [
        (title.into(), format!("≈ {}", mib_or_too_large(m.total()))),
        ("   weights".into(), mib(m.weights)),
        (
            "   KV cache".into(),
            format!(
                "{} ({} sequences, {})",
                mib_or_too_large(m.kv_cache),
                m.n_seq,
                cache_words(cache)
            ),
        ),
        ("   prompt copies".into(), mib_or_too_large(m.prompt_copies)),
    ]
}

/// A warning under the estimate when the run will not fit in this machine's memory.
fn warn_if_too_big(ui: &mut Ui, m: &RunMemory) {
    let memory = crate::runner::fits::host_memory();
    if !m.fits(memory) {
        ui.label(RichText::new(too_big_text(memory)).color(BAD));
    }
}

/// What the app says of a run that will not fit in `memory` bytes.
pub fn too_big_text(memory: Option<u64>) -> String {
    format!(
        "This run will not fit in this machine's {} of memory: Run will refuse it. Fewer \
         conditions, fewer tokens, a shorter prompt or a q8_0 cache make it smaller.",
        memory.map_or_else(|| "?".into(), mib)
    )
}

/// What the chosen file's header says, before (or instead of) loading it: enough to know
/// whether it fits in memory.
fn before_loading(ui: &mut Ui, ctx: &ViewCtx, path: &Option<std::path::PathBuf>, doc: &Document) {
    let Some(peek) = ctx.peek else { return };
    // `path` is the field as typed this frame (the preference follows after the frame).
    let shown = path.as_ref() == Some(&peek.path) && ctx.model.is_none_or(|m| m.path != peek.path);
    if !shown {
        return;
    }
    match &peek.summary {
        None => hint(ui, "Reading the file's metadata …"),
        Some(Err(e)) => {
            ui.label(RichText::new(e).color(BAD));
        }
        Some(Ok(s)) => header_grid(ui, ctx, s, doc),
    }
}

/// What the header check says of a model whose cache kvlab cannot edit.
pub const UNSUPPORTED_BEFORE_LOADING: &str =
    "Before loading: KV surgery is not supported for this model:";

/// The header's description and the memory a run would need.
fn header_grid(ui: &mut Ui, ctx: &ViewCtx, s: &GgufSummary, doc: &Document) {
    let per_cell = s.kv_bytes_per_cell_as(doc.spec.cache);
    let need = run_memory(&doc.spec, ctx.prepared, per_cell, s.file_size);
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

        for (k, v) in memory_rows("memory needed", &need, doc.spec.cache) {
            row(&k, v);
        }
    });
    warn_if_too_big(ui, &need);
    if let Err(why) = s.kv_surgery_support() {
        ui.label(
            RichText::new(format!(
                "{UNSUPPORTED_BEFORE_LOADING} {why}. It can be loaded for inspection only."
            ))
            .color(BAD),
        );
    }
}

/// The devices llama.cpp sees, the GPU-layers slider (in builds with a GPU backend, when a GPU
/// is present) and where the KV cache lives.
fn devices_and_offload(ui: &mut Ui, ctx: &ViewCtx, cmds: &mut Commands) {
    ui.label(RichText::new("Devices").strong());
    if ctx.devices.is_empty() {
        hint(ui, "starting llama.cpp …");
    }
    for d in ctx.devices {
        ui.label(d.summary());
    }
    let n_layer = ctx.model.map(|m| m.info.n_layer).or_else(|| {
        ctx.peek
            .and_then(|p| p.summary.as_ref())
            .and_then(|s| s.as_ref().ok())
            .map(|s| s.n_layer)
    });
    let has_gpu = ctx.devices.iter().any(|d| d.is_gpu);
    if has_gpu {
        gpu_layers_slider(ui, ctx, n_layer, cmds);
    } else if !ctx.devices.is_empty() {
        let why = if crate::engine::compiled_backends().len() > 1 {
            "no GPU device found"
        } else {
            "this build has no GPU backend (see the README: FEATURES=cuda, metal or vulkan)"
        };
        hint(ui, format!("GPU layers: none, {why}"));
    }
    if let Some(n_layer) = n_layer
        && !ctx.devices.is_empty()
    {
        let layers = ctx.model.map_or(ctx.prefs.gpu_layers, |m| m.gpu_layers);
        ui.label(format!(
            "KV cache: {}",
            crate::engine::kv_cache_home(ctx.devices, layers, n_layer)
        ))
        .on_hover_text(
            "KV surgery works wherever the cache lives: llama.cpp copies a sequence's state \
             through host memory.",
        );
    }
}

/// The GPU-layers slider, with "Reload to apply" when the loaded model has another setting.
fn gpu_layers_slider(ui: &mut Ui, ctx: &ViewCtx, n_layer: Option<u32>, cmds: &mut Commands) {
    // llama.cpp counts the output layer too: n_layer + 1 is every layer.
    let all = n_layer.map_or(100, |n| n + 1);
    let mut value = ctx.prefs.gpu_layers.unwrap_or(all).min(all);
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
        let mut wanted = ctx.prefs.gpu_layers;
        if slider.changed() {
            wanted = (value < all).then_some(value);
            set_pref_if(cmds, ctx.prefs.gpu_layers, wanted, PrefEdit::GpuLayers);
        }
        if let Some(m) = ctx.model
            && m.gpu_layers != wanted
            && *ctx.busy == Busy::Idle
            && ui.button("Reload to apply").clicked()
        {
            cmds.push(Command::LoadModel(m.path.clone()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forged header's head counts and sizes overflow a `u64` of KV bytes: the estimate says
    /// "too large" instead of panicking (issue #13), and such a run never "fits".
    #[test]
    fn a_forged_header_gives_too_large_not_a_panic() {
        let spec = ExperimentSpec::seed();
        let forged = GgufSummary {
            n_layer: 512,
            n_head: u32::MAX,
            n_head_kv: vec![u32::MAX],
            head_dim_k: u32::MAX,
            head_dim_v: u32::MAX,
            ..GgufSummary::default()
        };
        let need = run_memory(&spec, None, forged.kv_bytes_per_cell(), 1 << 30);
        assert_eq!(need.kv_cache, None);
        let rows = memory_rows("memory", &need, spec.cache);
        assert_eq!(rows[0].1, "≈ too large");
        assert_eq!(rows[1].1, "1024.0 MiB");
        assert!(rows[2].1.starts_with("too large ("), "{rows:?}");
        assert!(!need.fits(Some(u64::MAX)));
        assert_eq!(
            need.n_seq as usize,
            spec.variants.len() + spec.conditions.len()
        );
        // Large but representable: a number, not "too large".
        let big = run_memory(&spec, None, 1 << 40, 0).kv_cache;
        assert!(big.is_some_and(|b| b >= 1 << 48), "{big:?}");
    }

    #[test]
    fn the_estimate_counts_streams_of_256_cells() {
        let spec = ExperimentSpec::seed();
        let need = run_memory(&spec, None, 1000, 0);
        let cells = crate::gguf::kv_cells_for_run(need.n_seq, 0, 0);
        let kv = need.kv_cache.unwrap();
        assert!(kv >= cells * 1000 && kv.is_multiple_of(256 * 1000));
        assert!(too_big_text(Some(1 << 30)).contains("1024.0 MiB of memory"));
    }
}
