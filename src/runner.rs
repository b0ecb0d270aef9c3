//! Runs an experiment on a loaded model, exactly as the seed did:
//! cache prompt[:-1] → intervene → feed the last prompt token → generate.
//!
//! Each variant's prompt is evaluated once; every condition starts from a copy of that cache
//! (state bytes, edited by the codec). Baselines continue the evaluated prompt in place, with no
//! state round trip, so "the `none` condition equals the baseline" is a real check of the
//! copy path. All sequences decode together, one batch per step.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use thiserror::Error;

use crate::engine::lab::BatchItem;
use crate::engine::{EngineError, Lab, LabOptions, LoadedModel, SeqState, TokenPiece};
use crate::experiment::jinja;
use crate::experiment::metrics::{self, LogProbs, Rng};
use crate::experiment::needle::{check_span_in_cache, differing_span};
use crate::experiment::outcome::{self, ExpectedScore};
use crate::experiment::results::*;
use crate::experiment::spec::{ExperimentSpec, Intervention, PromptMode, Span, SpecError};
use crate::experiment::sweep::{SweepPoint, SweepResults, SweepSpec};

/// Why a run failed.
#[derive(Debug, Error)]
pub enum RunError {
    /// The spec does not fit the model or itself.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// llama.cpp or the state codec failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: default_threads(),
            n_batch: 512,
            delta_layer: None,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

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
    /// Steps done out of total (generation and scoring).
    Progress {
        /// Done.
        done: usize,
        /// Total.
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

/// A variant's prompt, rendered and tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedPrompt {
    /// The variant's name.
    pub name: String,
    /// The rendered text.
    pub text: String,
    /// Its tokens.
    pub tokens: Vec<TokenPiece>,
}

impl PreparedPrompt {
    fn ids(&self) -> Vec<i32> {
        self.tokens.iter().map(|t| t.id).collect()
    }
}

/// Every variant's prompt, rendered and tokenized, the needle span, and warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// One per variant, in spec order.
    pub prompts: Vec<PreparedPrompt>,
    /// The needle span (given or found).
    pub span: Span,
    /// What the user should know about the rendering.
    pub warnings: Vec<String>,
}

/// Renders the conversation of one variant with the model's Jinja template.
fn render_jinja(model: &LoadedModel, turns: &[(String, String)]) -> Result<String, RunError> {
    let template = model.chat_template_source().ok_or_else(|| {
        SpecError::Generation(
            "this model has no chat template; use the plain-text prompt mode".into(),
        )
    })?;
    let messages: Vec<jinja::Message<'_>> = turns
        .iter()
        .map(|(role, content)| jinja::Message { role, content })
        .collect();
    let (bos, eos) = model.bos_eos_text();
    jinja::render(&template, &messages, &bos, &eos)
        .map_err(|e| RunError::Engine(EngineError::Prompt(e.to_string())))
}

/// Renders and tokenizes every variant's prompt and finds the needle span.
pub fn prepare_prompts(model: &LoadedModel, spec: &ExperimentSpec) -> Result<Prepared, RunError> {
    spec.validate()?;
    let mut prompts = Vec::new();
    let mut warnings = Vec::new();
    for v in &spec.variants {
        let turns = spec.filled_turns(v);
        let (text, parse_special) = match spec.prompt.mode {
            PromptMode::Plain => (spec.plain_prompt(v), false),
            PromptMode::ChatBuiltin => (model.render_chat(&turns)?, true),
            PromptMode::ChatTemplate => {
                let text = render_jinja(model, &turns)?;
                if warnings.is_empty()
                    && let Ok(builtin) = model.render_chat(&turns)
                    && builtin != text
                {
                    warnings.push(format!(
                        "llama.cpp's built-in renderer and the model's Jinja template render this \
                         conversation differently ({} vs {} characters{}); kvlab uses the Jinja \
                         rendering, as the model's authors intended",
                        builtin.len(),
                        text.len(),
                        if text.contains("system") && !builtin.contains("system") {
                            ", the template adds a default system prompt"
                        } else {
                            ""
                        }
                    ));
                }
                (text, true)
            }
        };
        let tokens = model.tokenize(&text, true, parse_special)?;
        if tokens.len() < 2 {
            return Err(SpecError::Span(format!(
                "the prompt of {} has {} token(s); it needs at least 2",
                v.name,
                tokens.len()
            ))
            .into());
        }
        prompts.push(PreparedPrompt {
            name: v.name.clone(),
            text,
            tokens,
        });
    }
    let span = match spec.needle_span {
        Some(s) => s,
        None => {
            let ids: Vec<Vec<i32>> = prompts.iter().map(|p| p.ids()).collect();
            let refs: Vec<&[i32]> = ids.iter().map(|v| v.as_slice()).collect();
            differing_span(&refs).ok_or_else(|| {
                SpecError::Span(
                    "the variants tokenize identically, so there is no needle to find: give \
                     the variants different needle texts or set the span explicitly"
                        .into(),
                )
            })?
        }
    };
    for p in &prompts {
        check_span_in_cache(
            span,
            p.tokens.len(),
            &format!("the needle span (in {})", p.name),
        )?;
    }
    Ok(Prepared {
        prompts,
        span,
        warnings,
    })
}

