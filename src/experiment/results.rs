//! What a run produces: per variant its prompt and baseline, per condition its generation and
//! scores, the KV delta between variants, and everything needed to reproduce it.

use serde::{Deserialize, Serialize};

pub use super::outcome::Verdict;
use super::outcome::{ExpectedScore, KeywordCount};
use super::spec::{Condition, ExperimentSpec, Op, Site, Span};
use crate::engine::{ModelFingerprint, ModelInfo, TokenPiece};

/// A token with its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// Token id.
    pub id: i32,
    /// Its text.
    pub piece: String,
    /// Its log-probability at that step.
    #[serde(with = "crate::experiment::floats")]
    pub logprob: f32,
}

/// One generated step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The token chosen.
    pub token: Alternative,
    /// The most likely tokens at this step.
    pub top: Vec<Alternative>,
    /// Log-probability of each probe's token (in the spec's probe order).
    #[serde(with = "crate::experiment::floats")]
    pub probes: Vec<f32>,
    /// Top-1 minus top-2 log-prob: below 0.1 the choice is a near-tie.
    #[serde(with = "crate::experiment::floats")]
    pub gap: f32,
}

/// A generated continuation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Generation {
    /// The generated ids.
    pub tokens: Vec<i32>,
    /// Their text.
    pub text: String,
    /// Per step details.
    pub steps: Vec<Step>,
}

/// A teacher-forced score: how likely a given continuation is under a cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuationScore {
    /// The variant whose baseline continuation was scored.
    pub of_variant: String,
    /// Sum of the token log-probs.
    #[serde(with = "crate::experiment::floats")]
    pub sum: f64,
    /// Mean per token.
    #[serde(with = "crate::experiment::floats")]
    pub mean: f64,
    /// Tokens scored.
    pub n_tokens: usize,
}

/// A variant's prompt and its unmodified generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    /// The variant's name.
    pub name: String,
    /// The rendered prompt text.
    pub prompt_text: String,
    /// The prompt's tokens.
    pub tokens: Vec<TokenPiece>,
    /// Generation straight from the evaluated prompt, with no state round trip.
    pub baseline: Generation,
}

/// The outcome of one condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionResult {
    /// The grid row label.
    pub label: String,
    /// The variant whose prompt was used.
    pub variant: String,
    /// What was done.
    pub op: Op,
    /// Where, as the condition asked (its span `None` for the needle).
    pub site: Site,
    /// The variants it was judged against (empty: all others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub against: Vec<String>,
    /// The positions touched (the site's span, or the needle's).
    pub span: Span,
    /// What was generated.
    pub generation: Generation,
    /// First step where the tokens differ from the same variant's baseline (`None`: identical).
    pub first_divergence: Option<usize>,
    /// Each variant's baseline continuation scored under this condition's cache.
    pub scores: Vec<ContinuationScore>,
    /// Each variant's expected answers scored under this condition's cache.
    #[serde(default)]
    pub expected: Vec<ExpectedScore>,
    /// Own variant's expected-answer score minus the best other variant's (needs expected answers).
    #[serde(default, with = "crate::experiment::floats")]
    pub preference: Option<f64>,
    /// Which variant's answers the cache prefers (needs expected answers).
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Each variant's keywords counted in the generated text.
    #[serde(default)]
    pub keywords: Vec<KeywordCount>,
    /// The first divergence happened at a near-tie (top-1/top-2 gap below 0.1 in this condition or
    /// its baseline): numerical noise could have caused it.
    #[serde(default)]
    pub fragile: bool,
}

impl ConditionResult {
    /// The condition as the spec wrote it (label, variant, op, site).
    pub fn condition(&self) -> Condition {
        Condition {
            label: Some(self.label.clone()),
            variant: self.variant.clone(),
            op: self.op.clone(),
            site: self.site.clone(),
            against: self.against.clone(),
        }
    }

    /// The score of one variant's continuation.
    pub fn score_of(&self, variant: &str) -> Option<&ContinuationScore> {
        self.scores.iter().find(|s| s.of_variant == variant)
    }
}

