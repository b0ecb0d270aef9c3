//! Generation, all sequences together: every baseline and every condition is a [`Slot`], and
//! one [`step`] advances all live slots by one token in one batched decode (as llama.cpp's
//! server does with its `server_slot`s in `update_slots`). Every slot draws from its own
//! generator, all seeded alike, so a condition whose logits equal its baseline's makes the
//! same choices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::lab::BatchItem;
use crate::engine::{EngineError, Lab, LoadedModel};
use crate::experiment::attention::RowAttention;
use crate::experiment::metrics::{self, LogProbs, Rng};
use crate::experiment::results::{Alternative, Generation, Step};
use crate::experiment::spec::Span;
use crate::experiment::spec::{ExperimentSpec, Sampling};

use super::attention::{StepCapture, eval_step, row_sums};
use super::plan::Plan;
use super::prompts::PreparedPrompt;
use super::score::probe_token_ids;
use super::{RowRef, RunEvent};

/// One sequence being generated.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// Whose generation it is.
    pub row: RowRef,
    /// Its sequence in the context.
    pub seq: i32,
    /// The token to feed next.
    pub next_token: i32,
    /// Where it goes.
    pub next_pos: i32,
    /// What was generated so far.
    pub generation: Generation,
    /// Its random generator (sampling).
    pub rng: Rng,
    /// Stopped at an end-of-generation token.
    pub done: bool,
    /// The prompt's carriers (after the needle, before the last token).
    pub carriers: Span,
    /// The prompt's last position.
    pub last_prompt_pos: usize,
    /// What its tokens attended to, when captured.
    pub attention: RowAttention,
}

impl Slot {
    /// A slot that continues `prompt` (cached but its last token) in `seq`.
    fn new(row: RowRef, seq: i32, prompt: &PreparedPrompt, needle: Span, seed: u64) -> Slot {
        Slot {
            carriers: Span {
                start: needle.end,
                end: (prompt.last_pos() as usize).max(needle.end),
            },
            last_prompt_pos: prompt.last_pos() as usize,
            attention: RowAttention::default(),
            row,
            seq,
            next_token: prompt.last_id(),
            next_pos: prompt.last_pos(),
            generation: Generation::default(),
            rng: Rng::new(seed),
            done: false,
        }
    }
}

/// A continuation a generating slot is followed along, for scoring: while the slot generates
/// the continuation's tokens, the log-prob of its next token is read from the logits the slot's
/// own step computed, from the very cache a teacher-forced evaluation would use. Once the slot
/// departs, the rest is scored teacher-forced (`score`).
#[derive(Debug, Clone)]
pub(crate) struct Follow {
    /// The slot whose logits are read (its index among the slots).
    pub slot: usize,
    /// The continuation.
    pub tokens: Followed,
    /// The log-prob of each of the continuation's tokens read so far, from its first.
    pub logprobs: Vec<f32>,
    /// Whether the slot has generated every token of the continuation read so far.
    following: bool,
}

/// The tokens a [`Follow`] reads log-probs of.
#[derive(Debug, Clone)]
pub(crate) enum Followed {
    /// Known in advance (an expected answer).
    Tokens(Vec<i32>),
    /// Another slot's generation, as it is generated (a baseline continuation).
    Slot(usize),
}

impl Follow {
    /// Follows `tokens` along slot `slot`'s generation.
    pub fn new(slot: usize, tokens: Followed) -> Follow {
        Follow {
            slot,
            tokens,
            logprobs: Vec::new(),
            following: true,
        }
    }

    /// The continuation's token at `step`, if it has one (yet).
    fn token(&self, slots: &[Slot], step: usize) -> Option<i32> {
        match &self.tokens {
            Followed::Tokens(t) => t.get(step).copied(),
            Followed::Slot(s) => slots[*s].generation.tokens.get(step).copied(),
        }
    }
}

/// Reads step `at`'s log-probs into every follow still on its slot (`logits`: the step's logits
/// of each slot that has a follow, by slot), then drops those whose slot chose another token.
fn read_follows(follows: &mut [Follow], slots: &[Slot], logits: &[(usize, Vec<f32>)], at: usize) {
    for (slot, row) in logits {
        let lp = LogProbs::new(row);
        for f in follows
            .iter_mut()
            .filter(|f| f.following && f.slot == *slot)
        {
            match f.token(slots, at) {
                Some(t) => {
                    f.logprobs.push(lp.of(row, t as usize));
                    f.following = slots[*slot].generation.tokens.get(at) == Some(&t);
                }
                None => f.following = false,
            }
        }
    }
    // A slot that did not step has stopped: nothing more to read from it.
    for f in follows.iter_mut() {
        if f.logprobs.len() != at + 1 {
            f.following = false;
        }
    }
}