/// Checks the conditions against the model and the prompts; returns each condition's span.
fn check_conditions(
    spec: &ExperimentSpec,
    prompts: &[PreparedPrompt],
    needle: Span,
    n_layer: u32,
) -> Result<Vec<Span>, SpecError> {
    let mut spans = Vec::new();
    for (index, c) in spec.conditions.iter().enumerate() {
        let err = |reason: String| SpecError::Condition {
            index,
            label: c.row_label(),
            reason,
        };
        let vi = spec.variant_index(&c.variant).expect("validated");
        let span = c.span.unwrap_or(needle);
        check_span_in_cache(span, prompts[vi].tokens.len(), "the span")
            .map_err(|e| err(e.to_string()))?;
        if let Some(max) = c.layers.max()
            && max >= n_layer
        {
            return Err(err(format!(
                "layer {max} is out of range: the model has {n_layer} layers (0..{})",
                n_layer - 1
            )));
        }
        if let Intervention::Transplant { from } = &c.intervention {
            let di = spec.variant_index(from).expect("validated");
            let (a, b) = (&prompts[vi], &prompts[di]);
            if a.tokens.len() != b.tokens.len() {
                return Err(err(format!(
                    "the prompts of {} ({} tokens) and {} ({} tokens) do not align: a transplant \
                     copies the donor's cache at the same positions, so the variants must \
                     tokenize to the same length",
                    a.name,
                    a.tokens.len(),
                    b.name,
                    b.tokens.len()
                )));
            }
        }
        spans.push(span);
    }
    Ok(spans)
}

/// Evaluates every variant's prompt but its last token, in one batch (variant i in sequence i),
/// and returns each sequence's state: the cache every condition starts from.
fn eval_prompts(lab: &mut Lab<'_>, prompts: &[PreparedPrompt]) -> Result<Vec<SeqState>, RunError> {
    let mut items = Vec::new();
    for (vi, p) in prompts.iter().enumerate() {
        for (pos, t) in p.tokens[..p.tokens.len() - 1].iter().enumerate() {
            items.push(BatchItem {
                seq: vi as i32,
                token: t.id,
                pos: pos as i32,
                logits: false,
            });
        }
    }
    lab.eval(&items, |_, _| {})?;
    Ok((0..prompts.len())
        .map(|vi| lab.state(vi as i32))
        .collect::<Result<_, _>>()?)
}

