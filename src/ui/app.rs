//! The kvlab window: a view over [`AppState`] and the worker's results. UI code only reads state
//! and queues [`Command`]s; they run at the end of the frame.

use std::path::PathBuf;
use std::time::Instant;

use egui::{Color32, RichText, Ui};

use super::state::{AnalysisTab, AppState, Command, seed_spec};
use super::views;
use super::worker::{Job, Worker, WorkerEvent};
use crate::engine::{Device, ModelFingerprint, ModelInfo};
use crate::experiment::RunResults;
use crate::experiment::sweep::{SweepKind, SweepResults, SweepSpec};
use crate::gguf::GgufSummary;
use crate::runner::{Prepared, RowRef, RunEvent, RunOptions};
use crate::session::{self, ModelRef, Session};

/// Seconds between autosaves of a changed session.
const AUTOSAVE_EVERY_S: u64 = 5;

/// Key under which eframe stores [`AppState`].
pub const STORAGE_KEY: &str = "kvlab-state";

/// The loaded model, as the UI knows it.
#[derive(Debug, Clone)]
pub struct ModelView {
    /// Its file.
    pub path: PathBuf,
    /// Its metadata.
    pub info: ModelInfo,
    /// Its fingerprint.
    pub fingerprint: ModelFingerprint,
    /// Layers offloaded to a GPU when it was loaded (`None`: all).
    pub gpu_layers: Option<u32>,
}

/// A model file's metadata read without loading it (for the estimate shown before loading).
#[derive(Debug)]
pub struct ModelPeek {
    /// The file.
    pub path: PathBuf,
    /// Its metadata, or why it cannot be read; `None` while reading.
    pub summary: Option<Result<GgufSummary, String>>,
    rx: std::sync::mpsc::Receiver<Result<GgufSummary, String>>,
}

impl ModelPeek {
    /// Reads `path`'s GGUF header on a helper thread (the UI thread does no disk I/O).
    fn start(path: PathBuf, ctx: &egui::Context) -> ModelPeek {
        let (tx, rx) = std::sync::mpsc::channel();
        let (file, ctx) = (path.clone(), ctx.clone());
        let spawned = std::thread::Builder::new()
            .name("kvlab-peek".into())
            .spawn(move || {
                let _ = tx.send(crate::gguf::read_summary(&file).map_err(|e| e.to_string()));
                ctx.request_repaint();
            });
        ModelPeek {
            summary: spawned.err().map(|e| Err(e.to_string())),
            path,
            rx,
        }
    }

    fn poll(&mut self) {
        if self.summary.is_none()
            && let Ok(r) = self.rx.try_recv()
        {
            self.summary = Some(r);
        }
    }
}

/// What the worker is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Busy {
    /// Nothing.
    Idle,
    /// Loading a model (progress 0..1).
    Loading(f32),
    /// Running an experiment.
    Running {
        /// The current stage.
        stage: String,
        /// Steps done.
        done: usize,
        /// Steps in all.
        total: usize,
    },
}

/// Text streaming into the grid during a run.
#[derive(Debug, Clone, Default)]
pub struct LiveGrid {
    /// Per variant, its baseline's text so far.
    pub baselines: Vec<String>,
    /// Per condition, its text so far.
    pub conditions: Vec<String>,
    /// Tokens received.
    pub tokens: usize,
    /// When the run started.
    pub started: Option<Instant>,
}

