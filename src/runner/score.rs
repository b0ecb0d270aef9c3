//! Teacher-forced scoring: how likely a given continuation is under a given cache. A sweep job
//! loads its cache into its own sequence, feeds the prompt's last token and the continuation
//! but its last token, and reads each next token's log-prob; a wave is one batched evaluation,
//! one sequence per job. A grid reuses its generation: what a condition generated is already
//! scored, and only the rest of a continuation is evaluated ([`score_grid`]). The sum and mean
//! a continuation is judged by are computed here and nowhere else.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::lab::BatchItem;
use crate::engine::{EngineError, Lab, LoadedModel};
use crate::experiment::metrics::LogProbs;
use crate::experiment::outcome::ExpectedScore;
use crate::experiment::results::{ContinuationScore, Generation};

use super::generate::{Follow, Followed};
use super::plan::Plan;
use super::prompts::PreparedPrompt;

/// One continuation to score from one cache.
pub(crate) struct Job<'a> {
    /// The cache's state bytes.
    pub state: &'a [u8],
    /// The prompt the cache holds all but the last token of.
    pub prompt: &'a PreparedPrompt,
    /// The continuation.
    pub tokens: &'a [i32],
}

/// What a job measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scored {
    /// The log-prob of each continuation token.
    pub per_token: Vec<f32>,
    /// The log-probs of the probes' tokens at the first step (empty without a first step).
    pub first_probes: Vec<f32>,
}

/// Scores a wave of jobs (job i in sequence i) in one batched evaluation; `probe_ids` are
/// also read at each job's first step.
pub(crate) fn score_wave(
    lab: &mut Lab<'_>,
    jobs: &[Job<'_>],
    probe_ids: &[Option<usize>],
) -> Result<Vec<Scored>, EngineError> {
    let mut loaded = Vec::with_capacity(jobs.len());
    for (slot, job) in jobs.iter().enumerate() {
        let seq = slot as i32;
        lab.set_state_bytes(seq, job.state)?;
        loaded.push(LoadedJob {
            seq,
            prompt: job.prompt,
            tokens: job.tokens,
        });
    }
    score_loaded(lab, &loaded, probe_ids)
}

/// A continuation to score from a cache already in place in sequence `seq`.
pub(crate) struct LoadedJob<'a> {
    /// The sequence holding the cache (every prompt token but the last).
    pub seq: i32,
    /// The prompt (its last token is evaluated first).
    pub prompt: &'a PreparedPrompt,
    /// The continuation.
    pub tokens: &'a [i32],
}