/// Applies a condition's edit to a copy of its variant's prompt state.
fn edited_state(
    spec: &ExperimentSpec,
    c_index: usize,
    span: Span,
    prompt_states: &[SeqState],
    n_layer: u32,
) -> Result<SeqState, EngineError> {
    let c = &spec.conditions[c_index];
    let vi = spec.variant_index(&c.variant).expect("validated");
    let mut state = prompt_states[vi].clone();
    let layers = c.layers.resolve(n_layer);
    match &c.intervention {
        Intervention::None | Intervention::Remove => {}
        Intervention::Zero => {
            for pos in span.positions() {
                for cell in state.cells_at(pos as i32) {
                    for &l in &layers {
                        state.zero_cell(l as usize, cell, c.part)?;
                    }
                }
            }
        }
        Intervention::Transplant { from } => {
            let donor = &prompt_states[spec.variant_index(from).expect("validated")];
            for pos in span.positions() {
                let src = *donor
                    .cells_at(pos as i32)
                    .first()
                    .ok_or(crate::engine::KvStateError::NoSuchPosition(pos as i32))?;
                for cell in state.cells_at(pos as i32) {
                    for &l in &layers {
                        state.copy_cell_from(donor, l as usize, cell, src, c.part)?;
                    }
                }
            }
        }
    }
    Ok(state)
}

/// Per-sequence generation bookkeeping.
struct Live {
    row: RowRef,
    seq: i32,
    next_token: i32,
    next_pos: i32,
    generation: Generation,
    rng: Rng,
    done: bool,
}

