//! A dataset's throughput: its items packed into waves (every sequence of a wave shares each
//! decode step) against the same items run one grid each, as they would be without datasets.

use std::time::Instant;

use crate::engine::LoadedModel;
use crate::experiment::ExperimentSpec;
use crate::experiment::dataset::{self, Pairs};
use crate::experiment::spec::Op;
use crate::runner::{self, DatasetOptions, RunError, RunOptions};

/// The shipped dataset cut to one prompt template, its listed pairs (`n_items` of them) and
/// the conditions a one-item grid can hold (a mean over every needle needs every needle's
/// prompt in each grid), generating `max_tokens`.
fn bench_dataset(n_items: usize, max_tokens: usize) -> ExperimentSpec {
    let text = include_str!("../../assets/experiments/cities.json");
    let mut spec = ExperimentSpec::from_json(text).expect("the shipped dataset is valid");
    spec.generation.max_tokens = max_tokens;
    let data = spec.dataset.as_mut().expect("cities.json has a dataset");
    data.templates.truncate(1);
    data.conditions.retain(|c| !matches!(c.op, Op::Mean { .. }));
    if let Pairs::Listed(p) = &mut data.pairs {
        p.truncate(n_items);
    }
    spec
}

/// Items per second: (batched in waves, one grid per item), and the number of items.
pub(super) fn dataset_vs_grids(
    model: &LoadedModel,
    options: &RunOptions,
    quick: bool,
) -> Result<(f64, f64, usize), RunError> {
    let spec = if quick {
        bench_dataset(4, 4)
    } else {
        bench_dataset(24, 16)
    };
    let n = dataset::items(spec.dataset.as_ref().expect("a dataset")).len();
    let batched_options = DatasetOptions {
        run: options.clone(),
        ..DatasetOptions::default()
    };
    let t0 = Instant::now();
    let batched = runner::run_dataset(model, &spec, &batched_options, |_| {})?;
    let batched_s = t0.elapsed().as_secs_f64();
    // One item per wave: its two needles and its conditions.
    let n_cond = spec.dataset.as_ref().map_or(0, |d| d.conditions.len());
    let t0 = Instant::now();
    for wave in dataset::expand(&spec, 2 + n_cond)? {
        runner::run(model, &wave.spec, options, |_| {})?;
    }
    let separate_s = t0.elapsed().as_secs_f64();
    let done = batched.finished_items();
    Ok((done as f64 / batched_s, n as f64 / separate_s, n))
}