/// A grid's slots: each variant's baseline (in sequence i), then each computed condition; slot
/// k generates in sequence k.
fn slots(plan: &Plan<'_>) -> Vec<Slot> {
    let seed = plan.sampling_seed();
    let baselines = plan
        .prompts
        .iter()
        .enumerate()
        .map(|(vi, p)| Slot::new(RowRef::Baseline(vi), vi as i32, p, plan.needle, seed));
    let conditions = plan.computed().map(|c| {
        let p = &plan.prompts[c.variant];
        Slot::new(RowRef::Condition(c.index), c.seq, p, plan.needle, seed)
    });
    baselines.chain(conditions).collect()
}

/// Per slot (baselines, then computed conditions) to per row (baselines, then every planned
/// condition, each given its computed condition's).
fn per_row<T: Clone>(plan: &Plan<'_>, mut per_slot: Vec<T>) -> Vec<T> {
    let n_var = plan.prompts.len();
    let computed = per_slot.split_off(n_var.min(per_slot.len()));
    per_slot.extend(
        (plan.conditions.iter())
            .filter_map(|c| computed.get(c.seq as usize - n_var))
            .cloned(),
    );
    per_slot
}

/// What every step needs besides the slots: how to choose, what to record, and token texts.
pub(crate) struct Stepper<'a> {
    model: &'a LoadedModel,
    spec: &'a ExperimentSpec,
    probe_ids: Vec<Option<usize>>,
    pieces: HashMap<i32, String>,
}

impl<'a> Stepper<'a> {
    /// A stepper for `spec` on `model`.
    pub fn new(model: &'a LoadedModel, spec: &'a ExperimentSpec) -> Stepper<'a> {
        Stepper {
            model,
            spec,
            probe_ids: probe_token_ids(model, &spec.probes),
            pieces: HashMap::new(),
        }
    }

    /// A token's text (cached).
    fn piece(&mut self, id: i32) -> String {
        let model = self.model;
        self.pieces
            .entry(id)
            .or_insert_with(|| model.piece(id))
            .clone()
    }
}