/// Runs `spec` on `model`.
pub fn run(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    options: &RunOptions,
    mut on_event: impl FnMut(RunEvent),
) -> Result<RunResults, RunError> {
    on_event(RunEvent::Stage("preparing prompts".into()));
    let Prepared {
        prompts,
        span: needle,
        warnings,
    } = prepare_prompts(model, spec)?;
    let n_layer = model.info().n_layer;
    let spans = check_conditions(spec, &prompts, needle, n_layer)?;

    let n_var = prompts.len();
    let n_cond = spec.conditions.len();
    let n_seq = (n_var + n_cond) as u32;
    let max_prompt = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    let n_ctx_per_seq = (max_prompt + spec.generation.max_tokens + 8) as u32;
    let mut lab = Lab::new(
        model,
        LabOptions {
            n_seq,
            n_ctx_per_seq,
            threads: options.threads,
            n_batch: options.n_batch,
        },
    )?;
    let settings = RunSettings {
        threads: options.threads,
        n_ctx_per_seq: lab.options().n_ctx_per_seq,
        n_seq,
        n_batch: options.n_batch,
    };
    let mut timings = Timings::default();

    // 1. Every variant's prompt but its last token, in one batch: variant i in sequence i.
    on_event(RunEvent::Stage("evaluating prompts".into()));
    let t0 = Instant::now();
    let prompt_states = eval_prompts(&mut lab, &prompts)?;
    timings.prompt_s = t0.elapsed().as_secs_f64();

    // 2. Every condition: its variant's cache, edited, in its own sequence.
    on_event(RunEvent::Stage("applying interventions".into()));
    let mut condition_states = Vec::with_capacity(n_cond);
    for (ci, c) in spec.conditions.iter().enumerate() {
        let seq = (n_var + ci) as i32;
        let state = edited_state(spec, ci, spans[ci], &prompt_states, n_layer)?;
        lab.set_state(seq, &state)?;
        if c.intervention == Intervention::Remove {
            lab.remove(seq, spans[ci].start as i32, spans[ci].end as i32)?;
        }
        // The exact cache the generation starts from, re-used for scoring.
        condition_states.push(lab.state_bytes(seq)?);
    }

    // 3. Generate, all sequences in one batch per step.
    on_event(RunEvent::Stage("generating".into()));
    let seed = match spec.generation.sampling {
        crate::experiment::spec::Sampling::Sample { seed, .. } => seed,
        _ => 0,
    };
    let mut live: Vec<Live> = Vec::new();
    for (vi, p) in prompts.iter().enumerate() {
        live.push(Live {
            row: RowRef::Baseline(vi),
            seq: vi as i32,
            next_token: p.tokens.last().expect("len >= 2").id,
            next_pos: (p.tokens.len() - 1) as i32,
            generation: Generation::default(),
            rng: Rng::new(seed),
            done: false,
        });
    }
    for (ci, c) in spec.conditions.iter().enumerate() {
        let p = &prompts[spec.variant_index(&c.variant).expect("validated")];
        live.push(Live {
            row: RowRef::Condition(ci),
            seq: (n_var + ci) as i32,
            next_token: p.tokens.last().expect("len >= 2").id,
            next_pos: (p.tokens.len() - 1) as i32,
            generation: Generation::default(),
            rng: Rng::new(seed),
            done: false,
        });
    }
    let probe_ids = probe_token_ids(model, &spec.probes);
    let mut pieces: HashMap<i32, String> = HashMap::new();
    let mut piece =
        |id: i32| -> String { pieces.entry(id).or_insert_with(|| model.piece(id)).clone() };
    let max_tokens = spec.generation.max_tokens;
    // Scoring counts as much work as generating.
    let total_work = 2 * max_tokens;
    let t1 = Instant::now();
    let mut generated = 0usize;
    let mut complete = true;
    for step in 0..max_tokens {
        if options.cancel.load(Ordering::Relaxed) {
            complete = false;
            break;
        }
        let active: Vec<usize> = (0..live.len()).filter(|&i| !live[i].done).collect();
        if active.is_empty() {
            break;
        }
        let items: Vec<BatchItem> = active
            .iter()
            .map(|&i| BatchItem {
                seq: live[i].seq,
                token: live[i].next_token,
                pos: live[i].next_pos,
                logits: true,
            })
            .collect();
        let mut chosen: Vec<(usize, Step)> = Vec::with_capacity(active.len());
        lab.eval(&items, |k, logits| {
            let l = &mut live[active[k]];
            let lp = LogProbs::new(logits);
            let mut top = metrics::top_k_with(logits, spec.top_k.max(2), &lp)
                .into_iter()
                .map(|(id, logprob)| (id as i32, logprob))
                .collect::<Vec<_>>();
            // Greedy takes the top token (same tie rule as argmax), saving a pass.
            let id = match spec.generation.sampling {
                crate::experiment::spec::Sampling::Greedy => top[0].0 as usize,
                _ => metrics::choose(logits, &spec.generation.sampling, &mut l.rng),
            };
            let probes = probe_ids
                .iter()
                .map(|p| p.map_or(f32::NAN, |id| lp.of(logits, id)))
                .collect();
            let gap = match top.as_slice() {
                [a, b, ..] => a.1 - b.1,
                _ => f32::INFINITY,
            };
            top.truncate(spec.top_k);
            chosen.push((
                active[k],
                Step {
                    token: Alternative {
                        id: id as i32,
                        piece: String::new(),
                        logprob: lp.of(logits, id),
                    },
                    top: top
                        .into_iter()
                        .map(|(id, logprob)| Alternative {
                            id,
                            piece: String::new(),
                            logprob,
                        })
                        .collect(),
                    probes,
                    gap,
                },
            ));
        })?;
        for (i, mut st) in chosen {
            st.token.piece = piece(st.token.id);
            for a in &mut st.top {
                a.piece = piece(a.id);
            }
            let l = &mut live[i];
            l.generation.tokens.push(st.token.id);
            on_event(RunEvent::Token {
                row: l.row,
                step,
                piece: st.token.piece.clone(),
            });
            if spec.generation.stop_at_eog && model.is_end_of_generation(st.token.id) {
                l.done = true;
            }
            l.next_token = st.token.id;
            l.next_pos += 1;
            l.generation.steps.push(st);
            generated += 1;
        }
        on_event(RunEvent::Progress {
            done: step + 1,
            total: total_work,
        });
    }
    timings.generate_s = t1.elapsed().as_secs_f64();
    timings.tokens_per_s = generated as f64 / timings.generate_s.max(1e-9);
    for l in &mut live {
        l.generation.text = model.detokenize(&l.generation.tokens);
    }
    let (baselines, cond_gens) = live.split_at(n_var);

    // 4. Teacher-forced scores under each condition's cache, batched: every variant's baseline
    //    continuation, and every expected answer.
    let t2 = Instant::now();
    let mut jobs: Vec<ScoreJob> = Vec::new();
    for ci in 0..n_cond {
        for (vi, b) in baselines.iter().enumerate() {
            jobs.push(ScoreJob {
                condition: ci,
                target: ScoreTarget::Baseline(vi),
                tokens: b.generation.tokens.clone(),
            });
        }
        for (vi, v) in spec.variants.iter().enumerate() {
            for (ai, answer) in v.expected.iter().enumerate() {
                let tokens: Vec<i32> = model
                    .tokenize(answer, false, false)?
                    .iter()
                    .map(|t| t.id)
                    .collect();
                jobs.push(ScoreJob {
                    condition: ci,
                    target: ScoreTarget::Expected(vi, ai),
                    tokens,
                });
            }
        }
    }
    let mut scores: Vec<Vec<ContinuationScore>> = vec![Vec::new(); n_cond];
    let mut expected: Vec<Vec<ExpectedScore>> = vec![Vec::new(); n_cond];
    if complete {
        on_event(RunEvent::Stage("scoring continuations".into()));
        let mut done = 0;
        for wave in jobs.chunks(n_seq as usize) {
            if options.cancel.load(Ordering::Relaxed) {
                complete = false;
                break;
            }
            let per_token = score_wave(&mut lab, spec, &prompts, &condition_states, wave)?;
            for (job, lps) in wave.iter().zip(per_token) {
                let sum: f64 = lps.iter().map(|&x| x as f64).sum();
                let mean = if lps.is_empty() {
                    0.0
                } else {
                    sum / lps.len() as f64
                };
                match job.target {
                    ScoreTarget::Baseline(vi) => scores[job.condition].push(ContinuationScore {
                        of_variant: prompts[vi].name.clone(),
                        sum,
                        mean,
                        n_tokens: lps.len(),
                    }),
                    ScoreTarget::Expected(vi, ai) => expected[job.condition].push(ExpectedScore {
                        variant: spec.variants[vi].name.clone(),
                        answer: spec.variants[vi].expected[ai].clone(),
                        sum,
                        mean,
                        per_token: lps,
                    }),
                }
            }
            done += wave.len();
            on_event(RunEvent::Progress {
                done: max_tokens + done * max_tokens / jobs.len().max(1),
                total: total_work,
            });
        }
        if !complete {
            scores.iter_mut().for_each(Vec::clear);
            expected.iter_mut().for_each(Vec::clear);
        }
    }
    timings.score_s = t2.elapsed().as_secs_f64();

    // 5. KV delta between the first two variants.
    let kv_delta = if n_var >= 2 && prompts[0].tokens.len() == prompts[1].tokens.len() {
        Some(kv_delta(
            &prompt_states[0],
            &prompt_states[1],
            &prompts[0].name,
            &prompts[1].name,
            options.delta_layer,
        )?)
    } else {
        None
    };

    let variants = prompts
        .iter()
        .zip(baselines)
        .map(|(p, l)| VariantResult {
            name: p.name.clone(),
            prompt_text: p.text.clone(),
            tokens: p.tokens.clone(),
            baseline: l.generation.clone(),
        })
        .collect();
    let conditions = spec
        .conditions
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            let vi = spec.variant_index(&c.variant).expect("validated");
            let generation = cond_gens[ci].generation.clone();
            let base = &baselines[vi].generation;
            let first_divergence = metrics::first_divergence(&generation.tokens, &base.tokens);
            let fragile = first_divergence.is_some_and(|i| {
                let gaps: Vec<f32> = [generation.steps.get(i), base.steps.get(i)]
                    .into_iter()
                    .flatten()
                    .map(|s| s.gap)
                    .collect();
                outcome::is_fragile(&gaps)
            });
            let expected = std::mem::take(&mut expected[ci]);
            let names: Vec<&str> = spec.variants.iter().map(|v| v.name.as_str()).collect();
            let pref = outcome::preference(&expected, &c.variant, &names);
            let keyword_lists: Vec<(&str, &[String])> = spec
                .variants
                .iter()
                .map(|v| (v.name.as_str(), v.keywords.as_slice()))
                .collect();
            let keywords = if spec.variants.iter().any(|v| !v.keywords.is_empty()) {
                outcome::keyword_tally(&generation.text, &keyword_lists)
            } else {
                Vec::new()
            };
            ConditionResult {
                label: c.row_label(),
                variant: c.variant.clone(),
                intervention: c.intervention.short(),
                span: spans[ci],
                layers: c.layers.to_string(),
                part: format!("{:?}", c.part).to_lowercase(),
                generation,
                first_divergence,
                scores: std::mem::take(&mut scores[ci]),
                verdict: pref
                    .as_ref()
                    .map(|(p, other)| outcome::verdict(&c.variant, *p, other)),
                preference: pref.map(|(p, _)| p),
                expected,
                keywords,
                fragile,
            }
        })
        .collect();
    Ok(RunResults {
        kvlab_version: env!("CARGO_PKG_VERSION").into(),
        llama_cpp_2_version: crate::engine::LLAMA_CPP_2_VERSION.into(),
        model: model.fingerprint().clone(),
        model_info: model.info().clone(),
        spec: spec.clone(),
        settings,
        needle_span: needle,
        variants,
        conditions,
        kv_delta,
        complete,
        warnings,
        timings,
    })
}

