//! `kvlab bench --scale`: what grows with the cache, measured on a model with Llama 3.1 8B's
//! cache shape (32 layers × 8 KV heads × 128, 128 KiB per token at f16) and random weights
//! (written once by [`crate::gguf::writer::llama_8b_cache_shape`] with the demo model's
//! tokenizer), with a long prompt. The demo model's cache is 23 KiB per token, so the normal
//! bench hides the cost of moving whole sequence states (hundreds of MB each here). A sweep
//! item shares the prompt's cells in one KV stream and writes only its edited cells
//! (`runner::sweep`); the bare loop it is compared with shares the prompt's cells the same way
//! (llama.cpp's `seq_cp` in a unified cache, which copies nothing) and evaluates the same
//! tokens, with no edit at all.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::lab::BatchItem;
use crate::engine::{Lab, LabOptions, LoadOptions, LoadedModel};
use crate::experiment::spec::KvPart;
use crate::experiment::sweep::{SweepKind, SweepSpec};
use crate::experiment::{ExperimentSpec, LayerSet, Op, Span};
use crate::runner::{self, RunError, RunEvent, RunOptions};

/// The file the scale model is written to, in kvlab's model cache.
pub const SCALE_MODEL_FILE: &str = "random-llama-8b-cache-shape.gguf";

/// The figures of one scale run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleReport {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// KV bytes per token (all layers, K and V).
    pub kv_bytes_per_token: u64,
    /// One sequence's state as llama.cpp writes it, MiB.
    pub state_mib: f64,
    /// Seconds to read one sequence's state and write it back.
    pub state_round_trip_s: f64,
    /// Seconds to evaluate the prompt (one variant).
    pub prompt_s: f64,
    /// Position-sweep items per second (each an edited cell written, then scoring).
    pub sweep_items_per_s: f64,
    /// The same items as bare loops: `seq_cp` of the prompt's cells, then the same tokens.
    pub bare_items_per_s: f64,
    /// sweep / bare (the target: at least 0.85).
    pub sweep_vs_bare: f64,
    /// Items measured, the reference (no intervention) included.
    pub items: usize,
    /// Peak resident memory of the process, MiB (Linux).
    pub peak_memory_mib: Option<f64>,
    /// The model file, MiB.
    pub model_mib: f64,
    /// The sweep's KV cache (all its sequences), MiB.
    pub sweep_kv_mib: f64,
    /// The seed grid on the same prompt.
    pub grid: GridFigures,
}

/// The seed grid (its 8 conditions, [`GRID_TOKENS`] tokens each) on the long prompt, each
/// phase beside the bare loop doing its work (`bench::phases`; scoring's is the teacher-forced
/// evaluation from scratch). A grid keeps one KV stream per sequence (so a copy has the
/// original's cell layout and the control is the baseline bit for bit); each condition's
/// starting cache is its prompt's state bytes, read from llama.cpp and edited where the rows
/// lie, written into the condition's stream. Each phase's time is the fastest of
/// [`GRID_REPEATS`] runs on each side, interleaved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GridFigures {
    /// Conditions made (the seed's 8).
    pub conditions: usize,
    /// Tokens generated per row.
    pub tokens: usize,
    /// Seconds evaluating both prompts.
    pub prompt_s: f64,
    /// The same prompts evaluated by a bare loop, seconds.
    pub bare_prompt_s: f64,
    /// Seconds making the conditions' starting caches and the K/V delta (state reads, edits,
    /// writes).
    pub surgery_s: f64,
    /// Seconds generating.
    pub generate_s: f64,
    /// The same rows and token counts by a bare argmax loop, seconds.
    pub bare_generate_s: f64,
    /// Seconds scoring.
    pub score_s: f64,
    /// Tokens scoring evaluated.
    pub score_tokens: usize,
    /// Seconds scoring from scratch (every continuation teacher-forced from its restored
    /// starting cache).
    pub scratch_score_s: f64,
    /// Tokens scoring from scratch evaluated.
    pub scratch_tokens: usize,
    /// The grid run's own peak resident memory, MiB (Linux; `None` where the peak could not
    /// be reset before the run).
    pub peak_memory_mib: Option<f64>,
    /// The grid's KV cache (every sequence's stream), MiB.
    pub kv_mib: f64,
    /// What the app's memory estimate says before such a run (weights, KV cache, prompt
    /// copies), MiB: the figure its "will not fit" warning compares with this machine's memory.
    pub estimate_mib: f64,
}

/// Tokens each row of the scale grid generates.
pub const GRID_TOKENS: usize = 8;

