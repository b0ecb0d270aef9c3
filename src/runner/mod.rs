//! Runs an experiment on a loaded model, exactly as the seed did:
//! cache prompt[:-1] → intervene → feed the last prompt token → generate.
//!
//! Why this protocol: an intervention must act on a cache the model has already built, and its
//! effect must show in what the model does next. So each variant's prompt is evaluated once,
//! but its last token; every condition starts from a copy of that cache (state bytes, edited by
//! the codec, with cells removed too), then the last token is fed and generation runs. Baselines
//! continue the evaluated prompt in place, with no state round trip, so "the `none` condition
//! equals the baseline" is a real check of the copy path. All sequences decode together, one
//! batch per step; scoring reads what generation already computed and evaluates only the rest,
//! in the conditions' own sequences (no condition's state is kept as bytes).
//!
//! A run is a short sequence of steps, each in its own module:
//! - `plan`: prompts rendered and tokenized, every name, span and layer set resolved and
//!   checked before any context exists;
//! - `surgery`: a condition's starting cache (the only code that knows zero, transplant and
//!   remove);
//! - `generate`: all sequences advanced together, one batched decode per step;
//! - `score`: teacher-forced log-probs of continuations, shared by grids and sweeps;
//! - `assemble`: results from the measured numbers (pure);
//! - `sweep`: many conditions measured by scores alone;
//! - `dataset`: many items, packed into waves of grids.

mod assemble;
mod attention;
mod dataset;
mod delta;
pub mod fits;
mod generate;
mod plan;
mod prompts;
mod score;
mod surgery;
mod sweep;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use thiserror::Error;

use crate::engine::lab::BatchItem;
use crate::engine::{EngineError, Lab, LabOptions, LoadedModel, SeqState};
use crate::experiment::attention::{AttentionResults, PromptAttention};
use crate::experiment::results::{RunResults, RunSettings, Timings};
use crate::experiment::spec::{ExperimentSpec, Span, SpecError};

pub use attention::AttentionMode;
pub use dataset::{DatasetOptions, plan_waves, run_dataset};
pub use delta::kv_delta;
pub use prompts::{Prepared, PreparedPrompt, prepare_prompts};
pub(crate) use score::answer_ids;
pub use sweep::{run_sweep, shared_cells};

use plan::Plan;
use score::GridScores;

/// Why a run failed.
#[derive(Debug, Error)]
pub enum RunError {
    /// The spec does not fit the model or itself.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// llama.cpp or the state codec failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Stopped while the prompts were evaluated: nothing was generated, nothing to show.
    #[error(
        "stopped while evaluating the prompts ({done} of {total} tokens): nothing was generated"
    )]
    StoppedEarly {
        /// Prompt tokens evaluated.
        done: usize,
        /// Prompt tokens in all.
        total: usize,
    },
}

/// Run-time settings that are not part of the experiment.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// CPU threads for llama.cpp.
    pub threads: i32,
    /// Tokens per llama.cpp call.
    pub n_batch: u32,
    /// Compute one layer's full K/V difference rows between the first two variants.
    pub delta_layer: Option<usize>,
    /// Set to stop the run; what was generated so far is returned, marked incomplete.
    pub cancel: Arc<AtomicBool>,
    /// Whether to capture attention (grid runs; see `runner::attention`).
    pub attention: AttentionMode,
    /// How sweeps lay out their items' caches.
    pub sweep_caches: SweepCaches,
}

/// How a sweep lays out its items' caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SweepCaches {
    /// Shared where a whole state per item would cost much (a prompt state over
    /// [`SHARED_FROM_BYTES`]: Llama 3.1 8B from 512 tokens), else streams.
    #[default]
    Auto,
    /// Items share the prompt's cells in one KV stream and hold only their edited cells (see
    /// `runner::sweep`): an item costs its tokens, not a copy of the cache. The reference and
    /// remove items equal a grid's bit for bit; items with edited cells see those cells in
    /// another order than a grid does, which moves results (see the README). Models with a
    /// sliding-window cache use [`SweepCaches::Streams`].
    Shared,
    /// Each item's whole cache written into a stream of its own, the grid's layout: items equal
    /// grid conditions bit for bit on the CPU, at the cost of a cache copy per item.
    Streams,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: default_threads(),
            n_batch: 512,
            delta_layer: None,
            cancel: Arc::new(AtomicBool::new(false)),
            attention: AttentionMode::Off,
            sweep_caches: SweepCaches::Auto,
        }
    }
}

/// The prompt state size from which [`SweepCaches::Auto`] shares cells.
pub const SHARED_FROM_BYTES: u64 = 64 << 20;

