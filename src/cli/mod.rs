//! The command line: `kvlab run`, `sweep`, `verify`, `report`, `bench`, `inspect`; without a
//! subcommand, the desktop app. Errors become one message and exit code 1, never a panic.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;

use crate::engine;
use crate::session::Session;

/// Prints a line on standard output; a closed pipe or a full disk becomes an error (exit code 1)
/// instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        anyhow::Context::context(
            writeln!(std::io::stdout().lock(), $($arg)*),
            "cannot write to standard output",
        )?
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

// After the macros: modules see only macros defined above them.
mod args;
mod checks;
mod dataset;
mod info;
mod run;

pub use args::{Command, Format, SweepOver};

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
        Command::Run(args) => run::run(args, gpu_layers),
        Command::Report(args) => info::report(args),
        Command::Verify(args) => run::verify(&args.session, args.model, args.threads, gpu_layers),
        Command::Bench(args) => info::bench(args, gpu_layers),
        Command::Sweep(args) => run::sweep(args, gpu_layers),
        Command::Inspect(args) => info::inspect(args, gpu_layers),
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
            "json" => start.spec = Some(checks::read_spec(&p)?),
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
