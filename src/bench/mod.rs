//! `kvlab bench`: speed figures measured on this machine, in one run, reported as ratios.

mod attention;
mod dataset;
mod phases;
pub mod scale;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::lab::BatchItem;
use crate::engine::{KvPart, Lab, LabOptions, LoadedModel};
use crate::experiment::ExperimentSpec;
use crate::experiment::metrics::argmax;
use crate::experiment::spec::{Condition, LayerSet, Op, Site, Span};
use crate::experiment::sweep::{SweepKind, SweepSpec};
use crate::runner::{self, RunError, RunOptions, prepare_prompts};

/// The figures of one benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Short mode (CI) or full.
    pub quick: bool,
    /// CPU threads used.
    pub threads: i32,
    /// One sequence, greedy, no interventions: tokens per second.
    pub raw_decode_tokens_per_s: f64,
    /// The seed grid, each condition run alone, seconds.
    pub grid_sequential_s: f64,
    /// The seed grid, all conditions batched, seconds.
    pub grid_batched_s: f64,
    /// sequential / batched.
    pub grid_speedup: f64,
    /// The batched seed grid's scoring phase (reusing generation), seconds.
    #[serde(default)]
    pub grid_score_s: f64,
    /// The same scores measured from scratch (every token teacher-forced from restored
    /// starting caches, as kvlab scored before reusing generation), seconds.
    #[serde(default)]
    pub grid_score_scratch_s: f64,
    /// scratch / reused.
    #[serde(default)]
    pub grid_score_speedup: f64,
    /// The largest difference between a reused and a from-scratch score (0 on the CPU).
    #[serde(default)]
    pub grid_score_max_difference: f64,
    /// Tokens the batched seed grid's scoring evaluated (what generation had not given).
    #[serde(default)]
    pub grid_score_tokens: usize,
    /// Tokens scoring from scratch evaluated (every token of every scored continuation).
    #[serde(default)]
    pub grid_score_scratch_tokens: usize,
    /// kvlab's generation loop (logprobs, top-k, probes) per step against a bare argmax loop on
    /// the same sequences, as a fraction (0.03 = 3 % slower).
    pub generation_loop_overhead: f64,
    /// One intervention (state read, parse, zero in all layers, write back), seconds.
    pub intervention_s: f64,
    /// One decode step of one token, seconds.
    pub decode_step_s: f64,
    /// intervention / decode step.
    pub intervention_per_decode_step: f64,
    /// Position sweep: positions measured per second.
    pub sweep_positions_per_s: f64,
    /// The same positions as greedy-generation grid conditions: positions per second.
    pub grid_positions_per_s: f64,
    /// sweep / grid, per position.
    pub sweep_speedup: f64,
    /// A large session (10 conditions × 1000 tokens, top-10 per step): save, seconds.
    pub large_session_save_s: f64,
    /// The same session: open (read, validate, parse), seconds.
    pub large_session_load_s: f64,
    /// Its size, MiB.
    pub large_session_mib: f64,
    /// The app showing it: the first frame (layout and tessellation, no GPU), ms.
    pub large_session_first_frame_ms: f64,
    /// The slowest of the next 9 frames, ms.
    pub large_session_frame_ms: f64,
    /// A dataset's items run batched in waves: items per second.
    pub dataset_items_per_s: f64,
    /// The same items, one grid each: items per second.
    pub dataset_separate_items_per_s: f64,
    /// batched / separate, per item.
    pub dataset_speedup: f64,
    /// Items in the dataset measured.
    pub dataset_items: usize,
    /// A dataset of every ordered pair of a few needles, batched: items per second (a needle's
    /// items share the runs that do not name their partner).
    #[serde(default)]
    pub all_pairs_items_per_s: f64,
    /// The same items, one grid each: items per second.
    #[serde(default)]
    pub all_pairs_separate_items_per_s: f64,
    /// batched / separate, per item.
    #[serde(default)]
    pub all_pairs_speedup: f64,
    /// Items in the all-pairs dataset.
    #[serde(default)]
    pub all_pairs_items: usize,
    /// The seed grid without attention capture (fastest of the repeats), seconds.
    #[serde(default)]
    pub attention_plain_s: f64,
    /// The seed grid in a capturing lab that captures nothing, seconds.
    #[serde(default)]
    pub attention_idle_s: f64,
    /// The seed grid capturing attention, seconds.
    #[serde(default)]
    pub attention_capture_s: f64,
    /// capture / plain: what `--attention` costs (target: at most 1.5).
    #[serde(default)]
    pub attention_ratio: f64,
    /// The seed grid's prompt phase, seconds.
    #[serde(default)]
    pub grid_prompt_s: f64,
    /// The same prompts by a bare llama.cpp loop, seconds.
    #[serde(default)]
    pub bare_prompt_s: f64,
    /// The seed grid's generation phase, seconds.
    #[serde(default)]
    pub grid_generate_s: f64,
    /// The same rows and tokens by a bare argmax loop, seconds.
    #[serde(default)]
    pub bare_generate_s: f64,
    /// Peak resident memory of the process, MiB (Linux).
    pub peak_memory_mib: Option<f64>,
}

