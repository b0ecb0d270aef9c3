//! The kvlab window: a view over a [`Document`] (the experiment, its results, its file), the
//! user's [`Prefs`] and the worker's progress. The app owns all of it; each frame it lends the
//! [`Panels`] a read-only [`ViewCtx`], the document and the command queue, then carries out the
//! [`Command`]s they queued (`run_commands.rs`) — the only place its state changes besides the
//! worker's and tasks' reports (`events.rs`).

use std::path::PathBuf;
use std::time::Instant;

mod events;
mod run_commands;

use egui::Ui;

use super::commands::{self, Command, Commands};
use super::document::Document;
use super::panels::{Panels, View, ViewCtx};
use super::prefs::Prefs;
pub use super::state::{Busy, LiveGrid, ModelPeek, ModelView};
use super::tasks::{self, BackgroundTasks, TaskOutput};
use super::worker::{Job, Worker, WorkerEvent};
use crate::engine::Device;
use crate::experiment::sweep::{SweepKind, SweepSpec};
use crate::runner::{Prepared, RowRef, RunEvent, RunOptions};
use crate::session::{self, ModelRef, Session};
pub use run_commands::{NO_DIALOG_MODEL, NO_DIALOG_OPEN, NO_DIALOG_SAVE, dialog_did_not_show};

/// Seconds between autosaves of a changed session.
const AUTOSAVE_EVERY_S: u64 = 5;

/// Key under which eframe stores [`Prefs`].
pub const STORAGE_KEY: &str = "kvlab-state";

/// The app.
pub struct KvlabApp {
    /// The user's preferences (persisted by eframe).
    pub prefs: Prefs,
    /// The experiment being edited, with its results (persisted by autosave and session files).
    pub doc: Document,
    /// The loaded model.
    pub model: Option<ModelView>,
    /// The tokenized prompts of the current spec.
    pub prepared: Option<Prepared>,
    /// Why the prompts could not be tokenized.
    pub prepare_error: Option<String>,
    /// What the worker is doing.
    pub busy: Busy,
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
    /// The panels, with their own transient state.
    pub panels: Panels,
    /// The demo model, offered while no model is loaded (`None`: not in the cache).
    pub demo_model: Option<PathBuf>,
    /// Where autosaves go (`None`: no autosave, e.g. in tests).
    pub autosave_path: Option<PathBuf>,
    /// The compute devices llama.cpp sees (empty until the worker has started llama.cpp).
    pub devices: Vec<Device>,
    /// The model path's metadata, read without loading (follows `prefs.model_path`).
    pub peek: Option<ModelPeek>,
    /// File I/O and header reads, off the UI thread.
    pub tasks: BackgroundTasks,
    /// Close the window once the save under way succeeds (the close dialog's "Save").
    pub close_after_save: bool,
    /// This desktop shows no file dialogs (none came up when asked: no file-chooser portal or
    /// zenity). Set by the first one that fails, or by tests; then file commands say where else
    /// to go instead of trying.
    pub no_file_dialog: bool,
    ctx: egui::Context,
    saved_hash: u64,
    autosaved_hash: u64,
    last_autosave: Instant,
    title: String,
    allow_close: bool,
    commands: Commands,
    worker: Worker,
    prepared_for: Option<String>,
}

impl KvlabApp {
    /// Creates the app with preferences (restored or default), the seed experiment as its
    /// document, and a worker that wakes `ctx`.
    pub fn new(ctx: &egui::Context, prefs: Prefs) -> KvlabApp {
        let wake_ctx = ctx.clone();
        // Coalesce the worker's events (one per generated token) into at most ~20 frames/s.
        let worker = Worker::start(move || {
            wake_ctx.request_repaint_after(std::time::Duration::from_millis(50))
        });
        ctx.set_theme(if prefs.dark_mode {
            egui::Theme::Dark
        } else {
            egui::Theme::Light
        });
        let mut app = KvlabApp {
            prefs,
            doc: Document::seed(),
            model: None,
            prepared: None,
            prepare_error: None,
            busy: Busy::Idle,
            live: LiveGrid::default(),
            status: "Open a GGUF model to begin.".into(),
            error: None,
            slowest_frame_ms: 0.0,
            run_when_loaded: false,
            panels: Panels::default(),
            demo_model: super::demo_model_path().filter(|p| p.is_file()),
            autosave_path: None,
            devices: Vec::new(),
            peek: None,
            tasks: BackgroundTasks::default(),
            close_after_save: false,
            no_file_dialog: false,
            ctx: ctx.clone(),
            saved_hash: 0,
            autosaved_hash: 0,
            last_autosave: Instant::now(),
            title: String::new(),
            allow_close: false,
            commands: Commands::default(),
            worker,
            prepared_for: None,
        };
        app.saved_hash = app.doc.content_hash();
        app.autosaved_hash = app.saved_hash;
        app
    }

