//! A dataset's throughput: its items packed into waves (every sequence of a wave shares each
//! decode step, and a needle's items share the runs that do not name their partner) against the
//! same items run one grid each, as they would be without datasets. Two shapes: the shipped
//! listed pairs (each needle edited for one partner: only decode steps are shared) and every
//! ordered pair of a few needles (each needle edited for all the others).

use std::time::Instant;

use crate::engine::LoadedModel;
use crate::experiment::ExperimentSpec;
use crate::experiment::dataset::{self, Pairs};
use crate::experiment::spec::Op;
use crate::runner::{self, DatasetOptions, RunError, RunOptions};

/// The pairs a bench dataset compares.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The shipped listed pairs, the first `n` of them.
    Listed(usize),
    /// Every ordered pair of the first `n` needles.
    AllPairs(usize),
}

/// The shipped dataset cut to one prompt template and the pairs of `shape`, with the
/// conditions a one-item grid can hold (a mean over every needle needs every needle's prompt
/// in each grid), generating `max_tokens`.
fn bench_dataset(shape: Shape, max_tokens: usize) -> ExperimentSpec {
    let text = include_str!("../../assets/experiments/cities.json");
    let mut spec = ExperimentSpec::from_json(text).expect("the shipped dataset is valid");
    spec.generation.max_tokens = max_tokens;
    let data = spec.dataset.as_mut().expect("cities.json has a dataset");
    data.templates.truncate(1);
    data.conditions.retain(|c| !matches!(c.op, Op::Mean { .. }));
    match shape {
        Shape::Listed(n) => {
            if let Pairs::Listed(p) = &mut data.pairs {
                p.truncate(n);
            }
        }
        Shape::AllPairs(n) => {
            data.needles.truncate(n);
            data.pairs = Pairs::All;
        }
    }
    spec
}

/// One dataset's throughput, batched against one grid per item.
#[derive(Debug, Clone, Copy)]
pub(super) struct Throughput {
    /// Items per second, batched in waves.
    pub batched: f64,
    /// Items per second, one grid each.
    pub separate: f64,
    /// Items measured.
    pub items: usize,
}

/// Items per second of the listed-pairs dataset, then of the all-pairs one.
pub(super) fn dataset_vs_grids(
    model: &LoadedModel,
    options: &RunOptions,
    quick: bool,
) -> Result<(Throughput, Throughput), RunError> {
    let (listed, all, tokens) = if quick {
        (Shape::Listed(4), Shape::AllPairs(3), 4)
    } else {
        (Shape::Listed(24), Shape::AllPairs(6), 16)
    };
    Ok((
        throughput(model, &bench_dataset(listed, tokens), options)?,
        throughput(model, &bench_dataset(all, tokens), options)?,
    ))
}

/// `spec`'s items per second, batched and one grid each.
fn throughput(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    options: &RunOptions,
) -> Result<Throughput, RunError> {
    let n = dataset::items(spec.dataset.as_ref().expect("a dataset")).len();
    let batched_options = DatasetOptions {
        run: options.clone(),
        ..DatasetOptions::default()
    };
    let t0 = Instant::now();
    let batched = runner::run_dataset(model, spec, &batched_options, |_| {})?;
    let batched_s = t0.elapsed().as_secs_f64();
    // One item per wave: its two needles and its conditions.
    let n_cond = spec.dataset.as_ref().map_or(0, |d| d.conditions.len());
    let t0 = Instant::now();
    let waves = dataset::expand(spec, 2 + n_cond)?;
    debug_assert_eq!(waves.len(), n, "one item per wave");
    for wave in waves {
        runner::run(model, &wave.spec, options, |_| {})?;
    }
    let separate_s = t0.elapsed().as_secs_f64();
    Ok(Throughput {
        batched: batched.finished_items() as f64 / batched_s,
        separate: n as f64 / separate_s,
        items: n,
    })
}