/// Per layer and position, the L2 norm of the difference of two variants' K and V rows
/// (the seed's heatmaps, summarized); optionally one layer's full difference rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvDelta {
    /// First variant.
    pub variant_a: String,
    /// Second variant.
    pub variant_b: String,
    /// `k_l2[layer][position]`.
    #[serde(with = "crate::experiment::floats")]
    pub k_l2: Vec<Vec<f32>>,
    /// `v_l2[layer][position]`.
    #[serde(with = "crate::experiment::floats")]
    pub v_l2: Vec<Vec<f32>>,
    /// The full rows of one layer, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_rows: Option<LayerDelta>,
}

/// One layer's K and V difference (a − b), position × channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDelta {
    /// The layer.
    pub layer: usize,
    /// `k[position][channel]`.
    #[serde(with = "crate::experiment::floats")]
    pub k: Vec<Vec<f32>>,
    /// `v[position][channel]`.
    #[serde(with = "crate::experiment::floats")]
    pub v: Vec<Vec<f32>>,
}

/// The settings a run used, for reproducing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// CPU threads.
    pub threads: i32,
    /// Cells per sequence.
    pub n_ctx_per_seq: u32,
    /// Sequences in the context.
    pub n_seq: u32,
    /// Tokens per llama.cpp call.
    pub n_batch: u32,
    /// The KV cache's number types (absent in files from before they could be chosen: f16).
    #[serde(default)]
    pub cache: crate::engine::CacheTypes,
    /// Whether attention was captured (absent in files from before it could be: off). A capturing
    /// run's context has flash attention off, so its numbers differ slightly from another run's.
    #[serde(default)]
    pub attention: bool,
}

/// The most tokens per llama.cpp call a run may ask for (llama.cpp allocates a batch this size).
pub const MAX_N_BATCH: u32 = 1 << 16;

/// The most threads a saved run may say it used, on any machine.
pub const MAX_THREADS_RECORDED: i32 = 1 << 16;

/// The most CPU threads a run may ask for: four per core this machine has. llama.cpp starts
/// every thread it is asked for (100,000 crash it; thousands make it crawl).
pub fn max_threads() -> i32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cores).min(i32::MAX as usize) as i32
}

/// Checks a thread count from the command line or a file; `from` says where it came from.
pub fn check_threads(threads: i64, from: &str) -> Result<i32, String> {
    let max = max_threads();
    if !(1..=max as i64).contains(&threads) {
        return Err(format!(
            "{from} asks for {threads} threads; use 1 to {max} (four per core on this machine)"
        ));
    }
    Ok(threads as i32)
}

impl RunSettings {
    /// Checks settings read from a file as if a user had typed them (`verify` re-runs with
    /// them): threads in range, a batch that holds one token of every sequence.
    pub fn validate(&self) -> Result<(), String> {
        // Any machine's count is readable (the file may come from a bigger one); `verify`
        // checks it against this machine's cores before running.
        if !(1..=MAX_THREADS_RECORDED).contains(&self.threads) {
            return Err(format!(
                "settings.threads is {}; a run uses 1 to {MAX_THREADS_RECORDED} threads",
                self.threads
            ));
        }
        if self.n_seq as usize > super::spec::MAX_SEQUENCES {
            return Err(format!(
                "settings.n_seq is {}; llama.cpp runs at most {} sequences",
                self.n_seq,
                super::spec::MAX_SEQUENCES
            ));
        }
        if !(self.n_seq.max(1)..=MAX_N_BATCH).contains(&self.n_batch) {
            return Err(format!(
                "settings.n_batch is {}; it must hold one token of each of the {} sequences and be at most {MAX_N_BATCH}",
                self.n_batch, self.n_seq
            ));
        }
        Ok(())
    }
}

