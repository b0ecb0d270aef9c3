//! The seed grid's phases against bare llama.cpp loops doing the same work, in the grid's own
//! context shape: the prompts evaluated into their sequences (kvlab also reads each variant's
//! state for surgery), and greedy decoding of every row (baselines and conditions) for exactly
//! as many tokens as the grid generated for it (kvlab also computes each step's log-softmax,
//! top-k, probes and the log-probs scoring reuses). Scoring's bare counterpart is the
//! teacher-forced evaluation from scratch, measured beside the grid in the main bench.

use std::time::Instant;

use crate::engine::lab::BatchItem;
use crate::engine::{Lab, LabOptions, LoadedModel};
use crate::experiment::metrics::argmax;
use crate::experiment::{ExperimentSpec, RunResults};
use crate::runner::{RunError, prepare_prompts};

/// Seconds per phase, kvlab's and the bare loop's.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// The grid's prompt phase.
    pub prompt_s: f64,
    /// The same prompts evaluated by a bare loop.
    pub bare_prompt_s: f64,
    /// The grid's generation phase.
    pub generate_s: f64,
    /// The same rows and token counts by a bare argmax loop.
    pub bare_generate_s: f64,
}

/// Measures the bare loops for `grid`, a run of `spec` (its timings are kvlab's side).
pub fn grid_vs_bare(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    grid: &RunResults,
    threads: i32,
) -> Result<Phases, RunError> {
    let prompts: Vec<Vec<i32>> = (prepare_prompts(model, spec)?.prompts.iter())
        .map(|p| p.tokens.iter().map(|t| t.id).collect())
        .collect();
    let n_variants = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut lab = Lab::new(
        model,
        LabOptions {
            n_seq: (n_variants + spec.conditions.len()) as u32,
            n_ctx_per_seq: (longest + spec.generation.max_tokens + 8) as u32,
            threads,
            n_batch: 512,
            cache: spec.cache,
        },
    )?;

    let items: Vec<BatchItem> = (prompts.iter().enumerate())
        .flat_map(|(v, p)| BatchItem::run(v as i32, 0, &p[..p.len() - 1]))
        .collect();
    let t0 = Instant::now();
    lab.eval(&items, |_, _| {})?;
    let bare_prompt_s = t0.elapsed().as_secs_f64();

    // Rows: each variant's baseline in its prompt's sequence, each condition in a copy of its
    // variant's (untimed, like the grid's surgery), as long as the grid made them. The copy is
    // written through the state, as the grid's are: a `seq_cp` between streams is carried out
    // at the next graph update, so it would land in the first timed step (about 1 s at
    // Llama 3.1 8B's cache shape and 2k tokens).
    let mut rows: Vec<(i32, usize, usize)> = (grid.variants.iter().enumerate())
        .map(|(v, r)| (v as i32, v, r.baseline.tokens.len()))
        .collect();
    let states = (0..n_variants)
        .map(|v| lab.state_bytes(v as i32))
        .collect::<Result<Vec<_>, _>>()?;
    for (k, c) in grid.conditions.iter().enumerate() {
        let v = spec.variant_index(&c.variant).unwrap_or(0);
        let seq = (n_variants + k) as i32;
        lab.set_state_bytes(seq, &states[v])?;
        rows.push((seq, v, c.generation.tokens.len()));
    }
    drop(states);
    let mut next: Vec<i32> = rows
        .iter()
        .map(|r| *prompts[r.1].last().unwrap_or(&0))
        .collect();
    let steps = rows.iter().map(|r| r.2).max().unwrap_or(0);
    let t0 = Instant::now();
    for s in 0..steps {
        let live: Vec<usize> = (0..rows.len()).filter(|&i| s < rows[i].2).collect();
        let items: Vec<BatchItem> = (live.iter())
            .map(|&i| BatchItem {
                seq: rows[i].0,
                token: next[i],
                pos: (prompts[rows[i].1].len() - 1 + s) as i32,
                logits: true,
            })
            .collect();
        lab.eval(&items, |k, logits| next[live[k]] = argmax(logits) as i32)?;
    }
    let bare_generate_s = t0.elapsed().as_secs_f64();
    Ok(Phases {
        prompt_s: grid.timings.prompt_s,
        bare_prompt_s,
        generate_s: grid.timings.generate_s,
        bare_generate_s,
    })
}