/// Runs of the scale grid and of its bare loops, interleaved; each phase's figure is its
/// fastest run (peak memory and the scoring tokens come from the first).
pub const GRID_REPEATS: usize = 2;

/// Writes the scale model next to the demo model (once) and returns its path.
pub fn scale_model(tokenizer: &Path) -> Result<std::path::PathBuf, String> {
    let dir = tokenizer
        .parent()
        .ok_or("the tokenizer model has no folder")?;
    let path = dir.join(SCALE_MODEL_FILE);
    if !path.is_file() {
        crate::gguf::writer::llama_8b_cache_shape(tokenizer, &path)?;
    }
    Ok(path)
}

/// The seed experiment with filler text after the needle's sentence, to about `tokens` prompt
/// tokens on `model`.
fn long_seed(model: &LoadedModel, tokens: usize) -> Result<ExperimentSpec, RunError> {
    let mut spec = ExperimentSpec::seed();
    spec.conditions.clear();
    spec.generation.max_tokens = 8;
    let filler = " The itinerary should balance museums, parks, food and a little free time, \
                  and it should work for a family travelling with two children.";
    let base = runner::prepare_prompts(model, &spec)?.prompts[0]
        .tokens
        .len();
    let per = model
        .tokenize(filler, false, false)
        .map_err(RunError::Engine)?
        .len()
        .max(1);
    let repeats = tokens.saturating_sub(base) / per;
    let turns = &mut spec.prompt.turns;
    let at = turns
        .iter()
        .position(|t| t.content.contains("{needle}"))
        .unwrap_or(0);
    if let Some(t) = turns.get_mut(at) {
        t.content.push_str(&filler.repeat(repeats));
    }
    Ok(spec)
}

/// Runs the scale figures with a prompt of about `prompt_tokens` tokens and `items` sweep
/// items. `tokenizer` is the demo model (its tokenizer is copied into the scale model).
pub fn run(
    tokenizer: &Path,
    prompt_tokens: usize,
    items: usize,
    threads: i32,
    mut stage: impl FnMut(&str),
) -> Result<ScaleReport, anyhow::Error> {
    stage("writing or finding the scale model");
    let path = scale_model(tokenizer).map_err(anyhow::Error::msg)?;
    let model = LoadedModel::load(&path, &LoadOptions::default(), None, |_| {})?;
    let spec = long_seed(&model, prompt_tokens)?;
    let prepared = runner::prepare_prompts(&model, &spec)?;
    let prompt: Vec<i32> = prepared.prompts[0].tokens.iter().map(|t| t.id).collect();
    let needle = prepared.span;
    let kv_bytes_per_token = crate::runner::fits::kv_bytes_per_cell(model.info(), spec.cache);

    // The continuations a sweep item scores: every variant's expected answers.
    let conts: Vec<Vec<i32>> = (spec.variants.iter())
        .flat_map(|v| v.expected.iter())
        .map(|a| runner::answer_ids(&model, a))
        .collect::<Result<_, _>>()?;

    stage("position sweep");
    let sweep = SweepSpec {
        kind: SweepKind::Position {
            range: Some(Span {
                start: needle.end,
                end: needle.end + items,
            }),
        },
        variant: spec.variants[0].name.clone(),
        op: Op::Zero,
        layers: LayerSet::All,
        part: KvPart::Both,
    };
    let mut sweeping = None;
    let options = RunOptions {
        threads,
        ..RunOptions::default()
    };
    let swept = runner::run_sweep(&model, &spec, &sweep, &options, |e| {
        if matches!(&e, RunEvent::Stage(s) if s == "sweeping") {
            sweeping = Some(Instant::now());
        }
    })?;
    let sweep_s = sweeping.map_or(0.0, |t| t.elapsed().as_secs_f64());
    // Measured before the bare loops' context exists: the sweep's own high-water mark.
    let peak_memory_mib = super::peak_memory_mib();
    // The sweep's shared stream, as runner::sweep sizes it: the prompt, then per slot (16
    // jobs: 8 items × 2 answers) the edited cell, the last prompt token and an answer.
    let n_slots = 16u64;
    let max_cont = conts.iter().map(Vec::len).max().unwrap_or(0);
    let cells = runner::shared_cells(prompt.len() - 1, n_slots as u32, 2 + max_cont);
    let cells = cells.div_ceil(256) as u64 * 256;
    let sweep_kv_mib = (cells * kv_bytes_per_token) as f64 / (1 << 20) as f64;
    stage("state round trip");
    let mut lab = Lab::shared(
        &model,
        LabOptions {
            n_seq: 1 + n_slots as u32,
            n_ctx_per_seq: cells as u32,
            threads,
            n_batch: 512,
            cache: spec.cache,
        },
    )?;
    let t0 = Instant::now();
    eval(&mut lab, 0, &prompt[..prompt.len() - 1], 0)?;
    let prompt_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    // Read and written back into the same sequence (restoring empties it first): the stream
    // has room for one prompt.
    let bytes = lab.state_bytes(0)?;
    lab.set_state_bytes(0, &bytes)?;
    let state_round_trip_s = t0.elapsed().as_secs_f64();
    let state_mib = bytes.len() as f64 / (1 << 20) as f64;
    drop(bytes);

    stage("bare teacher-forced loops");
    // The sweep's items and its reference (no intervention): the same number of evaluations.
    let items = swept.points.len() + 1;
    let per_wave = (16 / conts.len().max(1)).max(1);
    let t0 = Instant::now();
    let mut done = 0;
    while done < items {
        let wave = per_wave.min(items - done);
        for j in 0..wave {
            for (c, cont) in conts.iter().enumerate() {
                let seq = 1 + (j * conts.len() + c) as i32;
                lab.clear(seq);
                lab.share(0, seq, 0, None)?;
                let last = prompt.len() - 1;
                let tokens = std::iter::once(prompt[last]).chain(cont.iter().copied());
                // One call per item and answer, as the sweep evaluates them (see
                // runner::sweep's shared lab: it keeps each job's numbers its own).
                let job: Vec<BatchItem> = (tokens.enumerate())
                    .map(|(k, token)| BatchItem {
                        seq,
                        token,
                        pos: (last + k) as i32,
                        logits: true,
                    })
                    .collect();
                lab.eval(&job, |_, _| {})?;
            }
        }
        for seq in 1..=n_slots as i32 {
            lab.clear(seq);
        }
        done += wave;
    }
    let bare_s = t0.elapsed().as_secs_f64();
    drop(lab);

    stage("seed grid");
    let weights = std::fs::metadata(&path).map_or(0, |m| m.len());
    let grid = seed_grid(&model, &spec, threads, kv_bytes_per_token, weights)?;

    let sweep_items_per_s = items as f64 / sweep_s.max(1e-9);
    let bare_items_per_s = items as f64 / bare_s.max(1e-9);
    Ok(ScaleReport {
        prompt_tokens: prompt.len(),
        kv_bytes_per_token,
        state_mib,
        state_round_trip_s,
        prompt_s,
        sweep_items_per_s,
        bare_items_per_s,
        sweep_vs_bare: sweep_items_per_s / bare_items_per_s.max(1e-12),
        items,
        peak_memory_mib,
        model_mib: weights as f64 / (1 << 20) as f64,
        sweep_kv_mib,
        grid,
    })
}