/// A session of `n_cond` conditions × `n_tokens` steps built from a real run's steps.
fn large_session(
    base: &crate::experiment::RunResults,
    n_cond: usize,
    n_tokens: usize,
) -> crate::session::Session {
    let mut r = base.clone();
    let grow = |g: &mut crate::experiment::results::Generation| {
        let steps = g.steps.clone();
        g.steps = steps.iter().cycle().take(n_tokens).cloned().collect();
        g.tokens = g.steps.iter().map(|s| s.token.id).collect();
        g.text = g.steps.iter().map(|s| s.token.piece.as_str()).collect();
    };
    for v in &mut r.variants {
        grow(&mut v.baseline);
    }
    let template = r.conditions[0].clone();
    r.conditions = (0..n_cond)
        .map(|i| {
            let mut c = template.clone();
            c.label = format!("condition {i}");
            grow(&mut c.generation);
            c
        })
        .collect();
    // Sessions are validated when read: the spec and the settings match the results.
    let spec_template = r.spec.conditions[0].clone();
    r.spec.conditions = (0..n_cond)
        .map(|i| crate::experiment::Condition {
            label: Some(format!("condition {i}")),
            ..spec_template.clone()
        })
        .collect();
    r.settings.n_seq = (r.variants.len() + n_cond) as u32;
    let mut s = crate::session::Session::new(r.spec.clone());
    s.results = Some(r);
    s
}

/// Saves, opens and shows a large session; returns (save s, load s, MiB, first frame ms,
/// slowest later frame ms).
fn large_session_figures(
    base: &crate::experiment::RunResults,
) -> Result<(f64, f64, f64, f64, f64), RunError> {
    let mut s = large_session(base, 10, 1000);
    let dir = std::env::temp_dir().join(format!("kvlab-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("large.kvlab");
    let t0 = Instant::now();
    let saved = s.save(&path);
    let save_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let loaded = crate::session::Session::load(&path);
    let load_s = t0.elapsed().as_secs_f64();
    let mib = std::fs::metadata(&path)
        .map(|m| m.len() as f64 / (1 << 20) as f64)
        .unwrap_or(0.0);
    let _ = std::fs::remove_dir_all(&dir);
    let (Ok(()), Ok(loaded)) = (saved, loaded) else {
        return Err(crate::experiment::spec::SpecError::Generation(
            "the large session could not be saved and read back".into(),
        )
        .into());
    };
    let ctx = egui::Context::default();
    let mut app = crate::ui::KvlabApp::new(&ctx, crate::ui::Prefs::default());
    app.replace_document(crate::ui::Document::from_session(loaded, None), true);
    let mut slowest = 0f64;
    let mut first = 0f64;
    for frame in 0..10 {
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(1400.0, 900.0),
            )),
            time: Some(frame as f64 / 60.0),
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut out = ctx.run_ui(input, |ui| app.show(ui));
        let _ = ctx.tessellate(std::mem::take(&mut out.shapes), out.pixels_per_point);
        // No GPU here to upload the font atlas to.
        out.textures_delta.clear();
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if frame == 0 {
            first = ms;
        } else {
            slowest = slowest.max(ms);
        }
    }
    Ok((save_s, load_s, mib, first, slowest))
}

fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn lab(model: &LoadedModel, n_seq: u32, threads: i32) -> Result<Lab<'_>, RunError> {
    Ok(Lab::new(
        model,
        LabOptions {
            n_seq,
            n_ctx_per_seq: 512,
            threads,
            n_batch: 512,
            cache: Default::default(),
        },
    )?)
}

