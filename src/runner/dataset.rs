//! Runs a dataset: its waves (see `experiment::dataset`'s expansion), each an ordinary grid run
//! in one context, so the sequences of many items share every decode step. Progress counts
//! items; a Stop ends the current wave and keeps the finished ones (marked incomplete).

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::engine::LoadedModel;
use crate::experiment::dataset::{self, DatasetResults, DatasetWave, Wave};
use crate::experiment::spec::{ExperimentSpec, MAX_SEQUENCES, SpecError};

use super::{RunError, RunEvent, RunOptions};

/// How a dataset run is shaped.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// Options of each wave's grid run (its `cancel` stops the dataset).
    pub run: RunOptions,
    /// The most sequences a wave holds (more items per wave share more of each decode step).
    pub max_sequences: usize,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            run: RunOptions::default(),
            max_sequences: MAX_SEQUENCES,
        }
    }
}

/// The waves of `spec`, as large as `max_sequences` and this machine's memory allow: a wave
/// that does not fit is halved until it does (each wave is checked again when it runs).
pub fn plan_waves(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    max_sequences: usize,
) -> Result<(Vec<Wave>, usize), SpecError> {
    let mut size = max_sequences.clamp(1, MAX_SEQUENCES);
    loop {
        let waves = dataset::expand(spec, size)?;
        let fits = waves
            .iter()
            .try_for_each(|w| super::fits::check(model, &w.spec));
        match fits {
            Ok(()) => return Ok((waves, size)),
            Err(e) if size <= 8 => return Err(e),
            Err(_) => size /= 2,
        }
    }
}

/// Runs the dataset of `spec` on `model`. Events: `Stage` per wave (and the wave's own stages,
/// prefixed), `Progress` in items after each wave. Stopped (by `options.run.cancel`), it
/// returns the waves finished so far with `complete` false.
pub fn run_dataset(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    options: &DatasetOptions,
    mut on_event: impl FnMut(RunEvent),
) -> Result<DatasetResults, RunError> {
    let started = Instant::now();
    let data = spec
        .dataset
        .as_ref()
        .ok_or_else(|| SpecError::Dataset("the experiment has no dataset".into()))?;
    spec.validate()?;
    let (waves, max_sequences) = plan_waves(model, spec, options.max_sequences)?;
    let items = dataset::items(data);
    let total = items.len();
    let mut out = DatasetResults {
        spec: spec.clone(),
        items,
        max_sequences,
        waves: Vec::new(),
        complete: false,
        seconds: 0.0,
    };
    let n_waves = waves.len();
    let mut done = 0;
    on_event(RunEvent::Progress { done, total });
    for (i, wave) in waves.into_iter().enumerate() {
        if options.run.cancel.load(Ordering::Relaxed) {
            break;
        }
        let prefix = format!(
            "wave {} of {n_waves} ({} items, {} cells in {} sequences)",
            i + 1,
            wave.items.len(),
            wave.spec.conditions.len(),
            wave.spec.n_sequences()
        );
        on_event(RunEvent::Stage(prefix.clone()));
        let result = super::run(model, &wave.spec, &options.run, |e| {
            if let RunEvent::Stage(s) = e {
                on_event(RunEvent::Stage(format!("{prefix}: {s}")));
            }
        });
        let results = match result {
            Ok(r) if r.complete => r,
            Ok(_) | Err(RunError::StoppedEarly { .. }) => break,
            Err(e) => return Err(e),
        };
        done += wave.items.len();
        out.waves.push(DatasetWave {
            template: wave.template,
            items: wave.items,
            results,
        });
        on_event(RunEvent::Progress { done, total });
    }
    out.complete = done == total;
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}
