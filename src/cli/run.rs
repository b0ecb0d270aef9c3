//! The commands that run experiments: `run`, `sweep` and `verify`. Outputs are checked before
//! the model loads and written atomically, so finished work is never lost to a late error.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::args::{Format, RunArgs, SweepArgs, SweepOver};
use super::checks::{check_fits, check_output, load, read_spec, threads_arg};
use crate::engine::LoadedModel;
use crate::experiment::results::check_threads;
use crate::experiment::spec::KvPart;
use crate::experiment::sweep::{SweepKind, SweepOp, SweepSpec};
use crate::experiment::{ExperimentSpec, LayerSet, RunResults, grid};
use crate::runner::{self, RunEvent, RunOptions};
use crate::session::{Fault, ModelRef, Session, write_atomic};

/// `kvlab run`: runs the grid, prints it, and writes results and a session when asked.
pub(super) fn run(args: RunArgs, gpu_layers: Option<u32>) -> Result<()> {
    let RunArgs {
        spec,
        model,
        out,
        format,
        threads,
        delta_layer,
        session,
        attention,
        cache,
    } = args;
    let mut spec = read_spec(&spec)?;
    cache.apply(&mut spec);
    let threads = threads_arg(threads)?;
    if let Some(out) = &out {
        check_output(out, "--out")?;
    }
    if let Some(path) = &session {
        check_output(path, "--session")?;
    }
    if spec.dataset.is_some() {
        if delta_layer.is_some() {
            bail!("--delta-layer is for grids: a dataset records no K/V differences");
        }
        if attention {
            bail!("--attention is for grids: a dataset records no attention");
        }
        let outputs = super::dataset::Outputs {
            out,
            session,
            format,
        };
        return super::dataset::run(&spec, &model, threads, outputs, gpu_layers);
    }
    if format == Format::Csv {
        bail!("--format csv is for datasets; for a grid's per-step CSV use `kvlab report --csv`");
    }
    let model = load(&model, gpu_layers)?;
    check_fits(&spec, &model)?;
    let n_layer = model.info().n_layer as usize;
    if let Some(l) = delta_layer
        && l >= n_layer
    {
        bail!(
            "--delta-layer {l} is out of range: the model has layers 0 to {}",
            n_layer.saturating_sub(1)
        );
    }
    let options = RunOptions {
        threads,
        delta_layer,
        attention: if attention {
            runner::AttentionMode::Capture
        } else {
            runner::AttentionMode::Off
        },
        ..RunOptions::default()
    };
    // Prompt evaluation reports progress only when it spans several llama.cpp batches (a long
    // prompt): shown on one line, ended when the next stage starts.
    let (mut stage, mut counted) = (String::new(), false);
    let results = runner::run(&model, &spec, &options, |e| match e {
        RunEvent::Stage(s) => {
            if std::mem::take(&mut counted) {
                note!();
            }
            note!("{s} …");
            stage = s;
        }
        RunEvent::Progress { done, total } if stage == runner::EVALUATING_PROMPTS => {
            counted = true;
            note_inline!("\r  {done}/{total} prompt tokens   ");
        }
        _ => {}
    })?;
    for w in &results.warnings {
        note!("warning: {w}");
    }
    note!(
        "done: {:.1} tokens/s generating, {:.2}s scoring",
        results.timings.tokens_per_s,
        results.timings.score_s
    );
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(out) = &out {
        write_atomic(out, json.as_bytes(), Fault::None)?;
        note!("results written to {}", out.display());
    }
    if let Some(path) = &session {
        save_session(path, &spec, &model, &results)?;
    }
    let printed = match format {
        Format::Table => grid::to_table(&results, std::io::stdout().is_terminal()),
        Format::Markdown => grid::to_markdown(&results),
        Format::Json | Format::Csv => json,
    };
    say!("{printed}");
    Ok(())
}

/// Saves the experiment, the model reference and the results as a session file.
pub(super) fn save_session(
    path: &Path,
    spec: &ExperimentSpec,
    model: &LoadedModel,
    results: &RunResults,
) -> Result<()> {
    let mut s = Session::new(spec.clone());
    s.model = Some(ModelRef {
        path: model.path().to_path_buf(),
        fingerprint: model.fingerprint().clone(),
        info: model.info().clone(),
    });
    s.results = Some(results.clone());
    s.save(path)?;
    note!("session saved to {}", path.display());
    Ok(())
}