/// Wall-clock timings (excluded from reproducibility comparisons).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Seconds evaluating prompts.
    #[serde(with = "crate::experiment::floats")]
    pub prompt_s: f64,
    /// Seconds making the conditions' starting caches (the edits and their state writes).
    #[serde(default, with = "crate::experiment::floats")]
    pub surgery_s: f64,
    /// Seconds generating.
    #[serde(with = "crate::experiment::floats")]
    pub generate_s: f64,
    /// Generated tokens per second, all sequences together.
    #[serde(with = "crate::experiment::floats")]
    pub tokens_per_s: f64,
    /// Seconds scoring continuations.
    #[serde(with = "crate::experiment::floats")]
    pub score_s: f64,
    /// Tokens scoring evaluated teacher-forced: what generation had not already given.
    #[serde(default)]
    pub score_tokens: usize,
}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// kvlab's version.
    pub kvlab_version: String,
    /// llama-cpp-2's version.
    pub llama_cpp_2_version: String,
    /// The model file.
    pub model: ModelFingerprint,
    /// The model's metadata.
    pub model_info: ModelInfo,
    /// The experiment as run.
    pub spec: ExperimentSpec,
    /// Settings that affect results.
    pub settings: RunSettings,
    /// The needle span used (given or found).
    pub needle_span: Span,
    /// Per variant: prompt and baseline.
    pub variants: Vec<VariantResult>,
    /// Per condition, in spec order.
    pub conditions: Vec<ConditionResult>,
    /// K/V difference between the first two variants (when their prompts align).
    pub kv_delta: Option<KvDelta>,
    /// False when the run was stopped before the end (scores are then missing).
    pub complete: bool,
    /// Things the user should know (e.g. renderers that disagree about the prompt).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// How long it took.
    pub timings: Timings,
    /// The attention captured (runs with `settings.attention`; see [`super::attention`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<super::attention::AttentionResults>,
}

impl RunResults {
    /// Checks that results read from a file agree with their own spec, so that the grid, the
    /// reports and `verify` can index them: one result per variant and per condition, in spec
    /// order, each condition naming a variant, settings in range.
    pub fn validate(&self) -> Result<(), String> {
        self.spec
            .validate()
            .map_err(|e| format!("results.spec: {e}"))?;
        self.settings
            .validate()
            .map_err(|e| format!("results.{e}"))?;
        let names: Vec<&str> = self.spec.variants.iter().map(|v| v.name.as_str()).collect();
        let got: Vec<&str> = self.variants.iter().map(|v| v.name.as_str()).collect();
        if names != got {
            return Err(format!(
                "results.variants are {got:?}, but the spec has the variants {names:?}"
            ));
        }
        if self.conditions.len() != self.spec.conditions.len() {
            return Err(format!(
                "results.conditions has {} items, but the spec has {} conditions",
                self.conditions.len(),
                self.spec.conditions.len()
            ));
        }
        for (i, (c, sc)) in self
            .conditions
            .iter()
            .zip(&self.spec.conditions)
            .enumerate()
        {
            if c.variant != sc.variant {
                return Err(format!(
                    "results.conditions[{i}] is of variant {:?}, but the spec's condition {i} is of {:?}",
                    c.variant, sc.variant
                ));
            }
        }
        // Conditions that run as one share a sequence; results written before kvlab shared
        // them gave every condition its own.
        let shared = self.spec.n_sequences();
        let own = self.variants.len() + self.conditions.len();
        if ![shared, own].contains(&(self.settings.n_seq as usize)) {
            return Err(format!(
                "results.settings.n_seq is {}, but the results have {shared} sequences",
                self.settings.n_seq
            ));
        }
        if let Some(a) = &self.attention {
            a.validate(self.variants.len(), self.conditions.len())
                .map_err(|e| format!("results.{e}"))?;
        }
        if let Some(d) = &self.kv_delta {
            for (name, rows) in [("k_l2", &d.k_l2), ("v_l2", &d.v_l2)] {
                if rows.len() > crate::gguf::LLAMA_MAX_LAYERS as usize {
                    return Err(format!("results.kv_delta.{name} has {} layers", rows.len()));
                }
            }
        }
        Ok(())
    }

    /// A variant's result by name.
    pub fn variant(&self, name: &str) -> Option<&VariantResult> {
        self.variants.iter().find(|v| v.name == name)
    }
}