/// Greedy decoding of `steps` tokens on `n` copies of the prompt with a bare argmax loop;
/// returns seconds.
fn bare_decode(
    model: &LoadedModel,
    prompt: &[i32],
    n: usize,
    steps: usize,
    threads: i32,
) -> Result<f64, RunError> {
    let mut lab = lab(model, n as u32, threads)?;
    let mut items = Vec::new();
    for s in 0..n {
        for (pos, &t) in prompt[..prompt.len() - 1].iter().enumerate() {
            items.push(BatchItem {
                seq: s as i32,
                token: t,
                pos: pos as i32,
                logits: false,
            });
        }
    }
    lab.eval(&items, |_, _| {})?;
    let mut next = vec![*prompt.last().expect("prompt"); n];
    let t0 = Instant::now();
    for pos in ((prompt.len() - 1) as i32..).take(steps) {
        let items: Vec<BatchItem> = (0..n)
            .map(|s| BatchItem {
                seq: s as i32,
                token: next[s],
                pos,
                logits: true,
            })
            .collect();
        lab.eval(&items, |k, logits| next[k] = argmax(logits) as i32)?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Runs the benchmark on the seed experiment. `quick`: a short version for CI.
pub fn run(
    model: &LoadedModel,
    quick: bool,
    threads: i32,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport, RunError> {
    let options = RunOptions {
        threads,
        ..RunOptions::default()
    };
    let mut spec = ExperimentSpec::seed();
    let tokens = if quick { 4 } else { 48 };
    spec.generation.max_tokens = tokens;
    let prepared = prepare_prompts(model, &spec)?;
    let prompt: Vec<i32> = prepared.prompts[0].tokens.iter().map(|t| t.id).collect();

    progress("raw decode");
    let steps = if quick { 8 } else { 64 };
    let raw_s = bare_decode(model, &prompt, 1, steps, threads)?;

    progress("generation loop overhead");
    let mut base_spec = spec.clone();
    base_spec.conditions.clear();
    base_spec.generation.max_tokens = steps;
    let loop_run = runner::run(model, &base_spec, &options, |_| {})?;
    let bare_two = bare_decode(model, &prompt, 2, steps, threads)?;
    let overhead = loop_run.timings.generate_s / bare_two - 1.0;

    progress("seed grid, batched");
    let t0 = Instant::now();
    let grid_run = runner::run(model, &spec, &options, |_| {})?;
    let batched = t0.elapsed().as_secs_f64();
    progress("seed grid phases vs bare loops");
    let phases = phases::grid_vs_bare(model, &spec, &grid_run, threads)?;
    progress("seed grid scores from scratch");
    let scratch = runner::score_teacher_forced(model, &grid_run, &options)?;
    let score_difference = max_score_difference(&grid_run, &scratch);
    progress("seed grid, one condition at a time");
    let t0 = Instant::now();
    for c in &spec.conditions {
        let mut one = spec.clone();
        one.conditions = vec![c.clone()];
        runner::run(model, &one, &options, |_| {})?;
    }
    let sequential = t0.elapsed().as_secs_f64();

    progress("one intervention vs one decode step");
    let (intervention, step) = intervention_vs_step(model, &prompt, prepared.span, quick, threads)?;

    progress("position sweep vs greedy conditions");
    let n_pos = if quick { 3 } else { 16 };
    let (sweep_s, swept_points, grid_s) = sweep_vs_grid(model, &spec, &options, n_pos)?;

    progress("dataset batched vs one grid per item");
    let (listed, all_pairs) = dataset::dataset_vs_grids(model, &options, quick)?;

    progress("seed grid with and without attention capture");
    let [att_plain, att_idle, att_capture] =
        attention::capture_vs_plain(model, &spec, &options, if quick { 1 } else { 3 })?;

    progress("large session: save, open, show");
    let (large_save, large_load, large_mib, large_first, large_frame) =
        large_session_figures(&grid_run)?;

    Ok(BenchReport {
        quick,
        threads,
        raw_decode_tokens_per_s: steps as f64 / raw_s,
        grid_sequential_s: sequential,
        grid_batched_s: batched,
        grid_speedup: sequential / batched,
        grid_score_s: grid_run.timings.score_s,
        grid_score_scratch_s: scratch.score_s,
        grid_score_speedup: scratch.score_s / grid_run.timings.score_s,
        grid_score_max_difference: score_difference,
        grid_score_tokens: grid_run.timings.score_tokens,
        grid_score_scratch_tokens: scratch.tokens,
        generation_loop_overhead: overhead,
        intervention_s: intervention,
        decode_step_s: step,
        intervention_per_decode_step: intervention / step,
        sweep_positions_per_s: swept_points as f64 / sweep_s,
        grid_positions_per_s: n_pos as f64 / grid_s,
        sweep_speedup: grid_s / sweep_s,
        large_session_save_s: large_save,
        large_session_load_s: large_load,
        large_session_mib: large_mib,
        large_session_first_frame_ms: large_first,
        large_session_frame_ms: large_frame,
        dataset_items_per_s: listed.batched,
        dataset_separate_items_per_s: listed.separate,
        dataset_speedup: listed.batched / listed.separate,
        dataset_items: listed.items,
        all_pairs_items_per_s: all_pairs.batched,
        all_pairs_separate_items_per_s: all_pairs.separate,
        all_pairs_speedup: all_pairs.batched / all_pairs.separate,
        all_pairs_items: all_pairs.items,
        attention_plain_s: att_plain,
        attention_idle_s: att_idle,
        attention_capture_s: att_capture,
        attention_ratio: att_capture / att_plain,
        grid_prompt_s: phases.prompt_s,
        bare_prompt_s: phases.bare_prompt_s,
        grid_generate_s: phases.generate_s,
        bare_generate_s: phases.bare_generate_s,
        peak_memory_mib: peak_memory_mib(),
    })
}

/// The largest difference between a run's scores and the same scores from scratch.
fn max_score_difference(
    run: &crate::experiment::RunResults,
    scratch: &runner::TeacherForced,
) -> f64 {
    let mut max = 0.0f64;
    for (i, c) in run.conditions.iter().enumerate() {
        for (a, b) in c.scores.iter().zip(&scratch.scores[i]) {
            max = max.max((a.sum - b.sum).abs());
        }
        for (a, b) in c.expected.iter().zip(&scratch.expected[i]) {
            max = max.max((a.sum - b.sum).abs());
        }
    }
    max
}

/// Seconds for one intervention (state read, zero the needle in every layer, write back) and
/// for one single-token decode step, on the same lab.
fn intervention_vs_step(
    model: &LoadedModel,
    prompt: &[i32],
    needle: Span,
    quick: bool,
    threads: i32,
) -> Result<(f64, f64), RunError> {
    let mut l = lab(model, 2, threads)?;
    l.eval(
        &BatchItem::run(0, 0, &prompt[..prompt.len() - 1]),
        |_, _| {},
    )?;
    let reps = if quick { 3 } else { 20 };
    let t0 = Instant::now();
    for _ in 0..reps {
        let mut st = l.state(0)?;
        for cell in st.cells_at(needle.start as i32) {
            for layer in 0..st.n_layer() {
                st.zero_cell(layer, cell, KvPart::Both)
                    .map_err(crate::engine::EngineError::from)?;
            }
        }
        l.set_state(1, &st)?;
    }
    let intervention = t0.elapsed().as_secs_f64() / reps as f64;
    let mut tok = *prompt.last().expect("prompt");
    let t0 = Instant::now();
    for pos in ((prompt.len() - 1) as i32..).take(reps) {
        let item = [BatchItem {
            seq: 1,
            token: tok,
            pos,
            logits: true,
        }];
        l.eval(&item, |_, logits| tok = argmax(logits) as i32)?;
    }
    let step = t0.elapsed().as_secs_f64() / reps as f64;

    Ok((intervention, step))
}

/// A position sweep over `n_pos` positions against the same items run as grid conditions:
/// (sweep seconds, points measured, grid seconds).
fn sweep_vs_grid(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    options: &RunOptions,
    n_pos: usize,
) -> Result<(f64, usize, f64), RunError> {
    let sweep = SweepSpec {
        kind: SweepKind::Position {
            range: Some(Span {
                start: 1,
                end: 1 + n_pos,
            }),
        },
        variant: "SF".into(),
        op: Op::Zero,
        layers: LayerSet::All,
        part: KvPart::Both,
    };
    let t0 = Instant::now();
    let swept = runner::run_sweep(model, spec, &sweep, options, |_| {})?;
    let sweep_s = t0.elapsed().as_secs_f64();
    let mut grid_spec = ExperimentSpec::seed();
    grid_spec.conditions = (1..1 + n_pos)
        .map(|p| Condition::new("SF", Op::Zero).at(Site::position(p)))
        .collect();
    let t0 = Instant::now();
    runner::run(model, &grid_spec, options, |_| {})?;
    let grid_s = t0.elapsed().as_secs_f64();

    Ok((sweep_s, swept.points.len(), grid_s))
}

/// The report as a table for terminals.
pub fn to_table(r: &BenchReport) -> String {
    format!(
        "raw decode (1 sequence)          {:>9.1} tokens/s\n\
         seed grid, batched               {:>9.2} s\n\
         seed grid, one at a time         {:>9.2} s   → batched is {:.1}× faster\n\
         seed grid scoring                {:>9.2} s   (from scratch {:.2} s → {:.1}× faster; max difference {:.1e})\n\
         \x20 tokens evaluated               {:>9}     (from scratch {})\n\
         \x20 prompt phase                   {:>9.2} s   (bare loop {:.2} s → {:+.1} %)\n\
         \x20 generation phase               {:>9.2} s   (bare argmax loop {:.2} s → {:+.1} %)\n\
         generation loop vs bare argmax   {:>+8.1} %\n\
         one intervention                 {:>9.2} ms  = {:.2} decode steps ({:.2} ms each)\n\
         position sweep                   {:>9.2} positions/s\n\
         same positions as grid cells     {:>9.2} positions/s → sweep is {:.1}× faster\n\
         large session (10 × 1000 tokens) {:>9.2} s save, {:.2} s open, {:.1} MiB\n\
         \x20 shown in the app               {:>9.1} ms first frame, then at most {:.1} ms\n\
         {:<33}{:>9.2} items/s batched\n\
         same items, one grid each        {:>9.2} items/s → batched is {:.1}× faster\n\
         {:<33}{:>9.2} items/s batched\n\
         same items, one grid each        {:>9.2} items/s → batched is {:.1}× faster\n\
         seed grid, attention captured    {:>9.2} s   = {:.2}× without ({:.2} s; capture lab idle {:.2} s)\n\
         peak memory                      {}\n\
         ({} mode, {} threads)",
        r.raw_decode_tokens_per_s,
        r.grid_batched_s,
        r.grid_sequential_s,
        r.grid_speedup,
        r.grid_score_s,
        r.grid_score_scratch_s,
        r.grid_score_speedup,
        r.grid_score_max_difference,
        r.grid_score_tokens,
        r.grid_score_scratch_tokens,
        r.grid_prompt_s,
        r.bare_prompt_s,
        (r.grid_prompt_s / r.bare_prompt_s.max(1e-12) - 1.0) * 100.0,
        r.grid_generate_s,
        r.bare_generate_s,
        (r.grid_generate_s / r.bare_generate_s.max(1e-12) - 1.0) * 100.0,
        r.generation_loop_overhead * 100.0,
        r.intervention_s * 1000.0,
        r.intervention_per_decode_step,
        r.decode_step_s * 1000.0,
        r.sweep_positions_per_s,
        r.grid_positions_per_s,
        r.sweep_speedup,
        r.large_session_save_s,
        r.large_session_load_s,
        r.large_session_mib,
        r.large_session_first_frame_ms,
        r.large_session_frame_ms,
        format!("dataset, {} listed pairs", r.dataset_items),
        r.dataset_items_per_s,
        r.dataset_separate_items_per_s,
        r.dataset_speedup,
        format!("dataset, {} items of all pairs", r.all_pairs_items),
        r.all_pairs_items_per_s,
        r.all_pairs_separate_items_per_s,
        r.all_pairs_speedup,
        r.attention_capture_s,
        r.attention_ratio,
        r.attention_plain_s,
        r.attention_idle_s,
        r.peak_memory_mib
            .map_or("n/a".into(), |m| format!("{m:>9.0} MiB")),
        if r.quick { "quick" } else { "full" },
        r.threads
    )
}