/// The app.
pub struct KvlabApp {
    /// The persisted state.
    pub state: AppState,
    /// The loaded model.
    pub model: Option<ModelView>,
    /// The tokenized prompts of the current spec.
    pub prepared: Option<Prepared>,
    /// Why the prompts could not be tokenized.
    pub prepare_error: Option<String>,
    /// What the worker is doing.
    pub busy: Busy,
    /// The last run's results.
    pub results: Option<RunResults>,
    /// The last sweep's results.
    pub sweep: Option<SweepResults>,
    /// The run in progress.
    pub live: LiveGrid,
    /// The status line.
    pub status: String,
    /// The last error, shown until dismissed.
    pub error: Option<String>,
    /// The longest frame seen while a run was going (ms), for the status bar.
    pub slowest_frame_ms: f32,
    /// Run the experiment as soon as a model is loaded (once).
    pub run_when_loaded: bool,
    /// The model the shown results came from (for sessions opened from disk).
    pub results_model: Option<ModelRef>,
    /// The "save changes before closing?" dialog is open.
    pub confirm_close: bool,
    /// Where autosaves go (`None`: no autosave, e.g. in tests).
    pub autosave_path: Option<PathBuf>,
    /// The compute devices llama.cpp sees (empty until the worker has started llama.cpp).
    pub devices: Vec<Device>,
    /// The model path's metadata, read without loading (follows `state.model_path`).
    pub peek: Option<ModelPeek>,
    results_version: u64,
    saved_hash: u64,
    autosaved_hash: u64,
    last_autosave: Instant,
    title: String,
    allow_close: bool,
    commands: Vec<Command>,
    worker: Worker,
    prepared_for: Option<String>,
}

impl KvlabApp {
    /// Creates the app with a state (restored or default) and a worker that wakes `ctx`.
    pub fn new(ctx: &egui::Context, state: AppState) -> KvlabApp {
        let wake_ctx = ctx.clone();
        // Coalesce the worker's events (one per generated token) into at most ~20 frames/s.
        let worker = Worker::start(move || {
            wake_ctx.request_repaint_after(std::time::Duration::from_millis(50))
        });
        ctx.set_theme(if state.dark_mode {
            egui::Theme::Dark
        } else {
            egui::Theme::Light
        });
        let mut app = KvlabApp {
            state,
            model: None,
            prepared: None,
            prepare_error: None,
            busy: Busy::Idle,
            results: None,
            sweep: None,
            live: LiveGrid::default(),
            status: "Open a GGUF model to begin.".into(),
            error: None,
            slowest_frame_ms: 0.0,
            run_when_loaded: false,
            results_model: None,
            confirm_close: false,
            autosave_path: None,
            devices: Vec::new(),
            peek: None,
            results_version: 0,
            saved_hash: 0,
            autosaved_hash: 0,
            last_autosave: Instant::now(),
            title: String::new(),
            allow_close: false,
            commands: Vec::new(),
            worker,
            prepared_for: None,
        };
        app.saved_hash = app.document_hash();
        app.autosaved_hash = app.saved_hash;
        app
    }

