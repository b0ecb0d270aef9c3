//! The background worker: one thread owns the llama.cpp model and runs every long task, so the
//! UI thread never waits on llama.cpp. The UI sends [`Job`]s and polls [`WorkerEvent`]s each frame;
//! the worker asks for a repaint whenever it sends one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use crate::engine::{Device, LoadOptions, LoadedModel, ModelFingerprint, ModelInfo};
use crate::experiment::sweep::{SweepResults, SweepSpec};
use crate::experiment::{ExperimentSpec, RunResults};
use crate::runner::{self, Prepared, RunEvent, RunOptions};

/// Work the UI asks for.
#[derive(Debug)]
pub enum Job {
    /// Load a model file (replacing the current one).
    LoadModel(PathBuf, LoadOptions),
    /// Render and tokenize the spec's prompts (for the token strip).
    Prepare(ExperimentSpec),
    /// Run an experiment.
    Run(ExperimentSpec, RunOptions),
    /// Run a sweep.
    Sweep(ExperimentSpec, SweepSpec, RunOptions),
}

/// What the worker reports.
#[derive(Debug)]
pub enum WorkerEvent {
    /// The compute devices llama.cpp sees (sent once, when the worker starts).
    Devices(Vec<Device>),
    /// Model loading progress, 0..=1.
    LoadProgress(f32),
    /// A model is ready.
    ModelLoaded {
        /// The GGUF file it was loaded from.
        path: PathBuf,
        /// Its metadata (boxed: the largest event by far).
        info: Box<ModelInfo>,
        /// Its fingerprint.
        fingerprint: ModelFingerprint,
        /// Why its cache cannot be edited (the engine's check), if it cannot.
        unsupported: Option<String>,
        /// Its sliding window in words, if it has one.
        attention: Option<String>,
    },
    /// Loading failed or was cancelled; the previous model (if any) is gone.
    LoadFailed(String),
    /// The spec's prompts, tokenized.
    Prepared(Box<Prepared>),
    /// The spec's prompts could not be prepared.
    PrepareFailed(String),
    /// Progress of a run.
    Run(RunEvent),
    /// A run finished (possibly stopped early: `complete == false`).
    RunDone(Box<RunResults>),
    /// A dataset run finished (possibly stopped: `complete == false`, finished items kept).
    DatasetDone(Box<crate::experiment::dataset::DatasetResults>),
    /// A run failed.
    RunFailed(String),
    /// A sweep finished (possibly stopped early: `complete == false`).
    SweepDone(Box<SweepResults>),
}

/// The UI's handle on the worker thread.
pub struct Worker {
    jobs: Sender<Job>,
    events: Receiver<WorkerEvent>,
    /// Set to stop a load or a run.
    pub cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker; `wake` is called after every event (e.g. to request a repaint).
    pub fn start(wake: impl Fn() + Send + Sync + 'static) -> Worker {
        let (job_tx, job_rx) = channel::<Job>();
        let (ev_tx, ev_rx) = channel::<WorkerEvent>();
        let cancel = Arc::new(AtomicBool::new(false));
        let cancel_w = cancel.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(wake);
        let thread = std::thread::Builder::new()
            .name("kvlab-llama".into())
            .spawn(move || worker_loop(job_rx, ev_tx, cancel_w, wake))
            .expect("the worker thread starts");
        Worker {
            jobs: job_tx,
            events: ev_rx,
            cancel,
            thread: Some(thread),
        }
    }

    /// Queues a job (clearing any earlier stop request).
    pub fn send(&self, job: Job) {
        if matches!(job, Job::LoadModel(..) | Job::Run(..) | Job::Sweep(..)) {
            self.cancel.store(false, Ordering::Relaxed);
        }
        let _ = self.jobs.send(job);
    }

    /// Asks the current load or run to stop.
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The next event, if any (never blocks).
    pub fn poll(&self) -> Option<WorkerEvent> {
        // Empty or disconnected (the worker is gone): nothing to show either way.
        self.events.try_recv().ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        // Closing the job channel ends the loop; a running job stops at its next check.
        let (dead_tx, _) = channel();
        self.jobs = dead_tx;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn worker_loop(
    jobs: Receiver<Job>,
    events: Sender<WorkerEvent>,
    cancel: Arc<AtomicBool>,
    wake: Arc<dyn Fn() + Send + Sync>,
) {
    let send = |e: WorkerEvent| {
        let _ = events.send(e);
        wake();
    };
    // Starting llama.cpp's backends (and enumerating GPUs) can take a moment: here, not in the UI.
    send(WorkerEvent::Devices(crate::engine::devices()));
    let mut model: Option<LoadedModel> = None;
    while let Ok(job) = jobs.recv() {
        match job {
            Job::LoadModel(path, load_options) => {
                model = None;
                let progress_tx = events.clone();
                let progress_wake = wake.clone();
                let result =
                    LoadedModel::load(&path, &load_options, Some(cancel.clone()), move |p| {
                        let _ = progress_tx.send(WorkerEvent::LoadProgress(p));
                        progress_wake();
                    });
                match result {
                    Ok(m) => {
                        send(WorkerEvent::ModelLoaded {
                            path: path.clone(),
                            info: Box::new(m.info().clone()),
                            fingerprint: m.fingerprint().clone(),
                            unsupported: m
                                .check_kv_surgery_supported()
                                .err()
                                .map(|e| e.to_string()),
                            attention: m.attention_summary(),
                        });
                        model = Some(m);
                    }
                    Err(e) => send(WorkerEvent::LoadFailed(e.to_string())),
                }
            }
            Job::Prepare(spec) => match &model {
                None => send(WorkerEvent::PrepareFailed("no model is loaded".into())),
                Some(m) => match runner::prepare_prompts(m, &spec) {
                    Ok(p) => send(WorkerEvent::Prepared(Box::new(p))),
                    Err(e) => send(WorkerEvent::PrepareFailed(e.to_string())),
                },
            },
            Job::Sweep(spec, sweep, mut options) => match &model {
                None => send(WorkerEvent::RunFailed("load a model first".into())),
                Some(m) => {
                    options.cancel = cancel.clone();
                    match runner::run_sweep(m, &spec, &sweep, &options, |e| {
                        send(WorkerEvent::Run(e))
                    }) {
                        Ok(r) => send(WorkerEvent::SweepDone(Box::new(r))),
                        Err(e) => send(WorkerEvent::RunFailed(e.to_string())),
                    }
                }
            },
            Job::Run(spec, mut options) => match &model {
                None => send(WorkerEvent::RunFailed("load a model first".into())),
                Some(m) => {
                    options.cancel = cancel.clone();
                    if spec.dataset.is_some() {
                        // Many items, batched in waves of grids.
                        let options = runner::DatasetOptions {
                            run: options,
                            ..runner::DatasetOptions::default()
                        };
                        match runner::run_dataset(m, &spec, &options, |e| send(WorkerEvent::Run(e)))
                        {
                            Ok(r) => send(WorkerEvent::DatasetDone(Box::new(r))),
                            Err(e) => send(WorkerEvent::RunFailed(e.to_string())),
                        }
                    } else {
                        match runner::run(m, &spec, &options, |e| send(WorkerEvent::Run(e))) {
                            Ok(r) => send(WorkerEvent::RunDone(Box::new(r))),
                            Err(e) => send(WorkerEvent::RunFailed(e.to_string())),
                        }
                    }
                }
            },
        }
    }
}
