//! Sweeps: many conditions on one variant's prompt, each measured by teacher-forced scores
//! rather than a generation. Items are ordinary conditions, planned, made by [`surgery`] and
//! scored by [`score`] exactly as in a grid, so a sweep item and the same grid condition give
//! the same numbers. Caches are made a wave at a time: a position × layer sweep has thousands
//! of items, and their states do not all fit in memory at once.
//!
//! Where the model allows it, items are made in a shared lab (see [`shared`]): a sequence that
//! shares the prompt's cells and holds only its edited ones, so an item costs its tokens and
//! not a copy of the cache. Otherwise (sliding-window caches, or when asked for with
//! [`SweepCaches::Streams`]) each item's whole state is written into a stream of its own, the
//! grid's layout.

mod shared;

use std::sync::atomic::Ordering;

use crate::engine::{Lab, LabOptions, LoadedModel, SeqState};
use crate::experiment::Condition;
use crate::experiment::spec::{ExperimentSpec, Op, SpecError};
use crate::experiment::sweep::{SweepItem, SweepPoint, SweepResults, SweepSpec};
use shared::SharedCaches;
pub use shared::shared_cells;

use super::plan::{Plan, PlannedCondition};
use super::prompts::{Prepared, prepare_prompts};
use super::score::{self, Job, Scored};
use super::{RunError, RunEvent, RunOptions, SweepCaches, assemble, eval_prompts, run, surgery};

/// What each item is measured by: continuations, each belonging to a variant.
struct Measure {
    /// (variant index, tokens), in variant order.
    continuations: Vec<(usize, Vec<i32>)>,
    /// What they are, in words.
    name: String,
    /// Whether they are the variants' expected answers (else their baselines).
    expected: bool,
}

