//! The command line: `kvlab run`, `kvlab inspect`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::engine::{self, LoadOptions, LoadedModel};
use crate::experiment::results::check_threads;
use crate::experiment::spec::KvPart;
use crate::experiment::sweep::{SweepKind, SweepSpec};
use crate::experiment::{ExperimentSpec, Intervention, LayerSet, grid};
use crate::runner::{self, RunEvent, RunOptions};
use crate::session::{ModelRef, Session, report};

/// Prints a line on standard output; a closed pipe or a full disk becomes an error (exit code 1)
/// instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)
            .context("cannot write to standard output")?
    };
}

/// Prints a line of progress on standard error; if stderr is gone the note is dropped (never a
/// panic).
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Like [`note!`], without the newline.
macro_rules! note_inline {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// kvlab: KV-cache surgery on local LLMs.
#[derive(Debug, Parser)]
#[command(name = "kvlab", version = version_line(), about, long_about = None)]
pub struct Cli {
    /// More log output (-v: llama.cpp warnings, -vv: everything). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// A GGUF model, an experiment (.json) or a session (.kvlab) to open in the app.
    pub open: Option<PathBuf>,
    /// With the app: run the experiment as soon as the model is loaded.
    #[arg(long)]
    pub run: bool,
    /// Layers to offload to the GPU (default: all, where the build has a GPU backend and a GPU
    /// is present; 0 keeps the model and its KV cache in host memory).
    #[arg(long, global = true, env = "KVLAB_GPU_LAYERS")]
    pub gpu_layers: Option<u32>,
    /// What to do; without a subcommand the desktop app opens.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment and print the outcome grid.
    Run {
        /// The experiment (JSON), e.g. assets/experiments/seed-short.json.
        spec: PathBuf,
        /// The GGUF model file.
        #[arg(long, short, env = "KVLAB_MODEL")]
        model: PathBuf,
        /// Write the full results (JSON) here.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// How to print the grid.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// CPU threads for llama.cpp.
        #[arg(long)]
        threads: Option<i32>,
        /// Also record one layer's full K/V difference rows between the first two variants.
        #[arg(long)]
        delta_layer: Option<usize>,
        /// Also save a session file (.kvlab) with the experiment, the model and the results.
        #[arg(long)]
        session: Option<PathBuf>,
    },
    /// Write a shareable report of a session: self-contained HTML, Markdown, or CSV.
    Report {
        /// The session file (.kvlab).
        session: PathBuf,
        /// Write an HTML report here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Write a Markdown report here.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Write per-step probabilities as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Re-run a session's experiment and report any difference from its saved results.
    Verify {
        /// The session file (.kvlab).
        session: PathBuf,
        /// The model (default: the path recorded in the session).
        #[arg(long, short)]
        model: Option<PathBuf>,
        /// CPU threads (default: as recorded).
        #[arg(long)]
        threads: Option<i32>,
    },
    /// Sweep an intervention over positions, spans or layers, and print each item's effect.
    Sweep {
        /// The experiment (JSON).
        spec: PathBuf,
        /// The GGUF model file.
        #[arg(long, short, env = "KVLAB_MODEL")]
        model: PathBuf,
        /// What varies.
        #[arg(long, value_enum, default_value_t = SweepOver::Position)]
        over: SweepOver,
        /// The variant whose prompt is edited (default: the first).
        #[arg(long)]
        variant: Option<String>,
        /// Remove the cells instead of zeroing them.
        #[arg(long)]
        remove: bool,
        /// Layers touched by position and span sweeps ("all", "0-15", …).
        #[arg(long, default_value = "all")]
        layers: String,
        /// Span sweeps: the most extra tokens after the needle.
        #[arg(long, default_value_t = 12)]
        max_extra: usize,
        /// Write the sweep results (JSON) here.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// CPU threads for llama.cpp.
        #[arg(long)]
        threads: Option<i32>,
    },
    /// Measure speed on this machine: decode, batched grid, interventions, sweeps.
    Bench {
        /// The GGUF model file.
        #[arg(long, short, env = "KVLAB_MODEL")]
        model: PathBuf,
        /// A short run (for CI).
        #[arg(long)]
        quick: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// CPU threads for llama.cpp.
        #[arg(long)]
        threads: Option<i32>,
    },
    /// Show a model's metadata and how it tokenizes a text.
    Inspect {
        /// The GGUF model file.
        model: PathBuf,
        /// Text to tokenize.
        #[arg(long)]
        text: Option<String>,
        /// Recognize special-token text such as <|im_start|> in --text.
        #[arg(long)]
        special: bool,
    },
}

/// What a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SweepOver {
    /// One prompt position at a time.
    Position,
    /// The needle plus the next k tokens.
    Span,
    /// One layer at a time, and cumulative ranges.
    Layer,
    /// Every position × every layer.
    PositionLayer,
}

/// Grid output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for a terminal.
    Table,
    /// A Markdown table.
    Markdown,
    /// The full results as JSON.
    Json,
}