/// Runs the seed grid's conditions on `prompt_spec`'s prompt (see [`GridFigures`]).
fn seed_grid(
    model: &LoadedModel,
    prompt_spec: &ExperimentSpec,
    threads: i32,
    kv_bytes_per_token: u64,
    weights: u64,
) -> Result<GridFigures, RunError> {
    let mut spec = prompt_spec.clone();
    spec.conditions = ExperimentSpec::seed().conditions;
    spec.generation.max_tokens = GRID_TOKENS;
    let prepared = runner::prepare_prompts(model, &spec)?;
    let longest = prepared.prompts.iter().map(|p| p.tokens.len()).max();
    let estimate =
        crate::experiment::memory::RunMemory::of(&spec, longest, kv_bytes_per_token, weights);
    let options = RunOptions {
        threads,
        ..RunOptions::default()
    };
    // Linux resets the high-water mark to the current size (see proc(5), clear_refs).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let r = runner::run(model, &spec, &options, |_| {})?;
    let peak_memory_mib = super::peak_memory_mib().filter(|_| reset);
    let cells = r.settings.n_seq as u64 * r.settings.n_ctx_per_seq as u64;
    // This machine's speed drifts by ±12 % over the minute a phase takes, so each side runs
    // GRID_REPEATS times, interleaved (kvlab, bare, kvlab, bare, …), and keeps its fastest.
    let mut bare = super::phases::grid_vs_bare(model, &spec, &r, threads)?;
    let mut t = r.timings.clone();
    for _ in 1..GRID_REPEATS {
        let again = runner::run(model, &spec, &options, |_| {})?;
        let b = super::phases::grid_vs_bare(model, &spec, &again, threads)?;
        t.prompt_s = t.prompt_s.min(again.timings.prompt_s);
        t.surgery_s = t.surgery_s.min(again.timings.surgery_s);
        t.generate_s = t.generate_s.min(again.timings.generate_s);
        t.score_s = t.score_s.min(again.timings.score_s);
        bare.bare_prompt_s = bare.bare_prompt_s.min(b.bare_prompt_s);
        bare.bare_generate_s = bare.bare_generate_s.min(b.bare_generate_s);
    }
    let scratch = runner::score_teacher_forced(model, &r, &options)?;
    Ok(GridFigures {
        conditions: r.conditions.len(),
        tokens: GRID_TOKENS,
        prompt_s: t.prompt_s,
        bare_prompt_s: bare.bare_prompt_s,
        surgery_s: t.surgery_s,
        generate_s: t.generate_s,
        bare_generate_s: bare.bare_generate_s,
        score_s: t.score_s,
        score_tokens: r.timings.score_tokens,
        scratch_score_s: scratch.score_s,
        scratch_tokens: scratch.tokens,
        peak_memory_mib,
        kv_mib: (cells * kv_bytes_per_token) as f64 / (1 << 20) as f64,
        estimate_mib: estimate
            .total()
            .map_or(f64::INFINITY, |b| b as f64 / (1 << 20) as f64),
    })
}

