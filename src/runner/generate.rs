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
use super::plan::{Edit, Plan};
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
    /// Whether it shows a baseline's generation and feeds another continuation.
    mirror: Mirror,
}

/// How a `none` condition's slot spends its steps. Its cache is its variant's prompt cache, so
/// generating on its own would repeat its baseline token for token, log-prob for log-prob. Once
/// its first step's logits are seen to equal the baseline's bit for bit (the same cache gives
/// the same logits: the check that the restored cache is the baseline's), the row shows the
/// baseline's generation, and the slot feeds another variant's baseline continuation, on which
/// the condition is scored: generation then reads that whole continuation's log-probs, from the
/// very cache a teacher-forced evaluation uses, and scoring has nothing left of it to evaluate.
/// The condition's own baseline continuation is read from the baseline's slot (the same logits).
/// A control whose first step differs generates on its own, as any condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mirror {
    /// A slot that generates its own tokens.
    No,
    /// A control that will mirror slot `baseline` and feed slot `path`'s tokens if its first
    /// step's logits equal the baseline's.
    Candidate { baseline: usize, path: usize },
    /// A control that mirrors slot `baseline` and feeds slot `path`'s tokens.
    Active { baseline: usize, path: usize },
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
            mirror: Mirror::No,
        }
    }

    /// Whether it feeds another slot's tokens (and its own choices are not needed).
    fn feeds(&self) -> bool {
        matches!(self.mirror, Mirror::Active { .. })
    }

    /// The slot whose generation this slot's row shows, when it mirrors one.
    fn mirror_of(&self) -> Option<usize> {
        match self.mirror {
            Mirror::Active { baseline, .. } => Some(baseline),
            _ => None,
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
/// k generates in sequence k. A `none` condition scored on another variant's baseline
/// continuation (the first such in `follows`) is a [`Mirror`] candidate.
fn slots(plan: &Plan<'_>, follows: &[Follow]) -> Vec<Slot> {
    let seed = plan.sampling_seed();
    let baselines = plan
        .prompts
        .iter()
        .enumerate()
        .map(|(vi, p)| Slot::new(RowRef::Baseline(vi), vi as i32, p, plan.needle, seed));
    let conditions = plan.computed().map(|c| {
        let p = &plan.prompts[c.variant];
        let mut slot = Slot::new(RowRef::Condition(c.index), c.seq, p, plan.needle, seed);
        if c.edit == Edit::None {
            let other_baseline = follows.iter().find_map(|f| match f.tokens {
                Followed::Slot(path) if f.slot == c.seq as usize && path != c.variant => Some(path),
                _ => None,
            });
            if let Some(path) = other_baseline {
                slot.mirror = Mirror::Candidate {
                    baseline: c.variant,
                    path,
                };
            }
        }
        slot
    });
    baselines.chain(conditions).collect()
}

/// At the first step, turns each [`Mirror`] candidate whose logits equal its baseline's bit for
/// bit into a slot that feeds its path (its first token is the path's, not its own choice), and
/// moves its follows of the baseline's continuation to the baseline's slot (`logits`: the
/// step's logits of the candidates and their baselines, by slot).
fn start_mirrors(slots: &mut [Slot], follows: &mut [Follow], logits: &[(usize, Vec<f32>)]) {
    let row = |slot: usize| logits.iter().find(|(s, _)| *s == slot).map(|(_, l)| l);
    for k in 0..slots.len() {
        let Mirror::Candidate { baseline, path } = slots[k].mirror else {
            continue;
        };
        let same = match (row(k), row(baseline)) {
            (Some(a), Some(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            _ => false,
        };
        let first = slots[path].generation.tokens.first().copied();
        let (Some(first), true) = (first, same) else {
            slots[k].mirror = Mirror::No;
            continue;
        };
        let path_done = slots[path].done;
        let s = &mut slots[k];
        s.mirror = Mirror::Active { baseline, path };
        s.generation.tokens = vec![first];
        s.next_token = first;
        s.done = path_done;
        for f in follows.iter_mut().filter(|f| f.slot == k) {
            if matches!(f.tokens, Followed::Slot(b) if b == baseline) {
                f.slot = baseline;
            }
        }
    }
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
    // A mirror candidate's first step is compared with its baseline's.
    for (k, s) in slots.iter().enumerate() {
        if let Mirror::Candidate { baseline, .. } = s.mirror {
            followed[k] = true;
            followed[baseline] = true;
        }
    }
    let feeding: Vec<bool> = slots.iter().map(Slot::feeds).collect();
    let mut kept_logits: Vec<(usize, Vec<f32>)> = Vec::new();
    let on_logits = |k: usize, logits: &[f32]| {
        let slot = active[k];
        if followed[slot] {
            kept_logits.push((slot, logits.to_vec()));
        }
        if !feeding[slot] {
            chosen.push((slot, choose(logits, spec, probe_ids, &mut slots[slot].rng)));
        }
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
        // Rows that mirror this slot show its tokens.
        for mirror in slots.iter().filter(|s| s.mirror_of() == Some(i)) {
            on_event(RunEvent::Token {
                row: mirror.row,
                step: at,
                piece: st.token.piece.clone(),
            });
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
    // Slots that feed a path take its token of this step (chosen above).
    for i in active.iter().copied().filter(|&i| feeding[i]) {
        let Mirror::Active { path, .. } = slots[i].mirror else {
            continue;
        };
        let (token, path_done) = (
            slots[path].generation.tokens.get(at).copied(),
            slots[path].done,
        );
        let s = &mut slots[i];
        s.next_pos += 1;
        match token {
            Some(t) => {
                s.generation.tokens.push(t);
                s.next_token = t;
                s.done = path_done;
            }
            None => s.done = true,
        }
    }
    if at == 0 {
        start_mirrors(slots, follows, &kept_logits);
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
    let mut slots = slots(plan, follows);
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
    // A mirroring row shows its baseline's generation (and attention).
    for k in 0..slots.len() {
        if let Some(b) = slots[k].mirror_of() {
            slots[k].generation = slots[b].generation.clone();
            slots[k].attention = slots[b].attention.clone();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TokenPiece;

    /// Three slots after step 0: baselines SF (slot 0, chose 7) and NY (slot 1, chose 9), and a
    /// control of SF (slot 2, chose 7) that is a mirror candidate, with follows of both
    /// baselines and of an answer.
    fn after_first_step() -> (Vec<Slot>, Vec<Follow>) {
        let prompt = PreparedPrompt {
            name: "SF".into(),
            text: String::new(),
            tokens: (0..5)
                .map(|i| TokenPiece {
                    id: i + 100,
                    piece: String::new(),
                })
                .collect(),
        };
        let needle = Span { start: 2, end: 3 };
        let mut slots: Vec<Slot> = [
            RowRef::Baseline(0),
            RowRef::Baseline(1),
            RowRef::Condition(0),
        ]
        .into_iter()
        .enumerate()
        .map(|(k, row)| Slot::new(row, k as i32, &prompt, needle, 0))
        .collect();
        for (slot, token) in [(0, 7), (1, 9), (2, 7)] {
            slots[slot].generation.tokens.push(token);
            slots[slot].next_token = token;
        }
        slots[2].mirror = Mirror::Candidate {
            baseline: 0,
            path: 1,
        };
        let follows = vec![
            Follow::new(2, Followed::Slot(0)),
            Follow::new(2, Followed::Slot(1)),
            Follow::new(2, Followed::Tokens(vec![7, 8])),
        ];
        (slots, follows)
    }

    #[test]
    fn a_control_whose_first_step_is_its_baselines_feeds_the_other_baseline() {
        let (mut slots, mut follows) = after_first_step();
        let logits = vec![(0, vec![0.5, -1.0]), (2, vec![0.5, -1.0])];
        start_mirrors(&mut slots, &mut follows, &logits);
        assert_eq!(
            slots[2].mirror,
            Mirror::Active {
                baseline: 0,
                path: 1
            }
        );
        assert_eq!(slots[2].mirror_of(), Some(0));
        // It feeds NY's first token, not its own choice.
        assert_eq!(
            (slots[2].generation.tokens.clone(), slots[2].next_token),
            (vec![9], 9)
        );
        // Its own baseline's continuation is read from the baseline's slot; the others stay.
        let read_from: Vec<usize> = follows.iter().map(|f| f.slot).collect();
        assert_eq!(read_from, [0, 2, 2]);
    }

    #[test]
    fn a_control_whose_first_step_differs_generates_on_its_own() {
        let (mut slots, mut follows) = after_first_step();
        let logits = vec![
            (0, vec![0.5, -1.0]),
            (2, vec![0.5, f32::from_bits((-1.0f32).to_bits() + 1)]),
        ];
        start_mirrors(&mut slots, &mut follows, &logits);
        assert_eq!(slots[2].mirror, Mirror::No);
        assert_eq!(slots[2].generation.tokens, [7]);
        assert!(follows.iter().all(|f| f.slot == 2));
    }
}