/// The physical cores llama.cpp should use by default (at most 8).
pub fn default_threads() -> i32 {
    std::thread::available_parallelism()
        .map(|n| n.get().min(8) as i32)
        .unwrap_or(4)
}

/// What a run reports while it works (for progress bars and live grids).
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// A stage began.
    Stage(String),
    /// A token was generated. `row`: `Baseline(variant)` or `Condition(index)`.
    Token {
        /// Whose token.
        row: RowRef,
        /// Step index.
        step: usize,
        /// Its text.
        piece: String,
    },
    /// Work done out of the current stage's total: prompt tokens while the prompts are
    /// evaluated ([`EVALUATING_PROMPTS`]), generation and scoring steps after, sweep items.
    Progress {
        /// Units done.
        done: usize,
        /// Units in all.
        total: usize,
    },
}

/// A sequence of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRef {
    /// The baseline of variant i.
    Baseline(usize),
    /// Condition i.
    Condition(usize),
}

/// The stage during which [`RunEvent::Progress`] counts prompt tokens.
pub const EVALUATING_PROMPTS: &str = "evaluating prompts";

/// Runs `spec` on `model`.
pub fn run(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    options: &RunOptions,
    mut on_event: impl FnMut(RunEvent),
) -> Result<RunResults, RunError> {
    on_event(RunEvent::Stage("preparing prompts".into()));
    let plan = Plan::new(model, spec)?;
    let mode = options.attention;
    let mut lab = if mode.capture_lab() {
        Lab::with_attention_capture(model, plan.lab_options(options))?
    } else {
        Lab::new(model, plan.lab_options(options))?
    };
    let mut timings = Timings::default();

    on_event(RunEvent::Stage(EVALUATING_PROMPTS.into()));
    let t = Instant::now();
    let all: Vec<usize> = (0..plan.prompts.len()).collect();
    let prompt_attention = eval_prompt_tokens(&mut lab, &plan, &all, options, &mut on_event)?;
    timings.prompt_s = t.elapsed().as_secs_f64();

    // No prompt's state is held past here: each is read from the lab when an edit needs it.
    on_event(RunEvent::Stage("applying interventions".into()));
    let t = Instant::now();
    surgery::load_all(&mut lab, &plan)?;
    let kv_delta = delta::first_two(&plan.prompts, options.delta_layer, |v| {
        lab.scanned_state(v as i32)
    })?;
    timings.surgery_s = t.elapsed().as_secs_f64();
    let mut jobs = score::grid_jobs(model, &plan)?;
    let mut follows = score::follows(&plan, &jobs);

    on_event(RunEvent::Stage("generating".into()));
    let t = Instant::now();
    let capture = mode.capture_lab().then(|| attention::StepCapture {
        on: mode == AttentionMode::Capture,
        focus_len: plan
            .prompts
            .iter()
            .map(|p| p.tokens.len())
            .max()
            .unwrap_or(0),
        needle: plan.needle,
    });
    let generated = generate::generate(
        &mut lab,
        &plan,
        &mut follows,
        &options.cancel,
        capture.as_ref(),
        &mut on_event,
    )?;
    timings.generate_s = t.elapsed().as_secs_f64();
    timings.tokens_per_s = generated.n_tokens as f64 / timings.generate_s.max(1e-9);
    // Per variant its baseline, then per condition its generation.
    let mut baselines = generated.generations;
    let conditions = baselines.split_off(plan.prompts.len());
    let attention = prompt_attention.map(|variants| {
        let mut rows = generated.attention;
        let info = model.info();
        AttentionResults {
            n_layer: info.n_layer as usize,
            n_head: info.n_head as usize,
            needle: plan.needle,
            variants,
            conditions: rows.split_off(plan.prompts.len().min(rows.len())),
            baselines: rows,
        }
    });

    let t = Instant::now();
    score::with_baselines(&mut jobs, &baselines);
    let scores = if generated.complete {
        score_stage(&mut lab, &plan, &jobs, follows, options, &mut on_event)?
    } else {
        None
    };
    timings.score_s = t.elapsed().as_secs_f64();
    timings.score_tokens = scores.as_ref().map_or(0, |s| s.evaluated);
    // Complete when neither generating nor scoring was stopped.
    let complete = scores.is_some();
    let scores = scores.unwrap_or_else(|| GridScores::empty(plan.conditions.len()));
    Ok(RunResults {
        kvlab_version: env!("CARGO_PKG_VERSION").into(),
        llama_cpp_2_version: crate::engine::LLAMA_CPP_2_VERSION.into(),
        model: model.fingerprint().clone(),
        model_info: model.info().clone(),
        spec: spec.clone(),
        settings: settings(lab.options(), mode),
        needle_span: plan.needle,
        conditions: assemble::condition_results(&plan, conditions, &baselines, scores),
        variants: assemble::variant_results(&plan.prompts, baselines),
        kv_delta,
        complete,
        warnings: plan.warnings,
        timings,
        attention,
    })
}

