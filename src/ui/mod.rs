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

/// Opens the window. `model`: a GGUF to load at start; `spec`: an experiment to open instead of
/// the last one; `run_at_start`: run it once the model is loaded.
pub fn run(
    model: Option<PathBuf>,
    spec: Option<crate::experiment::ExperimentSpec>,
    run_at_start: bool,
) -> Result<()> {
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
            let mut state: AppState = cc
                .storage
                .and_then(|s| eframe::get_value(s, app::STORAGE_KEY))
                .unwrap_or_default();
            if let Some(spec) = spec {
                state.spec = spec;
            }
            let mut app = KvlabApp::new(&cc.egui_ctx, state);
            app.run_when_loaded = run_at_start;
            if let Some(m) = model.or_else(|| app.state.model_path.clone().filter(|p| p.is_file()))
            {
                app.queue(state::Command::LoadModel(m));
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window could not open: {e}"))
}
