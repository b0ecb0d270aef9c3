//! Sweep items in a shared lab: every sequence in one KV stream (llama.cpp's unified cache), so
//! an item's cache is made without copying the prompt's.
//!
//! The variants' prompts are evaluated once, variant i into sequence i. An item's sequence
//! then gets, in this order: a small state holding only the cells its edit changes (made by the
//! same surgery as a grid's, from just those cells of the prompts, read through a scratch
//! sequence), and the prompt's other cells by [`Lab::share`], which only tags them. Remove
//! restores nothing: the cells around the span are shared and the span is simply not. So an
//! item costs its edited cells' bytes and its tokens, not its cache: at Llama 3.1 8B's size a
//! 2k-token prompt's state is 254 MiB, an edited cell 128 KiB.
//!
//! What differs from a grid: the edited cells lie after the prompt's in the stream, not at
//! their positions' places, and attention sums over cells in stream order. Results equal the
//! grid's to within float reduction order, not bit for bit (measured in `tests/sweep.rs`,
//! written up in the README); [`super::SweepCaches::Streams`] gives the grid's layout.

use std::collections::HashMap;

use crate::engine::{Lab, LabOptions, LoadedModel, SeqState};
use crate::experiment::Span;

use super::super::plan::{Edit, Plan, PlannedCondition};
use super::super::score::{self, LoadedJob, Scored};
use super::super::surgery::{self, Spreads};
use super::super::{RunError, RunEvent, RunOptions};

/// Positions read at a time when a statistic needs the whole prompt.
const PIECE: i32 = 256;

/// The cells a shared lab needs: the prompts it holds, and per item slot its edited cells,
/// the prompt's last token and the longest continuation (`per_slot`), with a small margin.
pub fn shared_cells(prompt_cells: usize, n_slots: u32, per_slot: usize) -> usize {
    prompt_cells + n_slots as usize * per_slot + 8
}

/// A shared lab holding the prompts a sweep reads, and its item slots.
pub(super) struct SharedCaches<'m> {
    lab: Lab<'m>,
    /// The variants whose prompts are in the lab (variant i in sequence i).
    evaluated: Vec<usize>,
    /// A sequence for reading some of a prompt's cells.
    scratch: i32,
    /// The first item sequence.
    first_slot: i32,
    /// The noise op's σ per variant, from its whole prompt.
    spreads: HashMap<usize, Spreads>,
}

/// Whether a model's sweeps can use a shared lab: llama.cpp's sliding-window cache evicts
/// cells by position as sequences advance, which a stream of shared cells cannot allow.
pub(super) fn model_allows(model: &LoadedModel) -> bool {
    model.info().sliding_layers.is_empty()
}

/// The variants a condition's cache is made from.
fn reads(c: &PlannedCondition) -> Vec<usize> {
    let mut v = vec![c.variant];
    match &c.edit {
        Edit::Transplant { donor } => v.push(*donor),
        Edit::Mean { over } => v.extend(over),
        _ => {}
    }
    v
}

/// Whether a condition writes edited cells (none and remove only share the prompt's).
fn writes_cells(c: &PlannedCondition) -> bool {
    !matches!(c.edit, Edit::None | Edit::Remove)
}