/// What a scoring job measures.
#[derive(Debug, Clone, Copy)]
enum ScoreTarget {
    /// A variant's baseline continuation.
    Baseline(usize),
    /// A variant's expected answer.
    Expected(usize, usize),
}

/// One continuation to score under one condition's cache.
#[derive(Debug, Clone)]
struct ScoreJob {
    condition: usize,
    target: ScoreTarget,
    tokens: Vec<i32>,
}

/// Scores a wave of jobs (at most one per sequence) in one batched evaluation: each sequence
/// gets its condition's cache, then the last prompt token and the continuation but its last
/// token; the logits at each step give the next continuation token's log-prob.
fn score_wave(
    lab: &mut Lab<'_>,
    spec: &ExperimentSpec,
    prompts: &[PreparedPrompt],
    condition_states: &[Vec<u8>],
    wave: &[ScoreJob],
) -> Result<Vec<Vec<f32>>, RunError> {
    let jobs: Vec<WaveJob<'_>> = wave
        .iter()
        .map(|job| {
            let vi = spec
                .variant_index(&spec.conditions[job.condition].variant)
                .expect("validated");
            WaveJob {
                state: &condition_states[job.condition],
                prompt: &prompts[vi],
                tokens: &job.tokens,
            }
        })
        .collect();
    Ok(score_jobs(lab, &jobs, &[])?.0)
}

