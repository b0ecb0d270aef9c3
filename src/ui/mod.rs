//! The desktop app: a view over a [`Document`] and the worker's results.
//!
//! - [`document`]: the experiment, its results and its file — what a session holds.
//! - [`prefs`]: what the app remembers between launches (never the experiment).
//! - [`commands`]: what panels ask for, each with its label and shortcut.
//! - [`tasks`]: file I/O and header reads on side threads (the UI thread does no disk I/O).
//! - [`state`]: what the worker and tasks reported, in the shapes panels read.
//! - [`app`]: the app struct, event handling, commands run at the end of each frame.
//! - [`panels`]: the panels, each a struct drawing from a read-only view of the app.
//! - [`worker`]: the thread that owns llama.cpp.

pub mod app;
pub mod commands;
pub mod document;
pub mod panels;
pub mod prefs;
pub mod state;
pub mod tasks;
pub mod worker;

use std::path::PathBuf;

use anyhow::Result;

pub use app::KvlabApp;
pub use document::Document;
pub use prefs::Prefs;

/// What to open the window on.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// A GGUF to load at start (default: the last model, if it still exists).
    pub model: Option<PathBuf>,
    /// An experiment to open instead of the last one.
    pub spec: Option<crate::experiment::ExperimentSpec>,
    /// A session file to open.
    pub session: Option<PathBuf>,
    /// Run the experiment once the model is loaded.
    pub run_at_start: bool,
    /// GPU layers for this launch (`kvlab --gpu-layers N`), overriding the saved preference.
    pub gpu_layers: Option<u32>,
}

/// The demo model's file name, as `make model` (packaging/fetch-model.sh) fetches it.
pub const DEMO_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where `make model` puts the demo model: `kvlab/models/` in the platform's cache folder
/// (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS), as the Makefile's
/// `KVLAB_CACHE` says. Whether it is there is for the caller to check.
pub fn demo_model_path() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|d| {
        d.cache_dir()
            .join("kvlab")
            .join("models")
            .join(DEMO_MODEL_FILE)
    })
}

/// Opens the window.
pub fn run(start: StartOptions) -> Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("kvlab")
            .with_inner_size([1400.0, 900.0])
            .with_min_inner_size([800.0, 500.0])
            .with_drag_and_drop(true)
            .with_app_id("kvlab"),
        ..Default::default()
    };
    eframe::run_native(
        "kvlab",
        options,
        Box::new(move |cc| {
            let prefs: Prefs = cc
                .storage
                .and_then(|s| eframe::get_value(s, app::STORAGE_KEY))
                .unwrap_or_default();
            let mut app = KvlabApp::new(&cc.egui_ctx, prefs);
            app.autosave_path = crate::session::autosave_path();
            if let Some(session) = &start.session {
                app.open_session(session);
            } else if let Some(spec) = start.spec {
                app.replace_document(Document::new(spec), true);
            } else if let Some(auto) = app.autosave_path.clone().filter(|p| p.is_file()) {
                app.restore_autosave(&auto);
            }
            app.run_when_loaded = start.run_at_start;
            if let Some(n) = start.gpu_layers {
                app.prefs.gpu_layers = Some(n);
            }
            // A session being opened brings its own model once it has been read (see
            // `KvlabApp::on_task`); otherwise the restored document's model or the last one.
            let model = start.model.or_else(|| {
                if start.session.is_some() {
                    return None;
                }
                let from_doc = app.doc.results_model.as_ref().map(|m| m.path.clone());
                from_doc
                    .filter(|p| p.is_file())
                    .or_else(|| app.prefs.model_path.clone().filter(|p| p.is_file()))
            });
            if let Some(m) = model {
                app.queue(commands::Command::LoadModel(m));
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window could not open: {e}"))
}

#[cfg(test)]
mod tests {
    /// The app looks for the demo model where `make model` puts it (the Makefile's
    /// `$(KVLAB_CACHE)/models/`).
    #[test]
    fn the_demo_model_is_looked_for_in_the_makefiles_cache_folder() {
        let p = super::demo_model_path().expect("a home folder");
        assert!(
            p.ends_with("kvlab/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "{}",
            p.display()
        );
        let makefile = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Makefile"));
        assert!(makefile.contains(&format!("$(KVLAB_CACHE)/models/{}", super::DEMO_MODEL_FILE)));
    }
}