/// `kvlab sweep`: one intervention per item, each item's effect printed as a bar.
pub(super) fn sweep(args: SweepArgs, gpu_layers: Option<u32>) -> Result<()> {
    let SweepArgs {
        spec,
        model,
        over,
        variant,
        op,
        remove,
        from,
        layers,
        max_extra,
        caches,
        out,
        threads,
        cache,
    } = args;
    let mut spec = read_spec(&spec)?;
    cache.apply(&mut spec);
    let threads = threads_arg(threads)?;
    if let Some(out) = &out {
        check_output(out, "--out")?;
    }
    let layers = LayerSet::parse(&layers)?;
    if let Some(v) = &variant
        && spec.variant_index(v).is_none()
    {
        bail!("--variant {v:?}: the experiment has no variant of that name");
    }
    let variant = variant.unwrap_or_else(|| spec.variants[0].name.clone());
    let kind: SweepOp = if remove { SweepOp::Remove } else { op.into() };
    if from.is_some() && kind != SweepOp::Transplant {
        bail!("--from names the donor of a transplant sweep (--op transplant)");
    }
    let op = kind
        .op(&spec, &variant, from.as_deref())
        .map_err(|e| anyhow::anyhow!("--op {}: {e}", kind.label()))?;
    let model = load(&model, gpu_layers)?;
    check_fits(&spec, &model)?;
    let sweep = SweepSpec {
        kind: match over {
            SweepOver::Position => SweepKind::Position { range: None },
            SweepOver::Span => SweepKind::Span { max_extra },
            SweepOver::Layer => SweepKind::Layer,
            SweepOver::PositionLayer => SweepKind::PositionLayer { range: None },
        },
        variant,
        op,
        layers,
        part: KvPart::Both,
    };
    let options = RunOptions {
        threads,
        sweep_caches: caches.into(),
        ..RunOptions::default()
    };
    let started = std::time::Instant::now();
    let r = runner::run_sweep(&model, &spec, &sweep, &options, |e| match e {
        RunEvent::Stage(s) => note!("{s} …"),
        RunEvent::Progress { done, total } => {
            let el = started.elapsed().as_secs_f64();
            let eta = el / done.max(1) as f64 * (total - done) as f64;
            note_inline!("\r{done}/{total} items, about {eta:.0}s left   ");
        }
        _ => {}
    })?;
    note!();
    let vi = spec.variant_index(&sweep.variant).unwrap_or(0);
    say!("{}", crate::experiment::sweep::to_table(&r, vi));
    if let Some(out) = out {
        write_atomic(
            &out,
            serde_json::to_string_pretty(&r)?.as_bytes(),
            Fault::None,
        )?;
        note!("sweep written to {}", out.display());
    }
    Ok(())
}

/// Re-runs a session and compares everything but timings with its saved results.
pub(super) fn verify(
    path: &Path,
    model: Option<PathBuf>,
    threads: Option<i32>,
    gpu_layers: Option<u32>,
) -> Result<()> {
    let s = Session::load(path)?;
    // A dataset is verified wave by wave; its first wave's grid carries the run's settings.
    let grid = match (&s.results, &s.dataset) {
        (Some(r), _) => r,
        (None, Some(d)) => match d.waves.first() {
            Some(w) => &w.results,
            None => bail!("{} has no finished dataset items to verify", path.display()),
        },
        (None, None) => bail!("{} has no results to verify", path.display()),
    };
    // Threads are a run setting, not a result: --threads wins; the recorded count is used
    // when this machine can run it.
    let threads = match threads {
        Some(_) => threads_arg(threads)?,
        None => match check_threads(grid.settings.threads as i64, "the session") {
            Ok(t) => t,
            Err(e) => {
                let t = runner::default_threads();
                note!("note: {e}; verifying with {t}");
                t
            }
        },
    };
    let model_path = model
        .or_else(|| s.model.as_ref().map(|m| m.path.clone()))
        .with_context(|| "the session names no model: pass --model")?;
    let m = load(&model_path, gpu_layers)?;
    check_fits(&grid.spec, &m)?;
    if m.fingerprint() != &grid.model {
        bail!(
            "{} is not the model these results came from ({} {} bytes, expected {} {} bytes): results are never compared across models",
            model_path.display(),
            m.fingerprint().file_name,
            m.fingerprint().file_size,
            grid.model.file_name,
            grid.model.file_size
        );
    }
    let Some(saved) = &s.results else {
        let d = s.dataset.as_ref().expect("checked above");
        return super::dataset::verify(path, d, &m, threads);
    };
    let options = RunOptions {
        threads,
        delta_layer: saved
            .kv_delta
            .as_ref()
            .and_then(|d| d.layer_rows.as_ref().map(|l| l.layer)),
        n_batch: saved.settings.n_batch,
        attention: if saved.settings.attention {
            runner::AttentionMode::Capture
        } else {
            runner::AttentionMode::Off
        },
        ..RunOptions::default()
    };
    let fresh = runner::run(&m, &saved.spec, &options, |_| {})?;
    let differences = crate::experiment::compare::differences(saved, &fresh);
    if differences.is_empty() {
        say!(
            "verified: re-running {} reproduces its results exactly",
            path.display()
        );
        Ok(())
    } else {
        for d in differences.iter().take(20) {
            say!("differs: {d}");
        }
        bail!(
            "{} differences between the saved and the re-run results",
            differences.len()
        )
    }
}