/// The step a slot takes from `logits`: the chosen token, the top alternatives, the probes and
/// the top-1/top-2 gap (pieces are filled in later).
fn choose(
    logits: &[f32],
    spec: &ExperimentSpec,
    probe_ids: &[Option<usize>],
    rng: &mut Rng,
) -> Step {
    let lp = LogProbs::new(logits);
    let mut top = metrics::top_k_with(logits, spec.top_k.max(2), &lp)
        .into_iter()
        .map(|(id, logprob)| (id as i32, logprob))
        .collect::<Vec<_>>();
    // Greedy takes the top token (same tie rule as argmax), saving a pass.
    let id = match spec.generation.sampling {
        Sampling::Greedy => top[0].0 as usize,
        _ => metrics::choose(logits, &spec.generation.sampling, rng),
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
    let alternative = |id: i32, logprob: f32| Alternative {
        id,
        piece: String::new(),
        logprob,
    };
    Step {
        token: alternative(id as i32, lp.of(logits, id)),
        top: top
            .into_iter()
            .map(|(id, logprob)| alternative(id, logprob))
            .collect(),
        probes,
        gap,
    }
}

/// Advances every live slot by one token in one batched decode, reporting each token as
/// step `at`. Returns how many tokens were generated (0: every slot is done). With `capture`
/// (a capturing lab) the step is evaluated as `attention::eval_step` does, and recorded when on.
pub(crate) fn step(
    lab: &mut Lab<'_>,
    slots: &mut [Slot],
    follows: &mut [Follow],
    stepper: &mut Stepper<'_>,
    at: usize,
    capture: Option<&StepCapture>,
    on_event: &mut impl FnMut(RunEvent),
) -> Result<usize, EngineError> {
    let active: Vec<usize> = (0..slots.len()).filter(|&i| !slots[i].done).collect();
    if active.is_empty() {
        return Ok(0);
    }
    let items: Vec<BatchItem> = active
        .iter()
        .map(|&i| BatchItem {
            seq: slots[i].seq,
            token: slots[i].next_token,
            pos: slots[i].next_pos,
            logits: true,
        })
        .collect();
    let mut chosen: Vec<(usize, Step)> = Vec::with_capacity(active.len());
    let (spec, probe_ids) = (stepper.spec, &stepper.probe_ids);
    // The logits of slots with a follow still on them, read once every slot has chosen (a
    // baseline continuation's token of this step is known only then).
    let mut followed = vec![false; slots.len()];
    for f in follows.iter().filter(|f| f.following) {
        followed[f.slot] = true;
    }
    let mut kept_logits: Vec<(usize, Vec<f32>)> = Vec::new();
    let on_logits = |k: usize, logits: &[f32]| {
        let slot = active[k];
        if followed[slot] {
            kept_logits.push((slot, logits.to_vec()));
        }
        chosen.push((slot, choose(logits, spec, probe_ids, &mut slots[slot].rng)));
    };
    match capture {
        None => lab.eval(&items, on_logits)?,
        Some(c) => {
            let rows = eval_step(lab, &items, c, on_logits)?;
            let info = stepper.model.info();
            let (n_layer, n_head) = (info.n_layer as usize, info.n_head as usize);
            for (k, row) in rows.iter().enumerate() {
                if let Some(row) = row {
                    let s = &mut slots[active[k]];
                    let last = s.last_prompt_pos;
                    let sums = row_sums(row, n_layer, n_head, c.needle, s.carriers, last);
                    s.attention.push(&sums);
                }
            }
        }
    }
    for (i, mut st) in chosen {
        st.token.piece = stepper.piece(st.token.id);
        for a in &mut st.top {
            a.piece = stepper.piece(a.id);
        }
        let s = &mut slots[i];
        s.generation.tokens.push(st.token.id);
        on_event(RunEvent::Token {
            row: s.row,
            step: at,
            piece: st.token.piece.clone(),
        });
        if spec.generation.stop_at_eog && stepper.model.is_end_of_generation(st.token.id) {
            s.done = true;
        }
        s.next_token = st.token.id;
        s.next_pos += 1;
        s.generation.steps.push(st);
    }
    if !follows.is_empty() {
        read_follows(follows, slots, &kept_logits, at);
    }
    Ok(active.len())
}

/// A grid's generations.
pub(crate) struct Generated {
    /// Per variant its baseline, then per planned condition its generation (texts filled in).
    pub generations: Vec<Generation>,
    /// The same rows' attention (empty when not captured).
    pub attention: Vec<RowAttention>,
    /// Tokens generated, all sequences together.
    pub n_tokens: usize,
    /// False when `cancel` stopped it.
    pub complete: bool,
}

/// Generates the plan's `max_tokens` in every slot, one batched step at a time, reporting
/// progress as half of the run's work (scoring is the other half), and reads `follows` along.
pub(crate) fn generate(
    lab: &mut Lab<'_>,
    plan: &Plan<'_>,
    follows: &mut [Follow],
    cancel: &AtomicBool,
    capture: Option<&StepCapture>,
    on_event: &mut impl FnMut(RunEvent),
) -> Result<Generated, EngineError> {
    let mut slots = slots(plan);
    let mut stepper = Stepper::new(lab.model(), plan.spec);
    // A computed condition's tokens are also those of the conditions that run as it.
    let on_event = &mut |e: RunEvent| match e {
        RunEvent::Token {
            row: RowRef::Condition(first),
            step,
            piece,
        } => {
            for c in plan.sharing(first) {
                on_event(RunEvent::Token {
                    row: RowRef::Condition(c.index),
                    step,
                    piece: piece.clone(),
                });
            }
        }
        e => on_event(e),
    };
    let max_tokens = plan.spec.generation.max_tokens;
    let (mut n_tokens, mut complete) = (0, true);
    for i in 0..max_tokens {
        if cancel.load(Ordering::Relaxed) {
            complete = false;
            break;
        }
        let n = step(lab, &mut slots, follows, &mut stepper, i, capture, on_event)?;
        if n == 0 {
            break;
        }
        n_tokens += n;
        on_event(RunEvent::Progress {
            done: i + 1,
            total: 2 * max_tokens,
        });
    }
    let attention = if capture.is_some_and(|c| c.on) {
        per_row(
            plan,
            slots
                .iter_mut()
                .map(|s| std::mem::take(&mut s.attention))
                .collect(),
        )
    } else {
        Vec::new()
    };
    let generations = slots
        .into_iter()
        .map(|s| {
            let mut g = s.generation;
            g.text = lab.model().detokenize(&g.tokens);
            g
        })
        .collect();
    let generations = per_row(plan, generations);
    Ok(Generated {
        generations,
        attention,
        n_tokens,
        complete,
    })
}