/// The caches a run starts from, as llama.cpp holds them after the edits: what an audit of an
/// intervention compares (which bytes of which cells in which caches changed), without
/// generating anything.
#[derive(Debug, Clone)]
pub struct StartingCaches {
    /// Per variant, its evaluated prompt (every token but the last).
    pub prompts: Vec<SeqState>,
    /// Per condition, in the spec's order, its edited copy as read back from llama.cpp.
    pub conditions: Vec<SeqState>,
    /// The needle's token span.
    pub needle: crate::experiment::Span,
}

/// Evaluates the prompts and makes every condition's starting cache exactly as [`run`] does,
/// then reads each back from llama.cpp.
pub fn starting_caches(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    options: &RunOptions,
) -> Result<StartingCaches, RunError> {
    let plan = Plan::new(model, spec)?;
    let mut lab = Lab::new(model, plan.lab_options(options))?;
    let all: Vec<usize> = (0..plan.prompts.len()).collect();
    eval_prompt_tokens(&mut lab, &plan, &all, options, &mut |_| {})?;
    surgery::load_all(&mut lab, &plan)?;
    let prompts = (0..plan.prompts.len())
        .map(|v| lab.state(v as i32))
        .collect::<Result<_, _>>()?;
    let conditions = (plan.conditions.iter())
        .map(|c| lab.state(c.seq))
        .collect::<Result<_, _>>()?;
    Ok(StartingCaches {
        prompts,
        conditions,
        needle: plan.needle,
    })
}

/// A grid's scores measured the plain way, as kvlab measured them before scoring reused
/// generation: every continuation evaluated teacher-forced, token by token, from its condition's
/// starting cache restored from state bytes (as sweep items are scored). Per planned condition
/// (the spec's order): the baseline continuations' scores and the expected answers'.
#[derive(Debug, Clone)]
pub struct TeacherForced {
    /// Per condition, as [`crate::experiment::ConditionResult::scores`].
    pub scores: Vec<Vec<crate::experiment::results::ContinuationScore>>,
    /// Per condition, as [`crate::experiment::ConditionResult::expected`].
    pub expected: Vec<Vec<crate::experiment::outcome::ExpectedScore>>,
    /// Seconds spent scoring (restoring states and evaluating), prompts and surgery not counted.
    pub score_s: f64,
    /// Tokens evaluated.
    pub tokens: usize,
}

/// Scores `results`' grid again, teacher-forced from scratch (see [`TeacherForced`]): the
/// reference a run's reused scores are checked against (`tests/outcomes.rs`) and timed against
/// (`kvlab bench`).
pub fn score_teacher_forced(
    model: &LoadedModel,
    results: &RunResults,
    options: &RunOptions,
) -> Result<TeacherForced, RunError> {
    let plan = Plan::new(model, &results.spec)?;
    let mut lab = Lab::new(model, plan.lab_options(options))?;
    let (prompt_states, _) = eval_prompts(&mut lab, &plan, options, &mut |_| {})?;
    let states = (plan.conditions.iter())
        .map(|c| surgery::cache_bytes(c, &prompt_states))
        .collect::<Result<Vec<_>, _>>()?;
    drop(prompt_states);
    let mut jobs = score::grid_jobs(model, &plan)?;
    let baselines: Vec<_> = results
        .variants
        .iter()
        .map(|v| v.baseline.clone())
        .collect();
    score::with_baselines(&mut jobs, &baselines);
    let t = Instant::now();
    let scores = score::score_teacher_forced(&mut lab, &plan, &jobs, &states)?;
    Ok(TeacherForced {
        scores: scores.scores,
        expected: scores.expected,
        score_s: t.elapsed().as_secs_f64(),
        tokens: scores.evaluated,
    })
}

