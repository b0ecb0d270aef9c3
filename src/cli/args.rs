//! The command line's subcommands and their arguments (clap), one struct per subcommand so that
//! each command's code takes exactly its own arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment and print the outcome grid.
    Run(RunArgs),
    /// Write a shareable report of a session: self-contained HTML, Markdown, or CSV.
    Report(ReportArgs),
    /// Re-run a session's experiment and report any difference from its saved results.
    Verify(VerifyArgs),
    /// Sweep an intervention over positions, spans or layers, and print each item's effect.
    Sweep(SweepArgs),
    /// Measure speed on this machine: decode, batched grid, interventions, sweeps.
    Bench(BenchArgs),
    /// Show a model's metadata and how it tokenizes a text.
    Inspect(InspectArgs),
}

/// Arguments of `kvlab run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment (JSON), e.g. assets/experiments/seed-short.json.
    pub spec: PathBuf,
    /// The GGUF model file.
    #[arg(long, short, env = "KVLAB_MODEL")]
    pub model: PathBuf,
    /// Write the full results (JSON) here (a dataset: every wave's grid and the items).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// How to print the grid (a dataset: its aggregate table).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// CPU threads for llama.cpp.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Also record one layer's full K/V difference rows between the first two variants.
    #[arg(long)]
    pub delta_layer: Option<usize>,
    /// Also save a session file (.kvlab) with the experiment, the model and the results.
    #[arg(long)]
    pub session: Option<PathBuf>,
    /// Capture attention: per layer and head, what the prompt tokens after the needle and every
    /// grid row's steps pay to the needle (stored in the results; flash attention off).
    #[arg(long)]
    pub attention: bool,
    /// The KV cache's types (override the experiment's).
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// The KV cache's number types, as llama.cpp's own tools take them.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The K cache's type: f16 (default), bf16, f32, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl.
    #[arg(long, value_parser = crate::engine::CacheType::parse)]
    pub cache_type_k: Option<crate::engine::CacheType>,
    /// The V cache's type (a quantized V cache runs with flash attention).
    #[arg(long, value_parser = crate::engine::CacheType::parse)]
    pub cache_type_v: Option<crate::engine::CacheType>,
}

impl CacheArgs {
    /// Sets the experiment's cache types to those given.
    pub fn apply(&self, spec: &mut crate::experiment::ExperimentSpec) {
        if let Some(k) = self.cache_type_k {
            spec.cache.k = k;
        }
        if let Some(v) = self.cache_type_v {
            spec.cache.v = v;
        }
    }
}

/// Arguments of `kvlab report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The session file (.kvlab).
    pub session: PathBuf,
    /// Write an HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write a Markdown report here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write per-step probabilities as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

/// Arguments of `kvlab verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The session file (.kvlab).
    pub session: PathBuf,
    /// The model (default: the path recorded in the session).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// CPU threads (default: as recorded).
    #[arg(long)]
    pub threads: Option<i32>,
}

/// Arguments of `kvlab sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The experiment (JSON).
    pub spec: PathBuf,
    /// The GGUF model file.
    #[arg(long, short, env = "KVLAB_MODEL")]
    pub model: PathBuf,
    /// What varies.
    #[arg(long, value_enum, default_value_t = SweepOver::Position)]
    pub over: SweepOver,
    /// The variant whose prompt is edited (default: the first).
    #[arg(long)]
    pub variant: Option<String>,
    /// What each item does to its cells: zero, remove (all layers only), mean (over every
    /// variant), noise (3σ, seed 0) or transplant (from --from, default the next variant).
    #[arg(long, value_enum, default_value_t = SweepOpArg::Zero)]
    pub op: SweepOpArg,
    /// Same as --op remove.
    #[arg(long, conflicts_with = "op")]
    pub remove: bool,
    /// Transplant sweeps: the variant whose rows are copied in.
    #[arg(long)]
    pub from: Option<String>,
    /// Layers touched by position and span sweeps ("all", "0-15", …).
    #[arg(long, default_value = "all")]
    pub layers: String,
    /// Span sweeps: the most extra tokens after the needle.
    #[arg(long, default_value_t = 12)]
    pub max_extra: usize,
    /// How items get their caches: shared (the prompt's cells shared, only edited cells
    /// written: fast at large caches, results move slightly against a grid), streams (each
    /// item's whole cache copied: equals a grid bit for bit on the CPU), or auto (shared from
    /// 64 MiB of prompt state). A model with a sliding-window cache always uses streams (a
    /// shared sweep asked of one says so).
    #[arg(long, value_enum, default_value_t = SweepCachesArg::Auto)]
    pub caches: SweepCachesArg,
    /// Write the sweep results (JSON) here.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// CPU threads for llama.cpp.
    #[arg(long)]
    pub threads: Option<i32>,
    /// The KV cache's types (override the experiment's).
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Arguments of `kvlab bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The GGUF model file.
    #[arg(long, short, env = "KVLAB_MODEL")]
    pub model: PathBuf,
    /// A short run (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// CPU threads for llama.cpp.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Instead: the scale figures on a random-weight model with Llama 3.1 8B's cache shape
    /// (written once next to --model, whose tokenizer it copies) and a long prompt.
    #[arg(long)]
    pub scale: bool,
    /// --scale: prompt tokens.
    #[arg(long, default_value_t = 2048)]
    pub prompt_tokens: usize,
    /// --scale: position-sweep items.
    #[arg(long, default_value_t = 16)]
    pub items: usize,
}

/// Arguments of `kvlab inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Text to tokenize.
    #[arg(long)]
    pub text: Option<String>,
    /// Recognize special-token text such as <|im_start|> in --text.
    #[arg(long)]
    pub special: bool,
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

/// How a sweep's items get their caches (see [`crate::runner::SweepCaches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SweepCachesArg {
    /// Shared from 64 MiB of prompt state.
    Auto,
    /// The prompt's cells shared.
    Shared,
    /// A whole cache per item.
    Streams,
}

impl From<SweepCachesArg> for crate::runner::SweepCaches {
    fn from(a: SweepCachesArg) -> Self {
        match a {
            SweepCachesArg::Auto => Self::Auto,
            SweepCachesArg::Shared => Self::Shared,
            SweepCachesArg::Streams => Self::Streams,
        }
    }
}

/// What a sweep's items do (see [`crate::experiment::sweep::SweepOp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SweepOpArg {
    /// Rows set to zero.
    Zero,
    /// Cells taken out (all layers only).
    Remove,
    /// Rows replaced by their mean over every variant.
    Mean,
    /// Gaussian noise, 3σ of each layer's values.
    Noise,
    /// Rows copied from another variant.
    Transplant,
}

impl From<SweepOpArg> for crate::experiment::sweep::SweepOp {
    fn from(a: SweepOpArg) -> Self {
        use crate::experiment::sweep::SweepOp;
        match a {
            SweepOpArg::Zero => SweepOp::Zero,
            SweepOpArg::Remove => SweepOp::Remove,
            SweepOpArg::Mean => SweepOp::Mean,
            SweepOpArg::Noise => SweepOp::Noise,
            SweepOpArg::Transplant => SweepOp::Transplant,
        }
    }
}

/// Grid output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for a terminal.
    Table,
    /// A Markdown table.
    Markdown,
    /// The full results as JSON (a dataset: its aggregates).
    Json,
    /// A dataset: one row per item × condition (grids have no CSV form here: see `report`).
    Csv,
}
