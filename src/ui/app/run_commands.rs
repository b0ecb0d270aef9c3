//! Carrying out the commands queued during a frame: the only place where the UI starts work
//! (the worker's jobs, file dialogs, side tasks) or replaces the document.

use super::*;

/// What Open model… says when no file dialog comes up.
pub const NO_DIALOG_MODEL: &str = "No file dialog is available on this desktop (no file-chooser \
    portal or zenity). Type or paste the model's path into the Model path field on the left and \
    press Load, or drop the file on the window.";
/// What Open session… says when no file dialog comes up.
pub const NO_DIALOG_OPEN: &str = "No file dialog is available on this desktop (no file-chooser \
    portal or zenity). Drop the session file on the window to open it, or pick it from \
    Session ▸ recent sessions.";
/// What Save as… says when no file dialog comes up.
pub const NO_DIALOG_SAVE: &str = "No file dialog is available on this desktop (no file-chooser \
    portal or zenity), so the session cannot be saved under a new name here. Sessions opened \
    from a file save back to it, and the work is autosaved.";

/// A dialog that returns nothing this fast did not come up: nobody cancels one in a blink.
const DIALOG_BLINK: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether a file dialog that returned nothing after `took` never showed.
pub fn dialog_did_not_show(took: std::time::Duration) -> bool {
    took < DIALOG_BLINK
}

impl KvlabApp {
    /// Shows a file dialog; when none comes up (it returned nothing at once, or an earlier one
    /// did), shows `instead` as the error: where else to go.
    fn file_dialog<T>(&mut self, instead: &str, show: impl FnOnce() -> Option<T>) -> Option<T> {
        if self.no_file_dialog {
            self.error = Some(instead.into());
            return None;
        }
        let t0 = Instant::now();
        let picked = show();
        if picked.is_none() && dialog_did_not_show(t0.elapsed()) {
            self.no_file_dialog = true;
            self.error = Some(instead.into());
        }
        picked
    }

    /// Runs the queued commands.
    pub fn run_commands(&mut self) {
        // Re-tokenize whenever the prompt or the variants changed.
        if self.model.is_some() && self.busy == Busy::Idle {
            let key = serde_json::to_string(&(
                &self.doc.spec.prompt,
                &self.doc.spec.variants,
                &self.doc.spec.needle_span,
            ))
            .unwrap_or_default();
            if self.prepared_for.as_deref() != Some(key.as_str()) {
                self.prepared_for = Some(key);
                self.commands.push(Command::Prepare);
            }
        }
        for c in self.commands.take() {
            match c {
                Command::PickModel => {
                    if let Some(path) = self.file_dialog(NO_DIALOG_MODEL, || {
                        rfd::FileDialog::new()
                            .add_filter("GGUF model", &["gguf"])
                            .pick_file()
                    }) {
                        self.queue(Command::LoadModel(path));
                        self.run_commands();
                    }
                }
                Command::LoadModel(path) => {
                    self.error = None;
                    self.busy = Busy::Loading(0.0);
                    self.status = format!("Loading {} …", path.display());
                    let options = crate::engine::LoadOptions {
                        n_gpu_layers: self.prefs.gpu_layers,
                    };
                    self.worker.send(Job::LoadModel(path, options));
                }
                Command::Stop => {
                    self.worker.stop();
                    self.status = "Stopping …".into();
                }
                Command::Run => self.start_run(),
                Command::Prepare => {
                    if self.model.is_some() {
                        self.worker.send(Job::Prepare(self.doc.spec.clone()));
                    }
                }
                Command::SeedGrid => {
                    self.doc.spec.conditions = self.doc.spec.seed_grid();
                }
                Command::ResetToSeed => {
                    // A new document: no results, no sweep, no file.
                    self.replace_document(Document::seed(), true);
                    self.status = "The seed experiment (a new, unsaved session).".into();
                }
                Command::Save => match self.doc.path.clone() {
                    Some(p) => {
                        self.save_to(&p);
                    }
                    None => self.queue(Command::SaveAs),
                },
                Command::SaveAs => {
                    let name = format!("{}.{}", self.doc.spec.name, session::EXTENSION);
                    if let Some(p) = self.file_dialog(NO_DIALOG_SAVE, || {
                        rfd::FileDialog::new()
                            .add_filter("kvlab session", &[session::EXTENSION])
                            .set_file_name(name)
                            .save_file()
                    }) {
                        self.save_to(&p);
                    } else {
                        self.close_after_save = false;
                    }
                }
                Command::Open => {
                    if let Some(p) = self.file_dialog(NO_DIALOG_OPEN, || {
                        rfd::FileDialog::new()
                            .add_filter(
                                "kvlab session or experiment",
                                &[session::EXTENSION, "json"],
                            )
                            .add_filter("kvlab session", &[session::EXTENSION])
                            .add_filter("experiment (JSON)", &["json"])
                            .pick_file()
                    }) {
                        self.open_session(&p);
                    }
                }
                Command::OpenSession(p) => self.open_session(&p),
                Command::Autosave => {
                    if let Some(path) = self.autosave_path.clone() {
                        // Serialized here (the document lives on this thread), written there.
                        let bytes = self.to_session().to_json().into_bytes();
                        self.tasks
                            .spawn("autosave", &self.ctx, move || tasks::autosave(bytes, path));
                    }
                }
                Command::RunSweep => self.start_sweep(),
                Command::CloseNow => self.allow_close = true,
                Command::SaveAndClose => {
                    self.close_after_save = true;
                    self.queue(Command::Save);
                    self.run_commands();
                }
                Command::SetPref(edit) => self.set_pref(edit),
                Command::ShowError(e) => self.error = Some(e),
                Command::DismissError => self.error = None,
            }
        }
    }

