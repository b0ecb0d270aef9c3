//! Checks made before any work starts (an option that would fail only after a long run is
//! refused up front), and loading the model with a note on standard error.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::engine::{LoadOptions, LoadedModel};
use crate::experiment::ExperimentSpec;
use crate::experiment::results::check_threads;
use crate::runner;

/// Reads an experiment file, naming the file in any error: a regular file of bounded size.
pub(super) fn read_spec(path: &Path) -> Result<ExperimentSpec> {
    ExperimentSpec::from_file(path).map_err(anyhow::Error::msg)
}

/// A thread count from the command line, checked; `None`: the default.
pub(super) fn threads_arg(threads: Option<i32>) -> Result<i32> {
    match threads {
        Some(t) => Ok(check_threads(t as i64, "--threads").map_err(anyhow::Error::msg)?),
        None => Ok(runner::default_threads()),
    }
}

/// Checks, before any work, that a file can be written where `option` says: not a folder or a
/// device, in a folder that exists and takes new files. Finished work is never lost to a late
/// "cannot write".
pub(super) fn check_output(path: &Path, option: &str) -> Result<()> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) => {
            if let Some(kind) = crate::gguf::not_a_regular_file(&m) {
                bail!("{option} {shown} is {kind}: give a file name");
            }
            if m.permissions().readonly() {
                bail!("{option} {shown} is read-only");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("{option} {shown}: {e}"),
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "{option} {shown}: the folder {} does not exist",
            dir.display()
        );
    }
    // A file created and removed at once: the folder takes new files.
    let probe = dir.join(format!(".kvlab-write-check.{}", std::process::id()));
    std::fs::File::create(&probe)
        .with_context(|| format!("{option} {shown}: cannot create files in {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Checks a spec against the loaded model before a run allocates anything.
pub(super) fn check_fits(spec: &ExperimentSpec, model: &LoadedModel) -> Result<()> {
    runner::fits::check(model, spec)?;
    // About four characters a token: long prompts take minutes on a CPU, say so up front.
    let chars: usize = spec.prompt.turns.iter().map(|t| t.content.len()).sum();
    if chars / 4 > LONG_PROMPT_TOKENS {
        note!(
            "warning: the prompt is about {} tokens long; evaluating it for {} variants may take minutes",
            chars / 4,
            spec.variants.len()
        );
    }
    Ok(())
}

/// Prompts longer than this (estimated) get a warning before a run.
const LONG_PROMPT_TOKENS: usize = 4096;

pub(super) fn load(path: &Path, n_gpu_layers: Option<u32>) -> Result<LoadedModel> {
    note!("loading {} …", path.display());
    Ok(LoadedModel::load(
        path,
        &LoadOptions { n_gpu_layers },
        None,
        |_| {},
    )?)
}