/// `kvlab --version`: the app, the llama.cpp it links and the backends compiled in.
fn version_line() -> String {
    format!(
        "{}\nllama.cpp  {} (bindings: llama-cpp-2 {})\nbackends   {}",
        env!("CARGO_PKG_VERSION"),
        engine::llama_cpp_build(),
        engine::LLAMA_CPP_2_VERSION,
        engine::compiled_backends().join(", ")
    )
}

/// Reads an experiment file, naming the file in any error: a regular file of bounded size.
fn read_spec(path: &Path) -> Result<ExperimentSpec> {
    ExperimentSpec::from_file(path).map_err(anyhow::Error::msg)
}

/// A thread count from the command line, checked; `None`: the default.
fn threads_arg(threads: Option<i32>) -> Result<i32> {
    match threads {
        Some(t) => Ok(check_threads(t as i64, "--threads").map_err(anyhow::Error::msg)?),
        None => Ok(runner::default_threads()),
    }
}

/// Checks, before any work, that a file can be written where `option` says: not a folder or a
/// device, in a folder that exists and takes new files. Finished work is never lost to a late
/// "cannot write".
fn check_output(path: &Path, option: &str) -> Result<()> {
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

/// This machine's memory in bytes (Linux: MemTotal), for the "does the KV cache fit" check.
fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Checks a spec against the loaded model before a run allocates anything.
fn check_fits(spec: &ExperimentSpec, model: &LoadedModel) -> Result<()> {
    let info = model.info();
    let head_dim = info.n_embd.checked_div(info.n_head).unwrap_or(0);
    let per_cell = crate::gguf::kv_bytes_per_cell(
        std::iter::repeat_n(info.n_head_kv, info.n_layer as usize),
        head_dim,
        head_dim,
    );
    spec.check_fits(info.n_ctx_train, per_cell, host_memory())?;
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

fn load(path: &Path, n_gpu_layers: Option<u32>) -> Result<LoadedModel> {
    note!("loading {} …", path.display());
    Ok(LoadedModel::load(
        path,
        &LoadOptions { n_gpu_layers },
        None,
        |_| {},
    )?)
}

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> Result<()> {
    engine::log::init(cli.verbose);
    let gpu_layers = cli.gpu_layers;
    let Some(command) = cli.command else {
        if let Some(p) = &cli.open
            && std::fs::symlink_metadata(p).is_err()
        {
            let word = p.display().to_string();
            if !word.contains(['/', '\\', '.']) {
                bail!(
                    "unknown subcommand {word:?}: kvlab knows run, report, verify, sweep, bench and inspect (kvlab --help)"
                );
            }
            bail!("{word}: no such file to open");
        }
        return open_app(cli.open, cli.run, gpu_layers);
    };
    match command {
        Command::Run {
            spec,
            model,
            out,
            format,
            threads,
            delta_layer,
            session,
        } => {
            let spec = read_spec(&spec)?;
            let threads = threads_arg(threads)?;
            if let Some(out) = &out {
                check_output(out, "--out")?;
            }
            if let Some(path) = &session {
                check_output(path, "--session")?;
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
                ..RunOptions::default()
            };
            let results = runner::run(&model, &spec, &options, |e| {
                if let RunEvent::Stage(s) = e {
                    note!("{s} …");
                }
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
                std::fs::write(out, &json)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                note!("results written to {}", out.display());
            }
            if let Some(path) = &session {
                let mut s = Session::new(spec.clone());
                s.model = Some(ModelRef {
                    path: model.path().to_path_buf(),
                    fingerprint: model.fingerprint().clone(),
                    info: model.info().clone(),
                });
                s.results = Some(results.clone());
                s.save(path)?;
                note!("session saved to {}", path.display());
            }
            let printed = match format {
                Format::Table => grid::to_table(&results, std::io::stdout().is_terminal()),
                Format::Markdown => grid::to_markdown(&results),
                Format::Json => json,
            };
            say!("{printed}");
            Ok(())
        }
        Command::Report {
            session,
            html,
            markdown,
            csv,
        } => {
            for (path, option) in [
                (&html, "--html"),
                (&markdown, "--markdown"),
                (&csv, "--csv"),
            ] {
                if let Some(path) = path {
                    check_output(path, option)?;
                }
            }
            let s = Session::load(&session)?;
            if html.is_none() && markdown.is_none() && csv.is_none() {
                say!("{}", report::markdown(&s));
                return Ok(());
            }
            let outputs = [
                (html, report::html as fn(&Session) -> String),
                (markdown, report::markdown),
                (csv, report::csv),
            ];
            for (path, render) in outputs {
                if let Some(path) = path {
                    crate::session::write_atomic(
                        &path,
                        render(&s).as_bytes(),
                        crate::session::Fault::None,
                    )?;
                    note!("wrote {}", path.display());
                }
            }
            Ok(())
        }
        Command::Verify {
            session,
            model,
            threads,
        } => verify(&session, model, threads, gpu_layers),
        Command::Bench {
            model,
            quick,
            json,
            threads,
        } => {
            let threads = threads_arg(threads)?;
            let model = load(&model, gpu_layers)?;
            let r = crate::bench::run(&model, quick, threads, |s| note!("{s} …"))?;
            if json {
                say!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                say!("{}", crate::bench::to_table(&r));
            }
            Ok(())
        }
        Command::Sweep {
            spec,
            model,
            over,
            variant,
            remove,
            layers,
            max_extra,
            out,
            threads,
        } => {
            let spec = read_spec(&spec)?;
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
            let model = load(&model, gpu_layers)?;
            check_fits(&spec, &model)?;
            let sweep = SweepSpec {
                kind: match over {
                    SweepOver::Position => SweepKind::Position { range: None },
                    SweepOver::Span => SweepKind::Span { max_extra },
                    SweepOver::Layer => SweepKind::Layer,
                    SweepOver::PositionLayer => SweepKind::PositionLayer { range: None },
                },
                variant: variant.unwrap_or_else(|| spec.variants[0].name.clone()),
                intervention: if remove {
                    Intervention::Remove
                } else {
                    Intervention::Zero
                },
                layers,
                part: KvPart::Both,
            };
            let options = RunOptions {
                threads,
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
                std::fs::write(&out, serde_json::to_string_pretty(&r)?)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                note!("sweep written to {}", out.display());
            }
            Ok(())
        }
        Command::Inspect {
            model,
            text,
            special,
        } => {
            let m = load(&model, gpu_layers)?;
            let info = m.info();
            let fp = m.fingerprint();
            say!(
                "file           {} ({:.1} MiB)",
                fp.file_name,
                fp.file_size as f64 / (1 << 20) as f64
            );
            say!("architecture   {}", info.architecture);
            if let Some(name) = &info.name {
                say!("name           {name}");
            }
            say!("quantization   {}", info.quantization);
            say!("parameters     {:.1} M", info.n_params as f64 / 1e6);
            say!("layers         {}", info.n_layer);
            say!(
                "heads          {} (KV heads {})",
                info.n_head,
                info.n_head_kv
            );
            say!("embedding      {}", info.n_embd);
            say!("context        {} (trained)", info.n_ctx_train);
            say!("vocabulary     {}", info.n_vocab);
            say!(
                "chat template  {}",
                if info.has_chat_template { "yes" } else { "no" }
            );
            say!(
                "adds BOS       {}",
                if info.adds_bos { "yes" } else { "no" }
            );
            let devices = engine::devices();
            for (i, d) in devices.iter().enumerate() {
                let head = if i == 0 { "devices" } else { "" };
                say!("{head:<15}{}", d.summary());
            }
            say!(
                "KV cache       {}",
                engine::kv_cache_home(&devices, gpu_layers, info.n_layer)
            );
            match m.check_kv_surgery_supported() {
                Ok(()) => say!("KV surgery     supported"),
                Err(e) => say!("KV surgery     not supported: {e}"),
            }
            if let Some(text) = text {
                let tokens = m.tokenize(&text, true, special)?;
                say!("\n{} tokens:", tokens.len());
                for (i, t) in tokens.iter().enumerate() {
                    say!("{i:>5}  {:>7}  {:?}", t.id, t.piece);
                }
            }
            Ok(())
        }
    }
}

/// Re-runs a session and compares everything but timings with its saved results.
fn verify(
    path: &Path,
    model: Option<PathBuf>,
    threads: Option<i32>,
    gpu_layers: Option<u32>,
) -> Result<()> {
    let s = Session::load(path)?;
    let saved = s
        .results
        .as_ref()
        .with_context(|| format!("{} has no results to verify", path.display()))?;
    // Threads are a run setting, not a result: --threads wins; the recorded count is used
    // when this machine can run it.
    let threads = match threads {
        Some(_) => threads_arg(threads)?,
        None => match check_threads(saved.settings.threads as i64, "the session") {
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
    check_fits(&saved.spec, &m)?;
    if m.fingerprint() != &saved.model {
        bail!(
            "{} is not the model these results came from ({} {} bytes, expected {} {} bytes): results are never compared across models",
            model_path.display(),
            m.fingerprint().file_name,
            m.fingerprint().file_size,
            saved.model.file_name,
            saved.model.file_size
        );
    }
    let options = RunOptions {
        threads,
        delta_layer: saved
            .kv_delta
            .as_ref()
            .and_then(|d| d.layer_rows.as_ref().map(|l| l.layer)),
        n_batch: saved.settings.n_batch,
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

/// Opens the desktop app, on a model, an experiment or a session if one is given.
fn open_app(path: Option<PathBuf>, run_at_start: bool, gpu_layers: Option<u32>) -> Result<()> {
    let mut start = crate::ui::StartOptions {
        run_at_start,
        gpu_layers,
        ..Default::default()
    };
    if let Some(p) = path {
        let ext = p
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "json" => start.spec = Some(read_spec(&p)?),
            crate::session::EXTENSION => {
                // Fail early, in the terminal, on a file that cannot be opened.
                Session::load(&p)?;
                start.session = Some(p);
            }
            _ => start.model = Some(p),
        }
    }
    crate::console::release_if_own();
    crate::ui::run(start)
}

/// An error and its causes, `: `-separated, each cause shown once: an I/O error whose text the
/// message already holds ("x.kvlab: No such file") is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}

/// Entry point for `main`: parses, runs, and turns errors into a message and exit code 1.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let message = error_text(&e);
            note!("error: {message}");
            if crate::console::is_own() {
                // Started from Explorer or the Start menu: the console closes as kvlab exits, so
                // the message would flash by unread.
                rfd::MessageDialog::new()
                    .set_level(rfd::MessageLevel::Error)
                    .set_title("kvlab")
                    .set_description(message)
                    .show();
            }
            std::process::ExitCode::FAILURE
        }
    }
}