    /// Changes a preference; the theme takes effect at once.
    fn set_pref(&mut self, edit: crate::ui::prefs::PrefEdit) {
        let theme = matches!(edit, crate::ui::prefs::PrefEdit::DarkMode(_));
        self.prefs.apply(edit);
        if theme {
            self.ctx.set_theme(if self.prefs.dark_mode {
                egui::Theme::Dark
            } else {
                egui::Theme::Light
            });
        }
    }

    /// Starts the experiment on the worker; the previous results give way to the live grid.
    pub(super) fn start_run(&mut self) {
        if !self.can_run() {
            return;
        }
        if let Err(e) = self.doc.spec.validate() {
            self.error = Some(e.to_string());
            return;
        }
        self.error = None;
        self.slowest_frame_ms = 0.0;
        self.live = LiveGrid {
            baselines: vec![String::new(); self.doc.spec.variants.len()],
            conditions: vec![String::new(); self.doc.spec.conditions.len()],
            tokens: 0,
            started: Some(Instant::now()),
            sweep: false,
        };
        // The current results stay until this run completes (see `on_event`).
        self.busy = Busy::Running {
            stage: "starting".into(),
            done: 0,
            total: 1,
        };
        self.status = "Running …".into();
        let options = RunOptions {
            threads: self.prefs.threads.max(1),
            delta_layer: Some(self.prefs.delta_layer),
            attention: if self.prefs.attention {
                crate::runner::AttentionMode::Capture
            } else {
                crate::runner::AttentionMode::Off
            },
            ..RunOptions::default()
        };
        self.worker.send(Job::Run(self.doc.spec.clone(), options));
    }

    /// Starts the sweep chosen in the sweep tab on the worker.
    pub(super) fn start_sweep(&mut self) {
        if !self.can_run() {
            return;
        }
        let st = &self.prefs;
        let spec = &self.doc.spec;
        let Some(variant) = spec
            .variants
            .get(st.sweep_variant.min(spec.variants.len().saturating_sub(1)))
        else {
            return;
        };
        let op = match st.sweep_op.op(spec, &variant.name, None) {
            Ok(op) => op,
            Err(why) => {
                self.error = Some(why);
                return;
            }
        };
        let sweep = SweepSpec {
            kind: match st.sweep_choice {
                crate::ui::prefs::SweepChoice::Position => SweepKind::Position { range: None },
                crate::ui::prefs::SweepChoice::Span => SweepKind::Span { max_extra: 16 },
                crate::ui::prefs::SweepChoice::Layer => SweepKind::Layer,
                crate::ui::prefs::SweepChoice::PositionLayer => {
                    SweepKind::PositionLayer { range: None }
                }
            },
            variant: variant.name.clone(),
            op,
            layers: crate::experiment::LayerSet::All,
            part: crate::experiment::spec::KvPart::Both,
        };
        self.error = None;
        self.live = LiveGrid {
            started: Some(Instant::now()),
            sweep: true,
            ..LiveGrid::default()
        };
        self.busy = Busy::Running {
            stage: "sweeping".into(),
            done: 0,
            total: 1,
        };
        let options = RunOptions {
            threads: self.prefs.threads.max(1),
            ..RunOptions::default()
        };
        self.worker
            .send(Job::Sweep(self.doc.spec.clone(), sweep, options));
    }
}
