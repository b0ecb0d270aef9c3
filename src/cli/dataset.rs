//! `kvlab run` and `kvlab verify` for datasets: waves of grids run with progress and a time
//! left, the aggregate table printed, the full results written and saved as asked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};

use super::args::Format;
use super::checks::load;
use crate::engine::LoadedModel;
use crate::experiment::ExperimentSpec;
use crate::experiment::compare::{differences, value_differences};
use crate::experiment::dataset::{self, DatasetResults};
use crate::runner::{self, DatasetOptions, RunEvent, RunOptions};
use crate::session::{Fault, ModelRef, Session, write_atomic};

/// Where a dataset run's results go.
pub(super) struct Outputs {
    /// Full results (JSON).
    pub out: Option<PathBuf>,
    /// A session file.
    pub session: Option<PathBuf>,
    /// How the aggregates are printed.
    pub format: Format,
}

/// Runs a dataset with progress on standard error, then writes and prints its results.
pub(super) fn run(
    spec: &ExperimentSpec,
    model: &Path,
    threads: i32,
    outputs: Outputs,
    gpu_layers: Option<u32>,
) -> Result<()> {
    let model = load(model, gpu_layers)?;
    let options = DatasetOptions {
        run: RunOptions {
            threads,
            ..RunOptions::default()
        },
        ..DatasetOptions::default()
    };
    let results = run_with_progress(&model, spec, &options)?;
    note!(
        "done: {} of {} items in {:.1}s ({:.2} items/s)",
        results.finished_items(),
        results.items.len(),
        results.seconds,
        results.finished_items() as f64 / results.seconds.max(1e-9)
    );
    if let Some(out) = &outputs.out {
        let json = serde_json::to_string_pretty(&results)?;
        write_atomic(out, json.as_bytes(), Fault::None)?;
        note!("results written to {}", out.display());
    }
    if let Some(path) = &outputs.session {
        let mut s = Session::new(spec.clone());
        s.model = Some(ModelRef {
            path: model.path().to_path_buf(),
            fingerprint: model.fingerprint().clone(),
            info: model.info().clone(),
        });
        s.dataset = Some(results.clone());
        s.save(path)?;
        note!("session saved to {}", path.display());
    }
    let printed = match outputs.format {
        Format::Table => dataset::to_table(&results),
        Format::Markdown => dataset::to_markdown(&results),
        Format::Json => serde_json::to_string_pretty(&dataset::aggregates(&results))?,
        Format::Csv => dataset::to_csv(&results),
    };
    say!("{}", printed.trim_end());
    Ok(())
}

/// Runs the dataset, showing "k/N items, about Ts left" and each wave's stage.
fn run_with_progress(
    model: &LoadedModel,
    spec: &ExperimentSpec,
    options: &DatasetOptions,
) -> Result<DatasetResults> {
    let started = Instant::now();
    let results = runner::run_dataset(model, spec, options, |e| match e {
        RunEvent::Stage(s) => note!("{s} …"),
        RunEvent::Progress { done, total } => {
            let el = started.elapsed().as_secs_f64();
            let left = if done == 0 {
                String::new()
            } else {
                let eta = el / done as f64 * (total - done) as f64;
                format!(", about {eta:.0}s left")
            };
            note!("{done}/{total} items{left}");
        }
        _ => {}
    })?;
    Ok(results)
}

/// Re-runs a session's dataset with the same wave size and compares every wave's grid with its
/// saved one (timings excluded).
pub(super) fn verify(
    path: &Path,
    saved: &DatasetResults,
    model: &LoadedModel,
    threads: i32,
) -> Result<()> {
    let options = DatasetOptions {
        run: RunOptions {
            threads,
            ..RunOptions::default()
        },
        max_sequences: saved.max_sequences,
    };
    let fresh = run_with_progress(model, &saved.spec, &options)?;
    let mut found = Vec::new();
    if fresh.waves.len() < saved.waves.len() {
        found.push(format!(
            "the re-run finished {} waves, the session {}",
            fresh.waves.len(),
            saved.waves.len()
        ));
    }
    let same_waves = (saved.waves.iter().zip(&fresh.waves)).all(|(a, b)| a.items == b.items);
    if same_waves {
        for (i, (a, b)) in saved.waves.iter().zip(&fresh.waves).enumerate() {
            found.extend(
                differences(&a.results, &b.results)
                    .into_iter()
                    .map(|d| format!("wave {i}: {d}")),
            );
        }
    } else {
        // Written by a kvlab that packed waves otherwise (before cells shared runs): an item's
        // cells do not depend on their wave, so compare those.
        note!("the re-run packs items into other waves than the session: comparing item by item");
        for wave in &saved.waves {
            for &item in &wave.items {
                match (saved.item_cells(item), fresh.item_cells(item)) {
                    (Some(a), Some(b)) => found.extend(
                        value_differences(&a, &b)
                            .into_iter()
                            .map(|d| format!("item {item}: {d}")),
                    ),
                    _ => found.push(format!("item {item} was not re-run")),
                }
            }
        }
    }
    if found.is_empty() {
        say!(
            "verified: re-running {} reproduces its {} dataset items exactly",
            path.display(),
            saved.finished_items()
        );
        return Ok(());
    }
    for d in found.iter().take(20) {
        say!("differs: {d}");
    }
    bail!(
        "{} differences between the saved and the re-run results",
        found.len()
    )
}