/// One continuation to score from one cache.
struct WaveJob<'a> {
    state: &'a [u8],
    prompt: &'a PreparedPrompt,
    tokens: &'a [i32],
}

/// Per job: the log-probs of its answer's tokens; per job: the probes' log-probs at its first step.
type JobScores = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Scores jobs in one batched evaluation (one sequence each). Returns the per-token log-probs of
/// each job and, per job, the log-probs of `probe_ids` at its first step.
fn score_jobs(
    lab: &mut Lab<'_>,
    jobs: &[WaveJob<'_>],
    probe_ids: &[Option<usize>],
) -> Result<JobScores, RunError> {
    let mut items = Vec::new();
    let mut targets: Vec<(usize, i32, bool)> = Vec::new();
    for (slot, job) in jobs.iter().enumerate() {
        let seq = slot as i32;
        lab.set_state_bytes(seq, job.state)?;
        let p = job.prompt;
        let mut token = p.tokens.last().expect("len >= 2").id;
        let first_pos = (p.tokens.len() - 1) as i32;
        for (i, (pos, &next)) in (first_pos..).zip(job.tokens).enumerate() {
            items.push(BatchItem {
                seq,
                token,
                pos,
                logits: true,
            });
            targets.push((slot, next, i == 0));
            token = next;
        }
    }
    let mut out = vec![Vec::new(); jobs.len()];
    let mut probes = vec![Vec::new(); jobs.len()];
    lab.eval(&items, |k, logits| {
        let (slot, target, first) = targets[k];
        let lp = LogProbs::new(logits);
        out[slot].push(lp.of(logits, target as usize));
        if first {
            probes[slot] = probe_ids
                .iter()
                .map(|p| p.map_or(f32::NAN, |id| lp.of(logits, id)))
                .collect();
        }
    })?;
    Ok((out, probes))
}

/// The first token of each probe string.
fn probe_token_ids(model: &LoadedModel, probes: &[String]) -> Vec<Option<usize>> {
    probes
        .iter()
        .map(|p| {
            model
                .tokenize(p, false, false)
                .ok()
                .and_then(|t| t.first().map(|t| t.id as usize))
        })
        .collect()
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
    if !matches!(
        sweep.intervention,
        Intervention::Zero | Intervention::Remove
    ) {
        return Err(SpecError::Generation("a sweep applies zero or remove".into()).into());
    }
    let Prepared {
        prompts,
        span: needle,
        ..
    } = prepare_prompts(model, spec)?;
    let n_layer = model.info().n_layer;
    let vi = spec.variant_index(&sweep.variant).ok_or_else(|| {
        SpecError::Variants(format!("there is no variant named {:?}", sweep.variant))
    })?;
    let items = sweep.items(prompts[vi].tokens.len(), n_layer, needle);
    let reference = crate::experiment::Condition {
        label: None,
        variant: sweep.variant.clone(),
        intervention: Intervention::None,
        layers: crate::experiment::LayerSet::All,
        part: crate::experiment::spec::KvPart::Both,
        span: None,
    };
    let mut sweep_spec = spec.clone();
    sweep_spec.conditions = std::iter::once(reference)
        .chain(items.iter().map(|i| i.condition.clone()))
        .collect();
    sweep_spec.validate()?;
    let spans = check_conditions(&sweep_spec, &prompts, needle, n_layer)?;

    // What to measure.
    let has_expected = spec.variants.iter().any(|v| !v.expected.is_empty());
    let (continuations, measure): (Vec<(usize, Vec<i32>)>, String) = if has_expected {
        let mut c = Vec::new();
        for (vj, v) in spec.variants.iter().enumerate() {
            for a in &v.expected {
                c.push((
                    vj,
                    model
                        .tokenize(a, false, false)?
                        .iter()
                        .map(|t| t.id)
                        .collect(),
                ));
            }
        }
        (c, "expected answers".into())
    } else {
        on_event(RunEvent::Stage("generating baselines".into()));
        let mut base_spec = spec.clone();
        base_spec.conditions.clear();
        let base = run(model, &base_spec, options, |_| {})?;
        let n = spec.generation.max_tokens;
        (
            base.variants
                .iter()
                .enumerate()
                .map(|(vj, v)| (vj, v.baseline.tokens.clone()))
                .collect(),
            format!("baseline continuations ({n} tokens)"),
        )
    };
    let probe_ids = probe_token_ids(model, &spec.probes);

    // One context: the prompts first, then scoring slots.
    let n_slots = sweep_spec.conditions.len().clamp(1, 16) as u32;
    let n_seq = n_slots.max(prompts.len() as u32);
    let max_cont = continuations.iter().map(|c| c.1.len()).max().unwrap_or(0);
    let max_prompt = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    let mut lab = Lab::new(
        model,
        LabOptions {
            n_seq,
            n_ctx_per_seq: (max_prompt + max_cont + 8) as u32,
            threads: options.threads,
            n_batch: options.n_batch,
        },
    )?;
    on_event(RunEvent::Stage("evaluating prompts".into()));
    let prompt_states = eval_prompts(&mut lab, &prompts)?;

    on_event(RunEvent::Stage("sweeping".into()));
    let names: Vec<&str> = spec.variants.iter().map(|v| v.name.as_str()).collect();
    let per_wave = (n_slots as usize / continuations.len().max(1)).max(1);
    let total = sweep_spec.conditions.len();
    let mut points: Vec<SweepPoint> = Vec::new();
    let mut complete = true;
    for chunk_start in (0..total).step_by(per_wave) {
        if options.cancel.load(Ordering::Relaxed) {
            complete = false;
            break;
        }
        let chunk: Vec<usize> = (chunk_start..(chunk_start + per_wave).min(total)).collect();
        // The caches of this wave's conditions.
        let mut states = Vec::new();
        for &ci in &chunk {
            let st = edited_state(&sweep_spec, ci, spans[ci], &prompt_states, n_layer)?;
            if sweep_spec.conditions[ci].intervention == Intervention::Remove {
                lab.set_state(0, &st)?;
                lab.remove(0, spans[ci].start as i32, spans[ci].end as i32)?;
                states.push(lab.state_bytes(0)?);
            } else {
                states.push(st.serialize());
            }
        }
        let mut jobs = Vec::new();
        for (k, _) in chunk.iter().enumerate() {
            for (_, tokens) in &continuations {
                jobs.push(WaveJob {
                    state: &states[k],
                    prompt: &prompts[vi],
                    tokens,
                });
            }
        }
        let (lps, first_probes) = score_jobs(&mut lab, &jobs, &probe_ids)?;
        for (k, &ci) in chunk.iter().enumerate() {
            let base = k * continuations.len();
            let mut expected = Vec::new();
            let mut scores = vec![f64::NEG_INFINITY; spec.variants.len()];
            for (j, (vj, _)) in continuations.iter().enumerate() {
                let sum: f64 = lps[base + j].iter().map(|&x| x as f64).sum();
                expected.push(ExpectedScore {
                    variant: spec.variants[*vj].name.clone(),
                    answer: String::new(),
                    sum,
                    mean: sum / lps[base + j].len().max(1) as f64,
                    per_token: Vec::new(),
                });
            }
            for (vj, v) in spec.variants.iter().enumerate() {
                if let Some(s) = outcome::variant_score(&expected, &v.name) {
                    scores[vj] = s;
                }
            }
            let preference = if has_expected {
                outcome::preference(&expected, &sweep.variant, &names).map(|p| p.0)
            } else {
                None
            };
            let (label, index, layer) = if ci == 0 {
                ("no intervention".to_string(), 0, None)
            } else {
                let it = &items[ci - 1];
                (it.label.clone(), it.index, it.layer)
            };
            points.push(SweepPoint {
                label,
                index,
                layer,
                preference,
                scores,
                first_step_probes: first_probes[base].clone(),
            });
        }
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
        measure,
        reference,
        points,
        complete,
    })
}

