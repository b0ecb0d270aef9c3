//! What a run produces: per variant its prompt and baseline, per condition its generation and
//! scores, the KV delta between variants, and everything needed to reproduce it.

use serde::{Deserialize, Serialize};

use super::outcome::{ExpectedScore, KeywordCount};
use super::spec::{ExperimentSpec, Span};
use crate::engine::{ModelFingerprint, ModelInfo, TokenPiece};

/// A token with its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// Token id.
    pub id: i32,
    /// Its text.
    pub piece: String,
    /// Its log-probability at that step.
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
    pub probes: Vec<f32>,
    /// Top-1 minus top-2 log-prob: below 0.1 the choice is a near-tie.
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
    pub sum: f64,
    /// Mean per token.
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
    /// What was done, in words.
    pub intervention: String,
    /// The positions touched.
    pub span: Span,
    /// The layers touched (as written in specs).
    pub layers: String,
    /// K, V or both.
    pub part: String,
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
    #[serde(default)]
    pub preference: Option<f64>,
    /// The preference in words: "keeps SF, +2.10", "flips to NY, −8.50".
    #[serde(default)]
    pub verdict: Option<String>,
    /// Each variant's keywords counted in the generated text.
    #[serde(default)]
    pub keywords: Vec<KeywordCount>,
    /// The first divergence happened at a near-tie (top-1/top-2 gap below 0.1 in this condition or
    /// its baseline): numerical noise could have caused it.
    #[serde(default)]
    pub fragile: bool,
}

impl ConditionResult {
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
    pub k_l2: Vec<Vec<f32>>,
    /// `v_l2[layer][position]`.
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
    pub k: Vec<Vec<f32>>,
    /// `v[position][channel]`.
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
}

/// Wall-clock timings (excluded from reproducibility comparisons).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Seconds evaluating prompts.
    pub prompt_s: f64,
    /// Seconds generating.
    pub generate_s: f64,
    /// Generated tokens per second, all sequences together.
    pub tokens_per_s: f64,
    /// Seconds scoring continuations.
    pub score_s: f64,
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
}

impl RunResults {
    /// A variant's result by name.
    pub fn variant(&self, name: &str) -> Option<&VariantResult> {
        self.variants.iter().find(|v| v.name == name)
    }
}
