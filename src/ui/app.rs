//! The kvlab window: a view over [`AppState`] and the worker's results. UI code only reads state
//! and queues [`Command`]s; they run at the end of the frame.

use std::path::PathBuf;
use std::time::Instant;

use egui::{Color32, RichText, Ui};

use super::state::{AnalysisTab, AppState, Command, seed_spec};
use super::views;
use super::worker::{Job, Worker, WorkerEvent};
use crate::engine::{ModelFingerprint, ModelInfo};
use crate::experiment::RunResults;
use crate::runner::{Prepared, RowRef, RunEvent, RunOptions};

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
        KvlabApp {
            state,
            model: None,
            prepared: None,
            prepare_error: None,
            busy: Busy::Idle,
            results: None,
            live: LiveGrid::default(),
            status: "Open a GGUF model to begin.".into(),
            error: None,
            slowest_frame_ms: 0.0,
            run_when_loaded: false,
            commands: Vec::new(),
            worker,
            prepared_for: None,
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
                    self.worker.send(Job::LoadModel(path));
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
                    self.results = None;
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
                    views::experiment_editor(self, ui);
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
                });
                match self.state.tab {
                    AnalysisTab::Probes => views::probe_chart(self, ui),
                    AnalysisTab::Scores => views::score_table(self, ui),
                    AnalysisTab::KvDelta => views::kv_delta(self, ui),
                }
            });
        });

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

    fn handle_input(&mut self, ctx: &egui::Context) {
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
            self.queue(Command::LoadModel(p));
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