/// Per layer and position, the L2 norm of the K and V differences between two prompt states.
pub fn kv_delta(
    a: &SeqState,
    b: &SeqState,
    name_a: &str,
    name_b: &str,
    full_layer: Option<usize>,
) -> Result<KvDelta, EngineError> {
    let positions = a.positions();
    let n_layer = a.n_layer();
    let mut k_l2 = vec![Vec::with_capacity(positions.len()); n_layer];
    let mut v_l2 = vec![Vec::with_capacity(positions.len()); n_layer];
    let mut layer_rows = full_layer.map(|layer| LayerDelta {
        layer,
        k: Vec::new(),
        v: Vec::new(),
    });
    if let Some(l) = full_layer
        && l >= n_layer
    {
        return Err(crate::engine::KvStateError::LayerOutOfRange { layer: l, n_layer }.into());
    }
    for &pos in &positions {
        let ca = a.cells_at(pos)[0];
        let Some(&cb) = b.cells_at(pos).first() else {
            return Err(crate::engine::KvStateError::NoSuchPosition(pos).into());
        };
        for layer in 0..n_layer {
            let (ka, kb) = (a.k_row_f32(layer, ca)?, b.k_row_f32(layer, cb)?);
            let (va, vb) = (a.v_row_f32(layer, ca)?, b.v_row_f32(layer, cb)?);
            k_l2[layer].push(metrics::l2_diff(&ka, &kb));
            v_l2[layer].push(metrics::l2_diff(&va, &vb));
            if let Some(rows) = layer_rows.as_mut()
                && rows.layer == layer
            {
                rows.k
                    .push(ka.iter().zip(&kb).map(|(x, y)| x - y).collect());
                rows.v
                    .push(va.iter().zip(&vb).map(|(x, y)| x - y).collect());
            }
        }
    }
    Ok(KvDelta {
        variant_a: name_a.into(),
        variant_b: name_b.into(),
        k_l2,
        v_l2,
        layer_rows,
    })
}
