//! The cost of attention capture: the seed grid run plainly, in a capturing lab that captures
//! nothing, and capturing, interleaved and repeated so that a busy machine slows all three alike
//! (the fastest of each is kept).

use std::time::Instant;

use crate::engine::LoadedModel;
use crate::experiment::ExperimentSpec;
use crate::runner::{self, AttentionMode, RunError, RunOptions};

/// Seconds for the seed grid: plain (flash attention as configured), capture lab idle, capturing.
pub(super) fn capture_vs_plain(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    options: &RunOptions,
    reps: usize,
) -> Result<[f64; 3], RunError> {
    let mut best = [f64::INFINITY; 3];
    for _ in 0..reps.max(1) {
        for (i, mode) in [
            AttentionMode::Off,
            AttentionMode::IdleLab,
            AttentionMode::Capture,
        ]
        .into_iter()
        .enumerate()
        {
            let o = RunOptions {
                attention: mode,
                ..options.clone()
            };
            let t0 = Instant::now();
            runner::run(model, spec, &o, |_| {})?;
            best[i] = best[i].min(t0.elapsed().as_secs_f64());
        }
    }
    Ok(best)
}