impl<'m> SharedCaches<'m> {
    /// Creates the lab (room for the prompts it needs and `n_slots` items of at most
    /// `max_cont` scored tokens) and evaluates those prompts.
    pub(super) fn open(
        model: &'m LoadedModel,
        plan: &Plan<'_>,
        max_cont: usize,
        n_slots: u32,
        options: &RunOptions,
        on_event: &mut impl FnMut(RunEvent),
    ) -> Result<SharedCaches<'m>, RunError> {
        let mut evaluated: Vec<usize> = plan.conditions.iter().flat_map(reads).collect();
        evaluated.sort_unstable();
        evaluated.dedup();
        let prompt_cells: usize = (evaluated.iter())
            .map(|&v| plan.prompts[v].tokens.len() - 1)
            .sum();
        let max_span = (plan.conditions.iter())
            .filter(|c| writes_cells(c))
            .map(|c| c.span.len())
            .max()
            .unwrap_or(0);
        let n_variants = plan.prompts.len() as u32;
        let per_item = max_span + 1 + max_cont;
        let lab = Lab::shared(
            model,
            LabOptions {
                n_seq: n_variants + 1 + n_slots,
                n_ctx_per_seq: shared_cells(prompt_cells, n_slots, per_item) as u32,
                threads: options.threads,
                n_batch: options.n_batch,
                cache: plan.spec.cache,
            },
        )?;
        let mut caches = SharedCaches {
            lab,
            scratch: n_variants as i32,
            first_slot: n_variants as i32 + 1,
            evaluated,
            spreads: HashMap::new(),
        };
        on_event(RunEvent::Stage(super::super::EVALUATING_PROMPTS.into()));
        super::super::eval_prompt_tokens(
            &mut caches.lab,
            plan,
            &caches.evaluated,
            options,
            on_event,
        )?;
        caches.read_spreads(plan)?;
        Ok(caches)
    }

    /// The noise op's σ for every variant a noise condition starts from, over its whole prompt,
    /// read [`PIECE`] positions at a time.
    fn read_spreads(&mut self, plan: &Plan<'_>) -> Result<(), RunError> {
        let mut layers: HashMap<usize, Vec<u32>> = HashMap::new();
        for c in &plan.conditions {
            if matches!(c.edit, Edit::Noise { .. }) {
                layers.entry(c.variant).or_default().extend(&c.layers);
            }
        }
        for (v, mut layers) in layers {
            layers.sort_unstable();
            layers.dedup();
            let cached = plan.prompts[v].tokens.len() as i32 - 1;
            let mut spreads = Spreads::default();
            for p0 in (0..cached).step_by(PIECE as usize) {
                let piece =
                    (self.lab).state_of_positions(v as i32, self.scratch, p0, p0 + PIECE)?;
                spreads
                    .add(&piece, &layers)
                    .map_err(crate::engine::EngineError::from)?;
            }
            self.spreads.insert(v, spreads);
        }
        Ok(())
    }

    /// Every variant's cells at the positions `span` covers (empty for variants not in the lab).
    fn cells_at(&mut self, n_variants: usize, span: Span) -> Result<Vec<SeqState>, RunError> {
        let mut states: Vec<Option<SeqState>> = vec![None; n_variants];
        for &v in &self.evaluated {
            let (p0, p1) = (span.start as i32, span.end as i32);
            states[v] = Some(
                self.lab
                    .state_of_positions(v as i32, self.scratch, p0, p1)?,
            );
        }
        let empty = states.iter().flatten().next().cloned().map(|mut s| {
            s.retain_positions(|_| false);
            s
        });
        Ok(states
            .into_iter()
            .map(|s| s.or_else(|| empty.clone()).unwrap_or_else(empty_state))
            .collect())
    }

    /// Makes each condition's cache once per continuation (condition-major, as `jobs` come)
    /// and scores them all in one batched evaluation.
    pub(super) fn scores(
        &mut self,
        plan: &Plan<'_>,
        wave: &[PlannedCondition],
        continuations: &[&[i32]],
        probe_ids: &[Option<usize>],
    ) -> Result<Vec<Scored>, RunError> {
        // The cells every edit in the wave reads, in one read per variant.
        let edited = wave.iter().filter(|c| writes_cells(c));
        let cover = edited.fold(None::<Span>, |acc, c| {
            Some(acc.map_or(c.span, |a| Span {
                start: a.start.min(c.span.start),
                end: a.end.max(c.span.end),
            }))
        });
        let cells = match cover {
            Some(span) => self.cells_at(plan.prompts.len(), span)?,
            None => Vec::new(),
        };
        let mut jobs = Vec::with_capacity(wave.len() * continuations.len());
        let mut seq = self.first_slot;
        for c in wave {
            let own = c.variant as i32;
            let small = if writes_cells(c) {
                let mut s = surgery::edited_state_with(c, &cells, self.spreads.get(&c.variant))
                    .map_err(crate::engine::EngineError::from)?;
                s.retain_positions(|p| c.span.positions().contains(&(p as usize)));
                Some(s.serialize())
            } else {
                None
            };
            for tokens in continuations {
                match &small {
                    // Restoring empties the sequence first, so the edit goes in before sharing.
                    Some(bytes) => self.lab.set_state_bytes(seq, bytes)?,
                    None => self.lab.clear(seq),
                }
                if c.edit == Edit::None {
                    self.lab.share(own, seq, 0, None)?;
                } else {
                    self.lab.share(own, seq, 0, Some(c.span.start as i32))?;
                    self.lab.share(own, seq, c.span.end as i32, None)?;
                }
                jobs.push(LoadedJob {
                    seq,
                    prompt: &plan.prompts[c.variant],
                    tokens,
                });
                seq += 1;
            }
        }
        // One llama.cpp call per job. In one stream, llama.cpp's CPU attention takes its
        // kernel by the tokens in a call (from 64 a tiled one, below one that sums V in f16),
        // and jobs sharing a call were measured to move each other's results by up to 0.3 on
        // the demo model. Alone, a job takes the kernel a grid's stream of its own would, and
        // its numbers depend only on its cells, whatever else its wave holds.
        let mut scored = Vec::with_capacity(jobs.len());
        for job in &jobs {
            match score::score_loaded(&mut self.lab, std::slice::from_ref(job), probe_ids) {
                Ok(s) => scored.extend(s),
                Err(e) => {
                    self.clear_slots(seq);
                    return Err(e.into());
                }
            }
        }
        self.clear_slots(seq);
        Ok(scored)
    }

    /// Empties the item sequences below `end`.
    fn clear_slots(&mut self, end: i32) {
        for s in self.first_slot..end {
            self.lab.clear(s);
        }
    }
}

/// A state with no cells (a plan whose variants are all outside the lab never reads one).
fn empty_state() -> SeqState {
    SeqState {
        seq_id: 0,
        streams: Vec::new(),
        swa: None,
    }
}
