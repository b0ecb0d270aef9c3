//! Side threads of the UI, owned in one place: opening and saving session files, the autosave,
//! and reading a model's header before loading it.
//!
//! The UI thread does no file I/O: a frame that waits on a disk (a network share, a slow USB
//! stick, a 50 MB session) freezes the window. Each task runs on its own named thread and
//! reports one [`TaskOutput`]; `KvlabApp::logic` polls them every frame, so the app always
//! knows what is still going on (the status bar names running tasks). llama.cpp work is not a
//! task here: it belongs to the [`worker`](super::worker), which owns the model.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use crate::gguf::GgufSummary;
use crate::session::{Session, SessionError};

/// What a finished task hands back to the UI thread.
#[derive(Debug)]
pub enum TaskOutput {
    /// A session file was read (or could not be).
    Opened {
        /// The file.
        path: PathBuf,
        /// Its session, or why it cannot be opened.
        result: Result<Box<Session>, SessionError>,
    },
    /// An experiment file (JSON) was read (or could not be).
    OpenedExperiment {
        /// The file.
        path: PathBuf,
        /// Its experiment, or why it cannot be opened (the message names the file).
        result: Result<Box<crate::experiment::ExperimentSpec>, String>,
    },
    /// The document was written to its file (or could not be).
    Saved {
        /// The file.
        path: PathBuf,
        /// The document's content hash when the save was asked for: saved if it still matches.
        hash: u64,
        /// The session's creation date as written, or why the save failed.
        result: Result<String, SessionError>,
    },
    /// The autosave file was written (failures are logged, not shown: the user did not ask).
    Autosaved(Result<(), SessionError>),
    /// A model file's header was read.
    Peeked {
        /// The file.
        path: PathBuf,
        /// Its metadata, or why it cannot be read.
        result: Result<GgufSummary, String>,
    },
}

/// A running task.
#[derive(Debug)]
struct Task {
    name: &'static str,
    started: Instant,
    rx: Receiver<TaskOutput>,
}

/// The UI's running side tasks.
#[derive(Debug, Default)]
pub struct BackgroundTasks {
    running: Vec<Task>,
}

impl BackgroundTasks {
    /// Runs `work` on a thread named `kvlab-NAME`; `ctx` is woken when it is done.
    pub fn spawn(
        &mut self,
        name: &'static str,
        ctx: &egui::Context,
        work: impl FnOnce() -> TaskOutput + Send + 'static,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("kvlab-{name}"))
            .spawn(move || {
                let _ = tx.send(work());
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => self.running.push(Task {
                name,
                started: Instant::now(),
                rx,
            }),
            // No thread (resource limits): say so where the result would have gone.
            Err(e) => tracing::error!("could not start the {name} task: {e}"),
        }
    }

    /// Takes the outputs of the tasks that finished since the last call.
    pub fn poll(&mut self) -> Vec<TaskOutput> {
        let mut done = Vec::new();
        self.running.retain(|t| match t.rx.try_recv() {
            Ok(out) => {
                tracing::debug!(
                    "task {} took {:.0} ms",
                    t.name,
                    t.started.elapsed().as_secs_f64() * 1000.0
                );
                done.push(out);
                false
            }
            Err(TryRecvError::Empty) => true,
            Err(TryRecvError::Disconnected) => {
                tracing::error!("the {} task ended without a result", t.name);
                false
            }
        });
        done
    }

    /// Whether a task of this name is running.
    pub fn is_running(&self, name: &str) -> bool {
        self.running.iter().any(|t| t.name == name)
    }

    /// Whether no task is running.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// The names of the running tasks the user asked for (not autosave or header reads), for
    /// the status bar.
    pub fn visible(&self) -> Vec<&'static str> {
        self.running
            .iter()
            .map(|t| t.name)
            .filter(|n| matches!(*n, "open" | "save"))
            .collect()
    }
}

/// Reads a session file.
pub fn open(path: PathBuf) -> TaskOutput {
    let result = Session::load(&path).map(Box::new);
    TaskOutput::Opened { path, result }
}

/// Reads an experiment file (JSON, as `kvlab run` takes).
pub fn open_experiment(path: PathBuf) -> TaskOutput {
    let result = crate::experiment::ExperimentSpec::from_file(&path).map(Box::new);
    TaskOutput::OpenedExperiment { path, result }
}

/// Writes a session to its file (atomically, keeping a backup).
pub fn save(mut session: Session, path: PathBuf, hash: u64) -> TaskOutput {
    let result = session.save(&path).map(|()| session.created);
    TaskOutput::Saved { path, hash, result }
}

/// Writes the autosave file (atomically), creating its folder.
pub fn autosave(bytes: Vec<u8>, path: PathBuf) -> TaskOutput {
    TaskOutput::Autosaved(write_autosave(&path, &bytes))
}

/// Writes the autosave file now, on the calling thread (at exit, when no thread would finish).
pub fn write_autosave(path: &std::path::Path, bytes: &[u8]) -> Result<(), SessionError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    crate::session::write_atomic(path, bytes, crate::session::Fault::None)
}

/// Reads a GGUF file's header.
pub fn peek(path: PathBuf) -> TaskOutput {
    let result = crate::gguf::read_summary(&path).map_err(|e| e.to_string());
    TaskOutput::Peeked { path, result }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(tasks: &mut BackgroundTasks) -> Vec<TaskOutput> {
        let t0 = Instant::now();
        loop {
            let out = tasks.poll();
            if !out.is_empty() || t0.elapsed().as_secs() > 10 {
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_save_then_an_open_round_trip_off_the_ui_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.kvlab");
        let ctx = egui::Context::default();
        let mut tasks = BackgroundTasks::default();
        let mut s = Session::new(crate::experiment::ExperimentSpec::seed());
        s.notes = "n".into();
        let (p, s2) = (path.clone(), s.clone());
        tasks.spawn("save", &ctx, move || save(s2, p, 7));
        assert!(tasks.is_running("save"));
        assert_eq!(tasks.visible(), ["save"]);
        match wait(&mut tasks).pop() {
            Some(TaskOutput::Saved {
                hash: 7, result, ..
            }) => {
                assert_eq!(result.unwrap(), s.created)
            }
            other => panic!("{other:?}"),
        }
        assert!(tasks.is_idle());
        let p = path.clone();
        tasks.spawn("open", &ctx, move || open(p));
        match wait(&mut tasks).pop() {
            Some(TaskOutput::Opened { result, .. }) => assert_eq!(result.unwrap().notes, "n"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_open_reports_the_error() {
        let ctx = egui::Context::default();
        let mut tasks = BackgroundTasks::default();
        tasks.spawn("open", &ctx, || open("/no/such/file.kvlab".into()));
        match wait(&mut tasks).pop() {
            Some(TaskOutput::Opened { result: Err(e), .. }) => {
                assert!(e.to_string().contains("/no/such/file.kvlab"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
}