    /// Replaces the document (open, restore, reset): the one place a new document comes in.
    /// `saved` says whether it equals its file (false for a restored autosave or a new one
    /// that replaced unsaved work).
    pub fn replace_document(&mut self, doc: Document, saved: bool) {
        self.doc = doc;
        self.prefs.last_session_path = self.doc.path.clone();
        let hash = self.doc.content_hash();
        self.saved_hash = if saved { hash } else { hash.wrapping_add(1) };
        self.autosaved_hash = hash;
        self.prepared_for = None;
    }

    /// Whether the session has changes not saved to its file.
    pub fn is_dirty(&self) -> bool {
        self.doc.content_hash() != self.saved_hash
    }

    /// Whether the shown results came from a model other than the loaded one: the experiment
    /// is then read-only until the right model is loaded or the user re-runs on this one.
    pub fn is_read_only(&self) -> bool {
        match (&self.doc.results_model, &self.doc.results) {
            (Some(m), Some(_)) => self
                .model
                .as_ref()
                .is_none_or(|l| l.fingerprint != m.fingerprint),
            _ => false,
        }
    }

    /// The loaded model as a session records it.
    fn loaded_model_ref(&self) -> Option<ModelRef> {
        self.model.as_ref().map(|m| ModelRef {
            path: m.path.clone(),
            fingerprint: m.fingerprint.clone(),
            info: m.info.clone(),
        })
    }

    /// The session as it would be saved.
    pub fn to_session(&self) -> Session {
        self.doc.to_session(self.loaded_model_ref())
    }

    /// Opens a session file in the background; its experiment, notes and results replace the
    /// current ones when it has been read.
    pub fn open_session(&mut self, path: &std::path::Path) {
        let path = path.to_path_buf();
        self.status = format!("Opening {} …", path.display());
        if is_experiment_file(&path) {
            self.tasks
                .spawn("open", &self.ctx, move || tasks::open_experiment(path));
        } else {
            self.tasks
                .spawn("open", &self.ctx, move || tasks::open(path));
        }
    }

    /// Restores the autosaved session after a crash or a restart. The file it belonged to, if
    /// any, is unchanged, and stays the file the restored document saves to; the restored state
    /// counts as unsaved. Runs at start, before the first frame.
    pub fn restore_autosave(&mut self, path: &std::path::Path) {
        match Session::load(path) {
            Ok(s) => {
                let file = self.prefs.last_session_path.clone();
                self.replace_document(Document::from_session(s, file), false);
                self.status = "Restored the last session (autosave).".into();
            }
            Err(e) => tracing::warn!("the autosave could not be restored: {e}"),
        }
    }

    /// Saves to `path` in the background; once written it becomes the session's file.
    pub fn save_to(&mut self, path: &std::path::Path) {
        let (session, path) = (self.to_session(), path.to_path_buf());
        let hash = self.doc.content_hash();
        self.status = format!("Saving {} …", path.display());
        self.tasks
            .spawn("save", &self.ctx, move || tasks::save(session, path, hash));
    }

    /// Queues a command for the end of the frame.
    pub fn queue(&mut self, c: Command) {
        self.commands.push(c);
    }

    /// Whether a model is loaded and nothing is running.
    pub fn can_run(&self) -> bool {
        super::state::run_blocker(self.model.as_ref(), &self.busy).is_none()
    }

    /// Whether the "save changes before closing?" dialog is showing.
    pub fn is_asking_to_close(&self) -> bool {
        self.panels.close.open
    }

    /// Shows the "save changes before closing?" dialog (what a close request with unsaved
    /// changes does).
    pub fn ask_to_close(&mut self) {
        self.panels.close.open = true;
    }

    /// Takes everything the worker reported since the last frame.
    pub fn poll_worker(&mut self) {
        while let Some(ev) = self.worker.poll() {
            self.on_event(ev);
        }
    }

