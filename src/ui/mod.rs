//! The desktop app: a view over [`state::AppState`] and the worker's results.
//!
//! - [`app`]: the app struct, event handling, commands run at the end of each frame.
//! - [`views`]: the panels.
//! - [`state`]: the persisted state and the commands.
//! - [`worker`]: the thread that owns llama.cpp.

pub mod app;
pub mod state;
pub mod views;
pub mod worker;

use std::path::PathBuf;

use anyhow::Result;

pub use app::KvlabApp;
pub use state::AppState;

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
            let state: AppState = cc
                .storage
                .and_then(|s| eframe::get_value(s, app::STORAGE_KEY))
                .unwrap_or_default();
            let mut app = KvlabApp::new(&cc.egui_ctx, state);
            app.autosave_path = crate::session::autosave_path();
            if let Some(session) = &start.session {
                app.open_session(session);
            } else if let Some(spec) = start.spec {
                app.state.spec = spec;
            } else if let Some(auto) = app.autosave_path.clone().filter(|p| p.is_file()) {
                app.restore_autosave(&auto);
            }
            app.run_when_loaded = start.run_at_start;
            if let Some(n) = start.gpu_layers {
                app.state.gpu_layers = Some(n);
            }
            let model = start.model.or_else(|| {
                let from_session = app.results_model.as_ref().map(|m| m.path.clone());
                from_session
                    .filter(|p| p.is_file())
                    .or_else(|| app.state.model_path.clone().filter(|p| p.is_file()))
            });
            if let Some(m) = model {
                app.queue(state::Command::LoadModel(m));
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window could not open: {e}"))
}