/// Runs a sweep: every item is a condition on `sweep.variant`'s prompt, measured teacher-forced
/// (expected answers when the variants have them, else each variant's greedy baseline
/// continuation of `spec.generation.max_tokens` tokens) from a copy of the one evaluated prompt
/// cache. Items are scored in batches of `n_seq`; stopping keeps the points measured so far.
pub fn run_sweep(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    sweep: &SweepSpec,
    options: &RunOptions,
    mut on_event: impl FnMut(RunEvent),
) -> Result<SweepResults, RunError> {
    if sweep.op == Op::None {
        return Err(SpecError::Generation(
            "a sweep applies an intervention to each item; none is the reference it is compared with".into(),
        )
        .into());
    }
    let Prepared {
        prompts,
        span: needle,
        ..
    } = prepare_prompts(model, spec)?;
    super::fits::check(model, spec)?;
    let n_layer = model.info().n_layer;
    let vi = spec.variant_index(&sweep.variant).ok_or_else(|| {
        SpecError::Variants(format!("there is no variant named {:?}", sweep.variant))
    })?;
    let items = sweep.items(prompts[vi].tokens.len(), n_layer, needle);
    let sweep_spec = ExperimentSpec {
        conditions: conditions(sweep, &items),
        ..spec.clone()
    };
    let shape = super::plan::CacheShape {
        n_layer,
        n_head_kv: model.info().n_head_kv,
    };
    let plan = Plan::resolve(&sweep_spec, prompts, needle, shape)?;
    let measure = what_to_measure(model, spec, options, &mut on_event)?;
    let probe_ids = score::probe_token_ids(model, &spec.probes);

    // One context: the prompts first, then a sequence per job (item × continuation) of a wave.
    let n_jobs = plan.conditions.len() * measure.continuations.len().max(1);
    let n_slots = n_jobs.clamp(1, 16) as u32;
    // Sweeps measure by scores alone: no attention capture (a plain lab).
    let plain = RunOptions {
        attention: super::AttentionMode::Off,
        ..options.clone()
    };
    let state_bytes = (plan.prompts[vi].tokens.len() as u64)
        * super::fits::kv_bytes_per_cell(model.info(), spec.cache);
    let share = shared::model_allows(model)
        && match options.sweep_caches {
            SweepCaches::Auto => state_bytes > super::SHARED_FROM_BYTES,
            SweepCaches::Shared => true,
            SweepCaches::Streams => false,
        };
    if options.sweep_caches == SweepCaches::Shared && !share {
        // Asked for, not possible: say so rather than quietly measure another layout.
        on_event(RunEvent::Stage(
            "shared caches asked for, but this model has a sliding-window cache, which cannot \
             share cells: each item gets a stream of its own"
                .into(),
        ));
    }
    let mut caches = if share {
        let max_cont = measure.continuations.iter().map(|c| c.1.len()).max();
        let shared = SharedCaches::open(
            model,
            &plan,
            max_cont.unwrap_or(0),
            n_slots,
            &plain,
            &mut on_event,
        )?;
        Caches::Shared(shared)
    } else {
        let mut lab = Lab::new(model, lab_options(&plan, &measure, n_slots, options))?;
        on_event(RunEvent::Stage(super::EVALUATING_PROMPTS.into()));
        let (prompt_states, _) = eval_prompts(&mut lab, &plan, &plain, &mut on_event)?;
        Caches::Streams { lab, prompt_states }
    };

    on_event(RunEvent::Stage("sweeping".into()));
    let sweeper = Sweeper {
        plan: &plan,
        items: &items,
        measure: &measure,
        probe_ids: &probe_ids,
    };
    let per_wave = (n_slots as usize / measure.continuations.len().max(1)).max(1);
    let total = plan.conditions.len();
    let mut points: Vec<SweepPoint> = Vec::new();
    let mut complete = true;
    for wave in plan.conditions.chunks(per_wave) {
        if options.cancel.load(Ordering::Relaxed) {
            complete = false;
            break;
        }
        points.extend(sweeper.measure_wave(&mut caches, wave)?);
        on_event(RunEvent::Progress {
            done: points.len(),
            total,
        });
    }
    if points.is_empty() {
        return Err(
            SpecError::Generation("the sweep was stopped before its first item".into()).into(),
        );
    }
    let reference = points.remove(0);
    Ok(SweepResults {
        sweep: sweep.clone(),
        measure: measure.name,
        reference,
        points,
        complete,
        tokens: plan.prompts[vi].tokens.clone(),
        spec: Some(spec.clone()),
        sliding_layers: model.info().sliding_layers.clone(),
        sliding_window: model.info().sliding_window,
        shared_cache: share,
    })
}

/// The sweep's conditions: the reference (no intervention), then one per item.
fn conditions(sweep: &SweepSpec, items: &[SweepItem]) -> Vec<Condition> {
    let reference = Condition::new(sweep.variant.clone(), Op::None);
    std::iter::once(reference)
        .chain(items.iter().map(|i| i.condition.clone()))
        .collect()
}

/// The expected answers when the variants have them, else every variant's greedy baseline
/// continuation (a run without conditions).
fn what_to_measure(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    options: &RunOptions,
    on_event: &mut impl FnMut(RunEvent),
) -> Result<Measure, RunError> {
    if spec.variants.iter().any(|v| !v.expected.is_empty()) {
        let mut continuations = Vec::new();
        for (vj, v) in spec.variants.iter().enumerate() {
            for a in &v.expected {
                continuations.push((vj, score::answer_ids(model, a)?));
            }
        }
        return Ok(Measure {
            continuations,
            name: "expected answers".into(),
            expected: true,
        });
    }
    on_event(RunEvent::Stage("generating baselines".into()));
    let base_spec = ExperimentSpec {
        conditions: Vec::new(),
        ..spec.clone()
    };
    let base = run(model, &base_spec, options, |_| {})?;
    Ok(Measure {
        continuations: base
            .variants
            .iter()
            .enumerate()
            .map(|(vj, v)| (vj, v.baseline.tokens.clone()))
            .collect(),
        name: format!(
            "baseline continuations ({} tokens)",
            spec.generation.max_tokens
        ),
        expected: false,
    })
}