/// Evaluates `tokens` into `seq` from position `first`, one batch at a time.
fn eval(lab: &mut Lab<'_>, seq: i32, tokens: &[i32], first: i32) -> Result<(), RunError> {
    for part in BatchItem::run(seq, first, tokens).chunks(512) {
        lab.eval(part, |_, _| {})?;
    }
    Ok(())
}

/// The report as a table.
pub fn to_table(r: &ScaleReport) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<38}{v}\n"));
    row(
        "model",
        format!(
            "random weights, Llama 3.1 8B cache shape ({:.0} MiB file)",
            r.model_mib
        ),
    );
    row(
        "KV cache per token",
        format!("{:.0} KiB", r.kv_bytes_per_token as f64 / 1024.0),
    );
    row("prompt", format!("{} tokens", r.prompt_tokens));
    row("prompt evaluation", format!("{:.2} s", r.prompt_s));
    row(
        "one sequence's state",
        format!(
            "{:.0} MiB, read and written back in {:.2} s",
            r.state_mib, r.state_round_trip_s
        ),
    );
    row(
        "position sweep",
        format!("{:.2} items/s ({} items)", r.sweep_items_per_s, r.items),
    );
    row(
        "bare loops (seq_cp, same tokens)",
        format!(
            "{:.2} items/s → sweep at {:.0} % (target ≥ 85 %)",
            r.bare_items_per_s,
            100.0 * r.sweep_vs_bare
        ),
    );
    if let Some(peak) = r.peak_memory_mib {
        row(
            "peak host memory",
            format!(
                "{peak:.0} MiB ({:.1}× model + the sweep's KV cache of {:.0} MiB; target ≤ 1.2×)",
                peak / (r.model_mib + r.sweep_kv_mib).max(1e-9),
                r.sweep_kv_mib
            ),
        );
    }
    let g = &r.grid;
    let vs = |s: f64, bare: f64| format!("{:+.1} %", (s / bare.max(1e-9) - 1.0) * 100.0);
    row(
        "seed grid",
        format!("{} conditions, {} tokens per row", g.conditions, g.tokens),
    );
    row(
        "  prompt phase",
        format!(
            "{:.2} s   (bare loop {:.2} s → {}; target within 10 %)",
            g.prompt_s,
            g.bare_prompt_s,
            vs(g.prompt_s, g.bare_prompt_s)
        ),
    );
    row("  surgery and K/V delta", format!("{:.2} s", g.surgery_s));
    row(
        "  generation phase",
        format!(
            "{:.2} s   (bare argmax loop {:.2} s → {}; target within 10 %)",
            g.generate_s,
            g.bare_generate_s,
            vs(g.generate_s, g.bare_generate_s)
        ),
    );
    row(
        "  scoring",
        format!(
            "{:.2} s   (from scratch {:.2} s → {:.1}× faster; {} tokens evaluated of {})",
            g.score_s,
            g.scratch_score_s,
            g.scratch_score_s / g.score_s.max(1e-9),
            g.score_tokens,
            g.scratch_tokens
        ),
    );
    if let Some(peak) = g.peak_memory_mib {
        row(
            "  its peak host memory",
            format!(
                "{peak:.0} MiB ({:.2}× model + its KV cache of {:.0} MiB; target ≤ 1.2×)",
                peak / (r.model_mib + g.kv_mib).max(1e-9),
                g.kv_mib
            ),
        );
    }
    row(
        "  the app's estimate before it",
        format!("{:.0} MiB", g.estimate_mib),
    );
    out
}