/// Scores jobs whose caches are in place in one batched evaluation; `probe_ids` are also read
/// at each job's first step.
pub(crate) fn score_loaded(
    lab: &mut Lab<'_>,
    jobs: &[LoadedJob<'_>],
    probe_ids: &[Option<usize>],
) -> Result<Vec<Scored>, EngineError> {
    let mut items = Vec::new();
    let mut targets: Vec<(usize, i32, bool)> = Vec::new();
    for (slot, job) in jobs.iter().enumerate() {
        let seq = job.seq;
        let mut token = job.prompt.last_id();
        for (i, (pos, &next)) in (job.prompt.last_pos()..).zip(job.tokens).enumerate() {
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
    let mut out = vec![Scored::default(); jobs.len()];
    lab.eval(&items, |k, logits| {
        let (slot, target, first) = targets[k];
        let lp = LogProbs::new(logits);
        out[slot].per_token.push(lp.of(logits, target as usize));
        if first {
            out[slot].first_probes = probe_ids
                .iter()
                .map(|p| p.map_or(f32::NAN, |id| lp.of(logits, id)))
                .collect();
        }
    })?;
    Ok(out)
}

/// A continuation's sum and mean log-prob (mean 0 for no tokens).
pub(crate) fn totals(per_token: &[f32]) -> (f64, f64) {
    let sum: f64 = per_token.iter().map(|&x| x as f64).sum();
    let mean = if per_token.is_empty() {
        0.0
    } else {
        sum / per_token.len() as f64
    };
    (sum, mean)
}

/// The score of one of `variant`'s expected answers.
pub(crate) fn expected_score(variant: &str, answer: &str, per_token: Vec<f32>) -> ExpectedScore {
    let (sum, mean) = totals(&per_token);
    ExpectedScore {
        variant: variant.into(),
        answer: answer.into(),
        sum,
        mean,
        per_token,
    }
}

/// The score of `of_variant`'s baseline continuation.
pub(crate) fn continuation_score(of_variant: &str, per_token: &[f32]) -> ContinuationScore {
    let (sum, mean) = totals(per_token);
    ContinuationScore {
        of_variant: of_variant.into(),
        sum,
        mean,
        n_tokens: per_token.len(),
    }
}

/// An expected answer's tokens (as written: no BOS, no special tokens).
pub(crate) fn answer_ids(model: &LoadedModel, answer: &str) -> Result<Vec<i32>, EngineError> {
    Ok(model
        .tokenize(answer, false, false)?
        .iter()
        .map(|t| t.id)
        .collect())
}

/// The first token of each probe string.
pub(crate) fn probe_token_ids(model: &LoadedModel, probes: &[String]) -> Vec<Option<usize>> {
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

/// What a grid job measures.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A variant's baseline continuation.
    Baseline(usize),
    /// A variant's expected answer.
    Expected(usize, usize),
}

/// One continuation to score under one planned condition's cache.
pub(crate) struct GridJob {
    condition: usize,
    target: Target,
    /// The continuation (a baseline's: filled in by [`with_baselines`] after generation).
    tokens: Vec<i32>,
}

/// A grid's scores, per planned condition.
#[derive(Debug, Clone)]
pub(crate) struct GridScores {
    /// Each variant's baseline continuation.
    pub scores: Vec<Vec<ContinuationScore>>,
    /// Each expected answer.
    pub expected: Vec<Vec<ExpectedScore>>,
    /// Tokens evaluated to get them.
    pub evaluated: usize,
}

impl GridScores {
    /// No scores for `n` conditions (a stopped run).
    pub fn empty(n: usize) -> GridScores {
        GridScores {
            scores: vec![Vec::new(); n],
            expected: vec![Vec::new(); n],
            evaluated: 0,
        }
    }

    /// Every planned condition's scores from those of the condition it runs as (computed ones
    /// were scored for all variants their sharers are judged between): each keeps the variants
    /// it is judged between, in the order scoring it alone gives.
    fn shared(self, plan: &Plan<'_>) -> GridScores {
        let names: Vec<&str> = plan.spec.variants.iter().map(|v| v.name.as_str()).collect();
        let mut out = GridScores::empty(plan.conditions.len());
        out.evaluated = self.evaluated;
        for (i, c) in plan.conditions.iter().enumerate() {
            let judged = plan.condition(c).judged(&names);
            out.scores[i] = (self.scores[c.runs_as].iter())
                .filter(|s| judged.contains(&s.of_variant.as_str()))
                .cloned()
                .collect();
            out.expected[i] = (self.expected[c.runs_as].iter())
                .filter(|s| judged.contains(&s.variant.as_str()))
                .cloned()
                .collect();
        }
        out
    }
}

/// Every grid job, condition by condition: the baseline continuation (unless the spec turns
/// that off), then every expected answer, of each variant the condition is judged between (all
/// variants unless it names whom it is judged against). Baseline continuations are not known
/// before generation: their jobs get their tokens from [`with_baselines`].
pub(crate) fn grid_jobs(model: &LoadedModel, plan: &Plan<'_>) -> Result<Vec<GridJob>, EngineError> {
    if plan.conditions.is_empty() {
        return Ok(Vec::new());
    }
    let mut answers = Vec::new();
    for (vi, v) in plan.spec.variants.iter().enumerate() {
        for (ai, answer) in v.expected.iter().enumerate() {
            answers.push((vi, Target::Expected(vi, ai), answer_ids(model, answer)?));
        }
    }
    let names: Vec<&str> = plan.spec.variants.iter().map(|v| v.name.as_str()).collect();
    let mut jobs = Vec::new();
    // A computed condition is scored for every variant any condition running as it is judged
    // between; [`GridScores::shared`] gives each its own.
    for planned in plan.computed() {
        let condition = planned.index;
        let judged: Vec<&str> = (plan.sharing(condition))
            .flat_map(|c| plan.condition(c).judged(&names))
            .collect();
        let scored = |vi: usize| judged.contains(&names[vi]);
        if plan.spec.score_baselines {
            for vi in (0..plan.prompts.len()).filter(|&vi| scored(vi)) {
                jobs.push(GridJob {
                    condition,
                    target: Target::Baseline(vi),
                    tokens: Vec::new(),
                });
            }
        }
        for (vi, target, tokens) in &answers {
            if scored(*vi) {
                jobs.push(GridJob {
                    condition,
                    target: *target,
                    tokens: tokens.clone(),
                });
            }
        }
    }
    Ok(jobs)
}

/// What generation reads for each job (in job order): the job's continuation followed along
/// its condition's own generation (generation's slot k generates in sequence k: the baselines,
/// then the computed conditions).
pub(crate) fn follows(plan: &Plan<'_>, jobs: &[GridJob]) -> Vec<Follow> {
    jobs.iter()
        .map(|job| {
            let tokens = match job.target {
                Target::Baseline(vi) => Followed::Slot(vi),
                Target::Expected(..) => Followed::Tokens(job.tokens.clone()),
            };
            Follow::new(plan.conditions[job.condition].seq as usize, tokens)
        })
        .collect()
}

/// Gives the baseline jobs their continuations, once generated.
pub(crate) fn with_baselines(jobs: &mut [GridJob], baselines: &[Generation]) {
    for job in jobs {
        if let Target::Baseline(vi) = job.target {
            job.tokens = baselines[vi].tokens.clone();
        }
    }
}

/// Scores the grid's jobs the plain way: each from its condition's starting cache
/// (`states`, per planned condition), every token teacher-forced, in waves of `plan.n_seq`.
pub(crate) fn score_teacher_forced(
    lab: &mut Lab<'_>,
    plan: &Plan<'_>,
    jobs: &[GridJob],
    states: &[Vec<u8>],
) -> Result<GridScores, EngineError> {
    let mut per_token = Vec::with_capacity(jobs.len());
    for wave in jobs.chunks(plan.n_seq as usize) {
        let batch: Vec<Job<'_>> = wave
            .iter()
            .map(|job| Job {
                state: &states[job.condition],
                prompt: &plan.prompts[plan.conditions[job.condition].variant],
                tokens: &job.tokens,
            })
            .collect();
        per_token.extend(
            score_wave(lab, &batch, &[])?
                .into_iter()
                .map(|s| s.per_token),
        );
    }
    let evaluated = jobs.iter().map(|j| j.tokens.len()).sum();
    Ok(grid_scores(plan, jobs, per_token, evaluated))
}

/// Each job's log-probs (in job order) as a grid's scores, for every planned condition.
fn grid_scores(
    plan: &Plan<'_>,
    jobs: &[GridJob],
    per_token: Vec<Vec<f32>>,
    evaluated: usize,
) -> GridScores {
    let mut out = GridScores::empty(plan.conditions.len());
    out.evaluated = evaluated;
    for (job, scored) in jobs.iter().zip(per_token) {
        match job.target {
            Target::Baseline(vi) => {
                out.scores[job.condition].push(continuation_score(&plan.prompts[vi].name, &scored))
            }
            Target::Expected(vi, ai) => {
                let v = &plan.spec.variants[vi];
                out.expected[job.condition].push(expected_score(&v.name, &v.expected[ai], scored))
            }
        }
    }
    out.shared(plan)
}

/// A job's continuation still to evaluate teacher-forced: everything after what its
/// condition's generation already gave (`known` log-probs).
struct Rest {
    job: usize,
    known: Vec<f32>,
}

/// Scores the grid's jobs, each under its condition's cache, calling `on_wave(jobs done)` after
/// each wave; `None` when `cancel` was set before the last wave.
///
/// Generation already read each continuation's log-probs while its condition generated the same
/// tokens (`follows`, per job, from [`follows`]): a job that its condition generated in full
/// costs nothing, and the others are evaluated from the first token their condition did not
/// generate, in the condition's own sequence cut back to that point (the cache up to there is
/// the one generation built). A condition's jobs take turns in its sequence, the one that
/// keeps the most of what is cached first, and the others read along while their tokens are
/// the same (two expected answers that differ only in the city's name share their opening):
/// cutting back never needs what an earlier turn overwrote, so no sequence is copied and no
/// state is kept as bytes. A wave is one turn of every condition, evaluated together. Every
/// log-prob equals a teacher-forced evaluation from the condition's starting cache
/// (`tests/outcomes.rs` compares them all): the cells hold the same values and sit in the same
/// places.
pub(crate) fn score_grid(
    lab: &mut Lab<'_>,
    plan: &Plan<'_>,
    jobs: &[GridJob],
    follows: Vec<Follow>,
    cancel: &AtomicBool,
    mut on_wave: impl FnMut(usize),
) -> Result<Option<GridScores>, EngineError> {
    let mut per_token: Vec<Option<Vec<f32>>> = vec![None; jobs.len()];
    // Per condition, its jobs with something left to evaluate, the most known last.
    let mut rests: Vec<Vec<Rest>> = (0..plan.conditions.len()).map(|_| Vec::new()).collect();
    for (j, (job, follow)) in jobs.iter().zip(follows).enumerate() {
        let mut known = follow.logprobs;
        if known.len() >= job.tokens.len() {
            known.truncate(job.tokens.len());
            per_token[j] = Some(known);
        } else {
            rests[job.condition].push(Rest { job: j, known });
        }
    }
    for r in &mut rests {
        r.sort_by_key(|r| r.known.len());
    }
    let mut evaluated = 0;
    let mut done = per_token.iter().filter(|p| p.is_some()).count();
    if done > 0 {
        on_wave(done);
    }
    while rests.iter().any(|r| !r.is_empty()) {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let wave: Vec<(usize, Rest)> = (rests.iter_mut().enumerate())
            .filter_map(|(c, r)| r.pop().map(|rest| (c, rest)))
            .collect();
        let mut items = Vec::new();
        // Per item: its place in the wave and the continuation index it reads.
        let mut targets = Vec::new();
        for (w, (c, rest)) in wave.iter().enumerate() {
            let job = &jobs[rest.job];
            let seq = plan.conditions[*c].seq;
            let prompt = &plan.prompts[plan.conditions[*c].variant];
            let from = rest.known.len();
            let last = prompt.last_pos();
            lab.truncate(seq, last + from as i32)?;
            for i in from..job.tokens.len() {
                let token = if i == 0 {
                    prompt.last_id()
                } else {
                    job.tokens[i - 1]
                };
                items.push(BatchItem {
                    seq,
                    token,
                    pos: last + i as i32,
                    logits: true,
                });
                targets.push((w, i));
            }
        }
        let mut read: Vec<Vec<f32>> = vec![Vec::new(); wave.len()];
        evaluated += items.len();
        lab.eval(&items, |k, logits| {
            let (w, i) = targets[k];
            let (c, rest) = &wave[w];
            let path = &jobs[rest.job].tokens;
            let lp = LogProbs::new(logits);
            read[w].push(lp.of(logits, path[i] as usize));
            // The condition's other jobs read along while their tokens are the path's: the
            // same cache and the same inputs give the same logits.
            for other in &mut rests[*c] {
                let tokens = &jobs[other.job].tokens;
                if other.known.len() == i
                    && i < tokens.len()
                    && (i == 0 || tokens[i - 1] == path[i - 1])
                {
                    other.known.push(lp.of(logits, tokens[i] as usize));
                }
            }
        })?;
        for ((_, rest), more) in wave.into_iter().zip(read) {
            let mut all = rest.known;
            all.extend(more);
            per_token[rest.job] = Some(all);
        }
        for r in &mut rests {
            for rest in r.extract_if(.., |rest| rest.known.len() >= jobs[rest.job].tokens.len()) {
                per_token[rest.job] = Some(rest.known);
            }
            r.sort_by_key(|r| r.known.len());
        }
        done = per_token.iter().filter(|p| p.is_some()).count();
        on_wave(done);
    }
    let per_token = per_token.into_iter().flatten().collect::<Vec<_>>();
    debug_assert_eq!(per_token.len(), jobs.len(), "every job was scored");
    Ok(Some(grid_scores(plan, jobs, per_token, evaluated)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_the_sum_and_the_mean() {
        assert_eq!(totals(&[-1.0, -2.0, -3.0]), (-6.0, -2.0));
        assert_eq!(totals(&[]).1, 0.0);
        let s = expected_score("SF", " Here", vec![-0.5, -1.5]);
        assert_eq!((s.sum, s.mean, s.per_token.len()), (-2.0, -1.0, 2));
        let c = continuation_score("NY", &[-0.25]);
        assert_eq!((c.sum, c.mean, c.n_tokens), (-0.25, -0.25, 1));
    }
}
