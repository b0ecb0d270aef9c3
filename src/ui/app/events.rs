//! What comes back to the UI thread: the worker's progress and results, and finished side
//! tasks (files read or written, model headers). Each changes the app in one place.

use super::*;

impl KvlabApp {
    /// Takes what the side tasks finished.
    pub(super) fn on_task(&mut self, out: TaskOutput) {
        match out {
            TaskOutput::Opened { path, result } => match result {
                Ok(s) => {
                    self.replace_document(Document::from_session(*s, Some(path.clone())), true);
                    self.prefs.remember_session(path.clone());
                    self.error = None;
                    self.status = format!("Opened {}.", path.display());
                    if self.is_read_only() {
                        self.status.push_str(
                            " Its results came from another model: read-only until it is loaded.",
                        );
                    }
                    // With no model loaded yet, load the session's own (else the last one).
                    if self.model.is_none() && self.busy == Busy::Idle {
                        let model = self
                            .doc
                            .results_model
                            .as_ref()
                            .map(|m| m.path.clone())
                            .filter(|p| p.is_file())
                            .or_else(|| self.prefs.model_path.clone().filter(|p| p.is_file()));
                        if let Some(m) = model {
                            self.queue(Command::LoadModel(m));
                        }
                    }
                }
                Err(e) => {
                    self.status = "Nothing opened.".into();
                    self.error = Some(e.to_string());
                }
            },
            // An experiment becomes a new, unsaved document: saving asks where (never over
            // the JSON file).
            TaskOutput::OpenedExperiment { path, result } => match result {
                Ok(spec) => {
                    let name = spec.name.clone();
                    self.replace_document(Document::from_session(Session::new(*spec), None), false);
                    self.error = None;
                    self.status = format!(
                        "Opened the experiment {name:?} from {}: Run to measure it.",
                        path.display()
                    );
                }
                Err(e) => {
                    self.status = "Nothing opened.".into();
                    self.error = Some(e);
                }
            },
            TaskOutput::Saved { path, hash, result } => match result {
                Ok(created) => {
                    self.prefs.remember_session(path.clone());
                    self.doc.path = Some(path.clone());
                    self.doc.created = Some(created);
                    self.prefs.last_session_path = self.doc.path.clone();
                    self.saved_hash = hash;
                    self.status = format!("Saved {}.", path.display());
                    if std::mem::take(&mut self.close_after_save) {
                        self.allow_close = true;
                    }
                }
                Err(e) => {
                    self.close_after_save = false;
                    self.status = "Not saved.".into();
                    self.error = Some(format!("could not save: {e}"));
                }
            },
            TaskOutput::Autosaved(result) => {
                if let Err(e) = result {
                    tracing::warn!("autosave failed: {e}");
                }
            }
            TaskOutput::Peeked { path, result } => {
                if let Some(peek) = self.peek.as_mut().filter(|p| p.path == path) {
                    peek.summary = Some(result);
                }
            }
        }
    }

    pub(super) fn on_event(&mut self, ev: WorkerEvent) {
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
                unsupported,
                attention,
            } => {
                self.busy = Busy::Idle;
                self.status = format!(
                    "Loaded {} ({}, {} layers).",
                    fingerprint.file_name, info.architecture, info.n_layer
                );
                if let Some(why) = &unsupported {
                    self.status = format!(
                        "Loaded {} for inspection only: {why}",
                        fingerprint.file_name
                    );
                }
                self.prefs.remember_model(path.clone());
                let can_edit = unsupported.is_none();
                self.model = Some(ModelView {
                    path,
                    info: *info,
                    fingerprint,
                    gpu_layers: self.prefs.gpu_layers,
                    unsupported,
                    attention,
                });
                self.prepared_for = None;
                self.queue(Command::Prepare);
                if std::mem::take(&mut self.run_when_loaded) && can_edit {
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
            WorkerEvent::RunDone(r) => self.on_run_done(*r),
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
                self.doc.sweep = Some(*r);
                self.doc.touch();
            }
            WorkerEvent::DatasetDone(r) => {
                self.busy = Busy::Idle;
                let done = r
                    .rows()
                    .iter()
                    .map(|row| row.item)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                self.status = format!(
                    "Dataset {}: {done} of {} items in {:.0} s.",
                    if r.complete {
                        "finished"
                    } else {
                        "stopped (finished items kept)"
                    },
                    r.items.len(),
                    r.seconds
                );
                // As with grids, a Stop never replaces a complete dataset by a partial one.
                let keep_previous =
                    !r.complete && self.doc.dataset.as_ref().is_some_and(|p| p.complete);
                if keep_previous {
                    self.status += " The previous complete dataset results are kept.";
                } else {
                    self.doc.dataset = Some(*r);
                    self.doc.results_model = self.loaded_model_ref();
                    self.doc.touch();
                }
                tracing::info!(target: "kvlab::ui", "{}", self.status);
                self.prefs.tab = crate::ui::prefs::AnalysisTab::Dataset;
            }
            WorkerEvent::RunFailed(e) => {
                self.busy = Busy::Idle;
                self.status = "Run failed.".into();
                self.error = Some(e);
            }
        }
    }

    /// A run ended: its results replace the document's, unless it was stopped and the document
    /// holds a complete run.
    fn on_run_done(&mut self, r: crate::experiment::RunResults) {
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
        let keep_previous = !r.complete && self.doc.results.as_ref().is_some_and(|p| p.complete);
        if keep_previous {
            // Never lose a complete result to a Stop: the partial run is dropped.
            self.status = format!(
                "Run stopped after {} tokens; the previous complete results are kept.",
                self.live.tokens
            );
        } else {
            self.doc.results = Some(r);
            self.doc.results_model = self.loaded_model_ref();
            self.doc.touch();
        }
        tracing::info!(target: "kvlab::ui", "{}", self.status);
    }
}