    /// The whole window's content.
    pub fn show(&mut self, ui: &mut Ui) {
        let frame_start = Instant::now();
        self.logic(ui.ctx());
        self.draw(ui, None);
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

    /// One panel alone, as the window would draw it (the snapshot tests); its commands stay
    /// queued.
    pub fn show_view(&mut self, ui: &mut Ui, view: View) {
        self.draw(ui, Some(view));
    }

    /// Lends the panels what they draw from: the whole window, or one panel.
    fn draw(&mut self, ui: &mut Ui, view: Option<View>) {
        let read_only = self.is_read_only();
        let blocker = super::state::run_blocker(self.model.as_ref(), &self.busy);
        let KvlabApp {
            prefs,
            doc,
            model,
            prepared,
            prepare_error,
            busy,
            live,
            status,
            error,
            devices,
            peek,
            tasks,
            panels,
            commands,
            demo_model,
            ..
        } = self;
        let ctx = ViewCtx {
            prefs,
            model: model.as_ref(),
            peek: peek.as_ref(),
            devices,
            busy,
            live,
            prepared: prepared.as_ref(),
            prepare_error: prepare_error.as_deref(),
            error: error.as_deref(),
            status,
            files_busy: !tasks.visible().is_empty(),
            read_only,
            run_blocker: blocker.as_deref(),
            demo_model: demo_model.as_deref(),
        };
        match view {
            None => panels.show(ui, &ctx, doc, commands),
            Some(v) => panels.show_one(v, ui, &ctx, doc, commands),
        }
    }

    /// Everything a frame does before drawing: the worker's events, finished side tasks,
    /// shortcuts and dropped files, the model path's header, the title with the unsaved mark,
    /// the autosave and the close guard.
    pub fn logic(&mut self, ctx: &egui::Context) {
        self.poll_worker();
        for out in self.tasks.poll() {
            self.on_task(out);
        }
        self.handle_input(ctx);
        if let Some(path) = self.prefs.model_path.clone()
            && self.peek.as_ref().is_none_or(|p| p.path != path)
        {
            self.peek = Some(ModelPeek {
                path: path.clone(),
                summary: None,
            });
            self.tasks.spawn("peek", ctx, move || tasks::peek(path));
        }
        let hash = self.doc.content_hash();
        let dirty = hash != self.saved_hash;
        let title = format!(
            "{}{} — kvlab",
            if dirty { "• " } else { "" },
            self.doc.spec.name
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
            self.ask_to_close();
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
        for c in commands::pressed(ctx) {
            if c == Command::Stop && self.busy == Busy::Idle {
                continue;
            }
            self.queue(c);
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if let Some(c) = dropped_file_command(&dropped) {
            match c {
                Ok(c) => self.queue(c),
                Err(message) => self.error = Some(message),
            }
        }
    }
}

/// Whether a file opened as a document is an experiment (`.json`, as `kvlab run` takes) rather
/// than a session.
pub fn is_experiment_file(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// What dropping files on the window does: the first `.gguf` loads as the model, else the first
/// `.kvlab` opens as the session, else the first `.json` opens as an experiment; anything else
/// is named in an error.
pub fn dropped_file_command(paths: &[PathBuf]) -> Option<Result<Command, String>> {
    let has_ext =
        |p: &PathBuf, ext: &str| p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext));
    if let Some(p) = paths.iter().find(|p| has_ext(p, "gguf")) {
        return Some(Ok(Command::LoadModel(p.clone())));
    }
    if let Some(p) = paths.iter().find(|p| has_ext(p, session::EXTENSION)) {
        return Some(Ok(Command::OpenSession(p.clone())));
    }
    if let Some(p) = paths.iter().find(|p| is_experiment_file(p)) {
        return Some(Ok(Command::OpenSession(p.clone())));
    }
    let first = paths.first()?;
    Some(Err(format!(
        "kvlab opens GGUF models (.gguf), sessions (.{}) and experiments (.json); {} is none of them",
        session::EXTENSION,
        first.display()
    )))
}

impl eframe::App for KvlabApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.prefs);
    }

    /// The last autosave is written before the window goes (the background writer may not
    /// finish once the process ends), so a restart restores exactly what was on screen.
    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        if let Some(path) = &self.autosave_path
            && self.doc.content_hash() != self.autosaved_hash
        {
            let bytes = self.to_session().to_json().into_bytes();
            if let Err(e) = tasks::write_autosave(path, &bytes) {
                tracing::warn!("autosave at exit failed: {e}");
            }
        }
    }
}
