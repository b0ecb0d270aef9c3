//! The command line: `kvlab run`, `kvlab inspect`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::engine::{self, LoadOptions, LoadedModel};
use crate::experiment::spec::KvPart;
use crate::experiment::sweep::{SweepKind, SweepSpec};
use crate::experiment::{ExperimentSpec, Intervention, LayerSet, grid};
use crate::runner::{self, RunEvent, RunOptions};
use crate::session::{ModelRef, Session, report};

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

/// Reads an experiment file, naming the file in any error.
fn read_spec(path: &Path) -> Result<ExperimentSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the experiment {}", path.display()))?;
    ExperimentSpec::from_json(&text).with_context(|| format!("in {}", path.display()))
}

fn load(path: &Path, n_gpu_layers: Option<u32>) -> Result<LoadedModel> {
    eprintln!("loading {} …", path.display());
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
            let model = load(&model, gpu_layers)?;
            let options = RunOptions {
                threads: threads.unwrap_or_else(runner::default_threads),
                delta_layer,
                ..RunOptions::default()
            };
            let results = runner::run(&model, &spec, &options, |e| {
                if let RunEvent::Stage(s) = e {
                    eprintln!("{s} …");
                }
            })?;
            for w in &results.warnings {
                eprintln!("warning: {w}");
            }
            eprintln!(
                "done: {:.1} tokens/s generating, {:.2}s scoring",
                results.timings.tokens_per_s, results.timings.score_s
            );
            let json = serde_json::to_string_pretty(&results)?;
            if let Some(out) = &out {
                std::fs::write(out, &json)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                eprintln!("results written to {}", out.display());
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
                eprintln!("session saved to {}", path.display());
            }
            let printed = match format {
                Format::Table => grid::to_table(&results, std::io::stdout().is_terminal()),
                Format::Markdown => grid::to_markdown(&results),
                Format::Json => json,
            };
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{printed}")?;
            Ok(())
        }
        Command::Report {
            session,
            html,
            markdown,
            csv,
        } => {
            let s = Session::load(&session)?;
            if html.is_none() && markdown.is_none() && csv.is_none() {
                println!("{}", report::markdown(&s));
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
                    eprintln!("wrote {}", path.display());
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
            let model = load(&model, gpu_layers)?;
            let threads = threads.unwrap_or_else(runner::default_threads);
            let r = crate::bench::run(&model, quick, threads, |s| eprintln!("{s} …"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{}", crate::bench::to_table(&r));
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
            let model = load(&model, gpu_layers)?;
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
                layers: LayerSet::parse(&layers)?,
                part: KvPart::Both,
            };
            let options = RunOptions {
                threads: threads.unwrap_or_else(runner::default_threads),
                ..RunOptions::default()
            };
            let started = std::time::Instant::now();
            let r = runner::run_sweep(&model, &spec, &sweep, &options, |e| match e {
                RunEvent::Stage(s) => eprintln!("{s} …"),
                RunEvent::Progress { done, total } => {
                    let el = started.elapsed().as_secs_f64();
                    let eta = el / done.max(1) as f64 * (total - done) as f64;
                    eprint!("\r{done}/{total} items, about {eta:.0}s left   ");
                }
                _ => {}
            })?;
            eprintln!();
            let vi = spec.variant_index(&sweep.variant).unwrap_or(0);
            println!("{}", crate::experiment::sweep::to_table(&r, vi));
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&r)?)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                eprintln!("sweep written to {}", out.display());
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
            println!(
                "file           {} ({:.1} MiB)",
                fp.file_name,
                fp.file_size as f64 / (1 << 20) as f64
            );
            println!("architecture   {}", info.architecture);
            if let Some(name) = &info.name {
                println!("name           {name}");
            }
            println!("quantization   {}", info.quantization);
            println!("parameters     {:.1} M", info.n_params as f64 / 1e6);
            println!("layers         {}", info.n_layer);
            println!(
                "heads          {} (KV heads {})",
                info.n_head, info.n_head_kv
            );
            println!("embedding      {}", info.n_embd);
            println!("context        {} (trained)", info.n_ctx_train);
            println!("vocabulary     {}", info.n_vocab);
            println!(
                "chat template  {}",
                if info.has_chat_template { "yes" } else { "no" }
            );
            println!(
                "adds BOS       {}",
                if info.adds_bos { "yes" } else { "no" }
            );
            let devices = engine::devices();
            for (i, d) in devices.iter().enumerate() {
                let head = if i == 0 { "devices" } else { "" };
                println!("{head:<15}{}", d.summary());
            }
            println!(
                "KV cache       {}",
                engine::kv_cache_home(&devices, gpu_layers, info.n_layer)
            );
            match m.check_kv_surgery_supported() {
                Ok(()) => println!("KV surgery     supported"),
                Err(e) => println!("KV surgery     not supported: {e}"),
            }
            if let Some(text) = text {
                let tokens = m.tokenize(&text, true, special)?;
                println!("\n{} tokens:", tokens.len());
                for (i, t) in tokens.iter().enumerate() {
                    println!("{i:>5}  {:>7}  {:?}", t.id, t.piece);
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
    let model_path = model
        .or_else(|| s.model.as_ref().map(|m| m.path.clone()))
        .with_context(|| "the session names no model: pass --model")?;
    let m = load(&model_path, gpu_layers)?;
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
        threads: threads.unwrap_or(saved.settings.threads),
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
        println!(
            "verified: re-running {} reproduces its results exactly",
            path.display()
        );
        Ok(())
    } else {
        for d in differences.iter().take(20) {
            println!("differs: {d}");
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

/// Entry point for `main`: parses, runs, and turns errors into a message and exit code 1.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if crate::console::is_own() {
                // Started from Explorer or the Start menu: the console closes as kvlab exits, so
                // the message would flash by unread.
                rfd::MessageDialog::new()
                    .set_level(rfd::MessageLevel::Error)
                    .set_title("kvlab")
                    .set_description(format!("{e:#}"))
                    .show();
            }
            std::process::ExitCode::FAILURE
        }
    }
}