/// The sweep's context: enough sequences for the prompts and for `n_slots` scoring jobs, each
/// long enough for a prompt and the longest continuation.
fn lab_options(plan: &Plan<'_>, measure: &Measure, n_slots: u32, o: &RunOptions) -> LabOptions {
    let max_cont = measure.continuations.iter().map(|c| c.1.len()).max();
    let max_prompt = plan.prompts.iter().map(|p| p.tokens.len()).max();
    LabOptions {
        n_seq: n_slots.max(plan.prompts.len() as u32),
        n_ctx_per_seq: (max_prompt.unwrap_or(0) + max_cont.unwrap_or(0) + 8) as u32,
        threads: o.threads,
        n_batch: o.n_batch,
        cache: plan.spec.cache,
    }
}

/// Where a sweep's item caches are made.
enum Caches<'m> {
    /// A stream per item, each written whole from its variant's prompt state.
    Streams {
        lab: Lab<'m>,
        prompt_states: Vec<SeqState>,
    },
    /// One stream all items share (see [`shared`]).
    Shared(SharedCaches<'m>),
}

/// What measuring a wave needs.
struct Sweeper<'a> {
    plan: &'a Plan<'a>,
    /// The sweep's items; condition i > 0 realizes item i - 1 (condition 0 is the reference).
    items: &'a [SweepItem],
    measure: &'a Measure,
    probe_ids: &'a [Option<usize>],
}

impl Sweeper<'_> {
    /// Makes a wave's caches, scores every continuation from
    /// each in one batched evaluation, and makes each condition's point.
    fn measure_wave(
        &self,
        caches: &mut Caches<'_>,
        wave: &[PlannedCondition],
    ) -> Result<Vec<SweepPoint>, RunError> {
        let continuations: Vec<&[i32]> = (self.measure.continuations.iter())
            .map(|(_, t)| t.as_slice())
            .collect();
        let scored = match caches {
            Caches::Streams { lab, prompt_states } => {
                self.score_streams(lab, prompt_states, wave, &continuations)?
            }
            Caches::Shared(shared) => {
                shared.scores(self.plan, wave, &continuations, self.probe_ids)?
            }
        };
        let mut scored = scored.into_iter();
        let n_cont = self.measure.continuations.len();
        let mut points = Vec::with_capacity(wave.len());
        for c in wave {
            let per_cont: Vec<Scored> = scored.by_ref().take(n_cont).collect();
            let first_probes = per_cont.first().map(|s| s.first_probes.clone());
            let expected: Vec<_> = (self.measure.continuations.iter())
                .zip(per_cont)
                .map(|((vj, _), s)| {
                    let variant = &self.plan.spec.variants[*vj].name;
                    score::expected_score(variant, "", s.per_token)
                })
                .collect();
            points.push(assemble::sweep_point(
                self.plan.spec,
                &self.plan.condition(c).variant,
                c.index.checked_sub(1).map(|i| &self.items[i]),
                &expected,
                self.measure.expected,
                first_probes.unwrap_or_default(),
            ));
        }
        Ok(points)
    }

    /// Scores a wave with each item's whole state written into a stream of its own.
    fn score_streams(
        &self,
        lab: &mut Lab<'_>,
        prompt_states: &[SeqState],
        wave: &[PlannedCondition],
        continuations: &[&[i32]],
    ) -> Result<Vec<Scored>, RunError> {
        let caches = wave
            .iter()
            .map(|c| surgery::cache_bytes(c, prompt_states))
            .collect::<Result<Vec<_>, _>>()?;
        let jobs: Vec<Job<'_>> = wave
            .iter()
            .zip(&caches)
            .flat_map(|(c, state)| {
                let prompt = &self.plan.prompts[c.variant];
                continuations.iter().map(move |tokens| Job {
                    state,
                    prompt,
                    tokens,
                })
            })
            .collect();
        Ok(score::score_wave(lab, &jobs, self.probe_ids)?)
    }
}