    /// A hash of what a session file holds (spec, notes, results), to tell unsaved changes.
    fn document_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&self.state.spec)
            .unwrap_or_default()
            .hash(&mut h);
        self.state.notes.hash(&mut h);
        self.results_version.hash(&mut h);
        h.finish()
    }

    /// Whether the session has changes not saved to its file.
    pub fn is_dirty(&self) -> bool {
        self.document_hash() != self.saved_hash
    }

    /// Whether the shown results came from a model other than the loaded one: the experiment
    /// is then read-only until the right model is loaded or the user re-runs on this one.
    pub fn is_read_only(&self) -> bool {
        match (&self.results_model, &self.results) {
            (Some(m), Some(_)) => self
                .model
                .as_ref()
                .is_none_or(|l| l.fingerprint != m.fingerprint),
            _ => false,
        }
    }

    /// The session as it would be saved.
    pub fn to_session(&self) -> Session {
        let mut s = Session::new(self.state.spec.clone());
        s.notes = self.state.notes.clone();
        s.results = self.results.clone();
        s.sweep = self.sweep.clone();
        s.model = self.results_model.clone().or_else(|| {
            self.model.as_ref().map(|m| ModelRef {
                path: m.path.clone(),
                fingerprint: m.fingerprint.clone(),
                info: m.info.clone(),
            })
        });
        s
    }

    /// Opens a session: its experiment, notes and results replace the current ones.
    pub fn open_session(&mut self, path: &std::path::Path) {
        match Session::load(path) {
            Ok(s) => {
                self.state.spec = s.spec;
                self.state.notes = s.notes;
                self.results = s.results;
                self.sweep = s.sweep;
                self.results_model = s.model;
                self.results_version += 1;
                self.state.remember_session(path.to_path_buf());
                self.saved_hash = self.document_hash();
                self.error = None;
                self.status = format!("Opened {}.", path.display());
                if self.is_read_only() {
                    self.status.push_str(
                        " Its results came from another model: read-only until it is loaded.",
                    );
                }
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    /// Restores the autosaved session after a crash or a restart (the file it belongs to, if
    /// any, is unchanged; the restored state counts as unsaved).
    pub fn restore_autosave(&mut self, path: &std::path::Path) {
        if let Ok(s) = Session::load(path) {
            self.state.spec = s.spec;
            self.state.notes = s.notes;
            self.results = s.results;
            self.results_model = s.model;
            self.results_version += 1;
            self.saved_hash = 0;
            self.autosaved_hash = self.document_hash();
            self.status = "Restored the last session (autosave).".into();
        }
    }

    /// Saves to `path`; on success it becomes the session's file.
    pub fn save_to(&mut self, path: &std::path::Path) -> bool {
        let mut s = self.to_session();
        match s.save(path) {
            Ok(()) => {
                self.state.remember_session(path.to_path_buf());
                self.saved_hash = self.document_hash();
                self.status = format!("Saved {}.", path.display());
                true
            }
            Err(e) => {
                self.error = Some(format!("could not save: {e}"));
                false
            }
        }
    }

    /// Queues a command for the end of the frame.
    pub fn queue(&mut self, c: Command) {
        self.commands.push(c);
    }

    /// Whether a model is loaded and nothing is running.
    pub fn can_run(&self) -> bool {
        self.model.is_some() && self.busy == Busy::Idle
    }

    /// Takes everything the worker reported since the last frame.
    pub fn poll_worker(&mut self) {
        while let Some(ev) = self.worker.poll() {
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::LoadProgress(p) => {
                if matches!(self.busy, Busy::Loading(_)) {
                    self.busy = Busy::Loading(p);
                }
            }
            WorkerEvent::Devices(devices) => self.devices = devices,
            WorkerEvent::ModelLoaded {
                path,
                info,
                fingerprint,
            } => {
                self.busy = Busy::Idle;
                self.status = format!(
                    "Loaded {} ({}, {} layers).",
                    fingerprint.file_name, info.architecture, info.n_layer
                );
                self.state.remember_model(path.clone());
                self.model = Some(ModelView {
                    path,
                    info,
                    fingerprint,
                    gpu_layers: self.state.gpu_layers,
                });
                self.prepared_for = None;
                self.queue(Command::Prepare);
                if std::mem::take(&mut self.run_when_loaded) {
                    self.queue(Command::Run);
                }
            }
            WorkerEvent::LoadFailed(e) => {
                self.busy = Busy::Idle;
                self.model = None;
                self.prepared = None;
                self.status = "No model loaded.".into();
                self.error = Some(e);
            }
            WorkerEvent::Prepared(p) => {
                self.prepared = Some(*p);
                self.prepare_error = None;
            }
            WorkerEvent::PrepareFailed(e) => {
                self.prepared = None;
                self.prepare_error = Some(e);
            }
            WorkerEvent::Run(RunEvent::Stage(s)) => {
                if let Busy::Running { stage, .. } = &mut self.busy {
                    *stage = s;
                }
            }
            WorkerEvent::Run(RunEvent::Progress { done: d, total: t }) => {
                if let Busy::Running { done, total, .. } = &mut self.busy {
                    *done = d;
                    *total = t;
                }
            }
            WorkerEvent::Run(RunEvent::Token { row, piece, .. }) => {
                let cell = match row {
                    RowRef::Baseline(i) => self.live.baselines.get_mut(i),
                    RowRef::Condition(i) => self.live.conditions.get_mut(i),
                };
                if let Some(cell) = cell {
                    cell.push_str(&piece);
                }
                self.live.tokens += 1;
            }
            WorkerEvent::RunDone(r) => {
                self.busy = Busy::Idle;
                self.status = format!(
                    "{} — {:.1} tokens/s, scoring {:.1}s; slowest frame {:.1} ms.",
                    if r.complete {
                        "Run finished"
                    } else {
                        "Run stopped (partial results)"
                    },
                    r.timings.tokens_per_s,
                    r.timings.score_s,
                    self.slowest_frame_ms
                );
                tracing::info!(target: "kvlab::ui", "{}", self.status);
                self.results = Some(*r);
                self.results_version += 1;
                self.results_model = self.model.as_ref().map(|m| ModelRef {
                    path: m.path.clone(),
                    fingerprint: m.fingerprint.clone(),
                    info: m.info.clone(),
                });
            }
            WorkerEvent::SweepDone(r) => {
                self.busy = Busy::Idle;
                self.status = format!(
                    "Sweep {}: {} items measured by {}.",
                    if r.complete {
                        "finished"
                    } else {
                        "stopped (partial results kept)"
                    },
                    r.points.len(),
                    r.measure
                );
                self.sweep = Some(*r);
                self.results_version += 1;
            }
            WorkerEvent::RunFailed(e) => {
                self.busy = Busy::Idle;
                self.status = "Run failed.".into();
                self.error = Some(e);
            }
        }
    }

    /// Runs the queued commands.
    pub fn run_commands(&mut self) {
        // Re-tokenize whenever the prompt or the variants changed.
        if self.model.is_some() && self.busy == Busy::Idle {
            let key = serde_json::to_string(&(
                &self.state.spec.prompt,
                &self.state.spec.variants,
                &self.state.spec.needle_span,
            ))
            .unwrap_or_default();
            if self.prepared_for.as_deref() != Some(key.as_str()) {
                self.prepared_for = Some(key);
                self.commands.push(Command::Prepare);
            }
        }
        for c in std::mem::take(&mut self.commands) {
            match c {
                Command::PickModel => {
                    if let Some(path) = rfd::FileDialog::new()
                        .add_filter("GGUF model", &["gguf"])
                        .pick_file()
                    {
                        self.queue(Command::LoadModel(path));
                        self.run_commands();
                    }
                }
                Command::LoadModel(path) => {
                    self.error = None;
                    self.busy = Busy::Loading(0.0);
                    self.status = format!("Loading {} …", path.display());
                    let options = crate::engine::LoadOptions {
                        n_gpu_layers: self.state.gpu_layers,
                    };
                    self.worker.send(Job::LoadModel(path, options));
                }
                Command::Stop => {
                    self.worker.stop();
                    self.status = "Stopping …".into();
                }
                Command::Run => {
                    if !self.can_run() {
                        continue;
                    }
                    if let Err(e) = self.state.spec.validate() {
                        self.error = Some(e.to_string());
                        continue;
                    }
                    self.error = None;
                    self.slowest_frame_ms = 0.0;
                    self.live = LiveGrid {
                        baselines: vec![String::new(); self.state.spec.variants.len()],
                        conditions: vec![String::new(); self.state.spec.conditions.len()],
                        tokens: 0,
                        started: Some(Instant::now()),
                    };
                    self.results = None;
                    self.results_model = None;
                    self.results_version += 1;
                    self.busy = Busy::Running {
                        stage: "starting".into(),
                        done: 0,
                        total: 1,
                    };
                    self.status = "Running …".into();
                    let options = RunOptions {
                        threads: self.state.threads.max(1),
                        delta_layer: Some(self.state.delta_layer),
                        ..RunOptions::default()
                    };
                    self.worker.send(Job::Run(self.state.spec.clone(), options));
                }
                Command::Prepare => {
                    if self.model.is_some() {
                        self.worker.send(Job::Prepare(self.state.spec.clone()));
                    }
                }
                Command::SeedGrid => {
                    self.state.spec.conditions = self.state.spec.seed_grid();
                }
                Command::ResetToSeed => {
                    self.state.spec = seed_spec();
                    self.state.notes.clear();
                    self.state.session_path = None;
                    self.results = None;
                    self.results_model = None;
                    self.results_version += 1;
                }
                Command::Save => match self.state.session_path.clone() {
                    Some(p) => {
                        self.save_to(&p);
                    }
                    None => self.queue(Command::SaveAs),
                },
                Command::SaveAs => {
                    let name = format!("{}.{}", self.state.spec.name, session::EXTENSION);
                    if let Some(p) = rfd::FileDialog::new()
                        .add_filter("kvlab session", &[session::EXTENSION])
                        .set_file_name(name)
                        .save_file()
                    {
                        self.save_to(&p);
                    }
                }
                Command::Open => {
                    if let Some(p) = rfd::FileDialog::new()
                        .add_filter("kvlab session", &[session::EXTENSION])
                        .pick_file()
                    {
                        self.open_session(&p);
                    }
                }
                Command::OpenSession(p) => self.open_session(&p),
                Command::Autosave => {
                    if let Some(path) = self.autosave_path.clone() {
                        // Serialize here, write on a helper thread: no disk I/O on the UI thread.
                        let bytes = self.to_session().to_json().into_bytes();
                        std::thread::spawn(move || {
                            if let Some(dir) = path.parent() {
                                let _ = std::fs::create_dir_all(dir);
                            }
                            if let Err(e) =
                                session::write_atomic(&path, &bytes, session::Fault::None)
                            {
                                tracing::warn!("autosave failed: {e}");
                            }
                        });
                    }
                }
                Command::RunSweep => {
                    if !self.can_run() {
                        continue;
                    }
                    let st = &self.state;
                    let Some(variant) = st.spec.variants.get(
                        st.sweep_variant
                            .min(st.spec.variants.len().saturating_sub(1)),
                    ) else {
                        continue;
                    };
                    let sweep = SweepSpec {
                        kind: match st.sweep_choice {
                            super::state::SweepChoice::Position => {
                                SweepKind::Position { range: None }
                            }
                            super::state::SweepChoice::Span => SweepKind::Span { max_extra: 16 },
                            super::state::SweepChoice::Layer => SweepKind::Layer,
                            super::state::SweepChoice::PositionLayer => {
                                SweepKind::PositionLayer { range: None }
                            }
                        },
                        variant: variant.name.clone(),
                        intervention: if st.sweep_remove {
                            crate::experiment::Intervention::Remove
                        } else {
                            crate::experiment::Intervention::Zero
                        },
                        layers: crate::experiment::LayerSet::All,
                        part: crate::experiment::spec::KvPart::Both,
                    };
                    self.error = None;
                    self.live = LiveGrid {
                        started: Some(Instant::now()),
                        ..LiveGrid::default()
                    };
                    self.busy = Busy::Running {
                        stage: "sweeping".into(),
                        done: 0,
                        total: 1,
                    };
                    let options = RunOptions {
                        threads: self.state.threads.max(1),
                        ..RunOptions::default()
                    };
                    self.worker
                        .send(Job::Sweep(self.state.spec.clone(), sweep, options));
                }
                Command::CloseNow => {
                    self.allow_close = true;
                    self.confirm_close = false;
                }
            }
        }
    }

    /// The whole window's content.
    pub fn show(&mut self, ui: &mut Ui) {
        let frame_start = Instant::now();
        self.poll_worker();
        self.handle_input(ui.ctx());

        egui::Panel::top("menu").show(ui, |ui| views::top_bar(self, ui));
        egui::Panel::bottom("status").show(ui, |ui| views::status_bar(self, ui));
        egui::Panel::left("setup")
            .resizable(true)
            .default_size(380.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    views::model_panel(self, ui);
                    ui.separator();
                    let editable = !self.is_read_only();
                    ui.add_enabled_ui(editable, |ui| views::experiment_editor(self, ui));
                    ui.separator();
                    views::notes(self, ui);
                });
            });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                if let Some(e) = self.error.clone() {
                    ui.horizontal(|ui| {
                        ui.label(
                            RichText::new(format!("Error: {e}"))
                                .color(Color32::from_rgb(230, 90, 80)),
                        );
                        if ui.small_button("Dismiss").clicked() {
                            self.error = None;
                        }
                    });
                    ui.separator();
                }
                views::read_only_banner(self, ui);
                views::token_strip(self, ui);
                ui.separator();
                views::conditions(self, ui);
                ui.separator();
                views::outcome_grid(self, ui);
                ui.separator();
                ui.horizontal(|ui| {
                    ui.selectable_value(&mut self.state.tab, AnalysisTab::Probes, "Probe chart");
                    ui.selectable_value(&mut self.state.tab, AnalysisTab::Scores, "Score table");
                    ui.selectable_value(&mut self.state.tab, AnalysisTab::KvDelta, "KV delta");
                    ui.selectable_value(&mut self.state.tab, AnalysisTab::Sweeps, "Sweeps");
                });
                match self.state.tab {
                    AnalysisTab::Probes => views::probe_chart(self, ui),
                    AnalysisTab::Scores => views::score_table(self, ui),
                    AnalysisTab::KvDelta => views::kv_delta(self, ui),
                    AnalysisTab::Sweeps => views::sweeps(self, ui),
                }
            });
        });

        views::close_dialog(self, ui);
        self.housekeeping(ui.ctx());
        self.run_commands();
        if matches!(self.busy, Busy::Running { .. }) {
            let ms = frame_start.elapsed().as_secs_f32() * 1000.0;
            self.slowest_frame_ms = self.slowest_frame_ms.max(ms);
        }
        if self.busy != Busy::Idle {
            // Keep the progress bar moving even between worker events.
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    /// Window title with the unsaved mark, autosave, the close guard, and the model path's
    /// metadata kept current.
    fn housekeeping(&mut self, ctx: &egui::Context) {
        if let Some(path) = &self.state.model_path
            && self.peek.as_ref().is_none_or(|p| &p.path != path)
        {
            self.peek = Some(ModelPeek::start(path.clone(), ctx));
        }
        if let Some(peek) = &mut self.peek {
            peek.poll();
        }
        let hash = self.document_hash();
        let dirty = hash != self.saved_hash;
        let title = format!(
            "{}{} — kvlab",
            if dirty { "• " } else { "" },
            self.state.spec.name
        );
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
        if hash != self.autosaved_hash
            && self.last_autosave.elapsed().as_secs() >= AUTOSAVE_EVERY_S
            && self.busy == Busy::Idle
        {
            self.autosaved_hash = hash;
            self.last_autosave = Instant::now();
            self.queue(Command::Autosave);
        }
        if ctx.input(|i| i.viewport().close_requested()) && dirty && !self.allow_close {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.confirm_close = true;
        }
        if self.allow_close {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    /// The window title (with `•` when there are unsaved changes).
    pub fn title(&self) -> &str {
        &self.title
    }

    fn handle_input(&mut self, ctx: &egui::Context) {
        let (save, save_as, open) = ctx.input_mut(|i| {
            let shift_s = egui::KeyboardShortcut::new(
                egui::Modifiers::COMMAND | egui::Modifiers::SHIFT,
                egui::Key::S,
            );
            let s = egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::S);
            let o = egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::O);
            let save_as = i.consume_shortcut(&shift_s);
            (i.consume_shortcut(&s), save_as, i.consume_shortcut(&o))
        });
        if save {
            self.queue(Command::Save);
        }
        if save_as {
            self.queue(Command::SaveAs);
        }
        if open {
            self.queue(Command::Open);
        }
        let (run, stop, dropped) = ctx.input(|i| {
            (
                i.modifiers.command && i.key_pressed(egui::Key::Enter),
                i.key_pressed(egui::Key::Escape),
                i.raw
                    .dropped_files
                    .iter()
                    .map(|f| f.path().to_path_buf())
                    .find(|p| {
                        p.extension()
                            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                    }),
            )
        });
        if run {
            self.queue(Command::Run);
        }
        if stop && self.busy != Busy::Idle {
            self.queue(Command::Stop);
        }
        if let Some(p) = dropped {
            if p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            {
                self.queue(Command::LoadModel(p));
            } else {
                self.queue(Command::OpenSession(p));
            }
        }
    }
}

impl eframe::App for KvlabApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.state);
    }
}