/// Scores every condition's continuations (the baselines' and the expected answers), reporting
/// progress as the second half of the run's work; `None` when stopped.
fn score_stage(
    lab: &mut Lab<'_>,
    plan: &Plan<'_>,
    jobs: &[score::GridJob],
    follows: Vec<generate::Follow>,
    options: &RunOptions,
    on_event: &mut impl FnMut(RunEvent),
) -> Result<Option<GridScores>, RunError> {
    on_event(RunEvent::Stage("scoring continuations".into()));
    let (n, max_tokens) = (jobs.len().max(1), plan.spec.generation.max_tokens);
    let on_wave = |done: usize| {
        on_event(RunEvent::Progress {
            done: max_tokens + done * max_tokens / n,
            total: 2 * max_tokens,
        })
    };
    Ok(score::score_grid(
        lab,
        plan,
        jobs,
        follows,
        &options.cancel,
        on_wave,
    )?)
}

/// The settings a run used: its context's shape.
fn settings(lab: LabOptions, mode: AttentionMode) -> RunSettings {
    RunSettings {
        attention: mode == AttentionMode::Capture,
        threads: lab.threads,
        n_ctx_per_seq: lab.n_ctx_per_seq,
        n_seq: lab.n_seq,
        n_batch: lab.n_batch,
        cache: lab.cache,
    }
}

/// Evaluates every variant's prompt but its last token (variant i in sequence i) and returns
/// each sequence's state: the cache every condition starts from; with capture on, also each
/// variant's prompt pass. A plain lab evaluates all prompts together, `n_batch` tokens per
/// call; a capturing lab each prompt on its own (see `runner::attention`).
/// Long prompts take minutes on a CPU: progress is reported per llama.cpp batch (in prompt
/// tokens) and a Stop is honoured between batches.
fn eval_prompts(
    lab: &mut Lab<'_>,
    plan: &Plan<'_>,
    options: &RunOptions,
    on_event: &mut impl FnMut(RunEvent),
) -> Result<(Vec<SeqState>, Option<Vec<PromptAttention>>), RunError> {
    let all: Vec<usize> = (0..plan.prompts.len()).collect();
    let attention = eval_prompt_tokens(lab, plan, &all, options, on_event)?;
    let states = (0..plan.prompts.len())
        .map(|vi| lab.state(vi as i32))
        .collect::<Result<_, _>>()?;
    Ok((states, attention))
}

/// Evaluates the prompts of `variants` (variant i into sequence i), as [`eval_prompts`] does,
/// leaving their caches in the lab.
fn eval_prompt_tokens(
    lab: &mut Lab<'_>,
    plan: &Plan<'_>,
    variants: &[usize],
    options: &RunOptions,
    on_event: &mut impl FnMut(RunEvent),
) -> Result<Option<Vec<PromptAttention>>, RunError> {
    let prompts = &plan.prompts;
    let chosen = |vi: &usize| variants.contains(vi);
    let chunk = lab.options().n_batch.max(1) as usize;
    // Each batch with the variant it captures for.
    let mut batches: Vec<(Option<usize>, Vec<BatchItem>)> = Vec::new();
    if options.attention.capture_lab() {
        for (vi, p) in prompts.iter().enumerate().filter(|(vi, _)| chosen(vi)) {
            let tokens: Vec<i32> = p.tokens.iter().map(|t| t.id).collect();
            for b in attention::prompt_chunks(vi as i32, &tokens, chunk) {
                batches.push((Some(vi), b));
            }
        }
    } else {
        let mut items = Vec::new();
        for (vi, p) in prompts.iter().enumerate().filter(|(vi, _)| chosen(vi)) {
            for (pos, t) in p.tokens[..p.tokens.len() - 1].iter().enumerate() {
                items.push(BatchItem {
                    seq: vi as i32,
                    token: t.id,
                    pos: pos as i32,
                    logits: false,
                });
            }
        }
        batches.extend(items.chunks(chunk).map(|c| (None, c.to_vec())));
    }
    let capture = options.attention == AttentionMode::Capture;
    let mut passes: Vec<PromptAttention> = prompts
        .iter()
        .map(|p| PromptAttention {
            carriers: Span {
                start: plan.needle.end,
                end: (p.tokens.len() - 1).max(plan.needle.end),
            },
            needle: Vec::new(),
        })
        .collect();
    let total: usize = batches.iter().map(|b| b.1.len()).sum();
    let mut done = 0;
    for (variant, part) in &batches {
        if options.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(RunError::StoppedEarly { done, total });
        }
        match variant {
            Some(vi) if capture => {
                attention::capture_prompt_chunk(lab, part, plan.needle, &mut passes[*vi])?
            }
            _ => lab.eval(part, |_, _| {})?,
        }
        done += part.len();
        if total > chunk {
            on_event(RunEvent::Progress { done, total });
        }
    }
    Ok(capture.then_some(passes))
}
