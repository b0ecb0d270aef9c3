//! The experiment a user designs: prompt, variants, needle, conditions, generation settings.
//! Saved as JSON; every field has a default so older or hand-written specs stay readable.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

mod file;
mod legacy;
mod op;
mod prompt;
mod site;
#[cfg(test)]
mod tests;

pub use crate::engine::KvPart;
pub use file::read_text_file;
pub use legacy::{upgrade_condition, upgrade_conditions};
pub use op::{Condition, DEFAULT_NOISE_SCALE, Op, distinct_runs, shared_runs};
pub use prompt::{PromptMode, PromptSpec, Turn, Variant};
pub use site::{LayerSet, Site, Span};

/// The most tokens a spec may ask to generate: more than any model's context, and small enough
/// that context sizes computed from it never overflow.
pub const MAX_TOKENS_LIMIT: usize = 1 << 20;
/// The most sequences llama.cpp runs in one context (`LLAMA_MAX_SEQ`): a grid runs one per
/// variant and one per distinct condition.
pub const MAX_SEQUENCES: usize = 256;
/// The most conditions (grid cells) a grid holds, distinct or not: cells that share a run
/// still each keep a generation and scores (a dataset's wave of all pairs holds a few
/// thousand).
pub const MAX_CONDITIONS: usize = 4096;
/// The most alternatives recorded per step.
pub const MAX_TOP_K: usize = 1000;
/// The largest experiment file read (a spec is a few KiB; this keeps `/dev/zero` and friends
/// from filling memory).
pub const MAX_SPEC_BYTES: u64 = 16 << 20;

/// The placeholder in the prompt that each variant fills.
pub const NEEDLE_PLACEHOLDER: &str = "{needle}";

/// What is wrong with a spec, in words a user can act on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// No turn contains `{needle}`.
    #[error("the prompt has no {{needle}} placeholder: put {{needle}} where the variants differ")]
    NoPlaceholder,
    /// Fewer than the variants needed.
    #[error("{0}")]
    Variants(String),
    /// A condition refers to something that does not exist or cannot be done.
    #[error("condition {index} ({label}): {reason}")]
    Condition {
        /// Its index in the spec.
        index: usize,
        /// Its label.
        label: String,
        /// What is wrong.
        reason: String,
    },
    /// A layer selection could not be read.
    #[error("layers {0:?}: write \"all\", a range like \"0-15\", or a list like \"0,3,7-9\"")]
    Layers(String),
    /// The needle span does not fit the prompt.
    #[error("{0}")]
    Span(String),
    /// The JSON could not be read.
    #[error("the experiment file is not valid: {0}")]
    Json(String),
    /// Generation settings are out of range.
    #[error("{0}")]
    Generation(String),
    /// The dataset is inconsistent.
    #[error("dataset: {0}")]
    Dataset(String),
}

/// For `skip_serializing_if`: the default of a flag that is on unless turned off.
fn is_true(b: &bool) -> bool {
    *b
}

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sampling {
    /// The most likely token (ties: the lowest id).
    Greedy,
    /// Temperature and nucleus sampling with a fixed seed (every condition draws the same random
    /// numbers, so the control still equals the baseline).
    Sample {
        /// Softmax temperature (> 0).
        temperature: f32,
        /// Nucleus mass in (0, 1].
        top_p: f32,
        /// Random seed.
        seed: u64,
    },
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct GenerationSpec {
    /// Tokens generated per condition.
    pub max_tokens: usize,
    /// Stop a sequence at its end-of-generation token (the seed does not).
    pub stop_at_eog: bool,
    /// Greedy or sampled.
    pub sampling: Sampling,
}

impl Default for GenerationSpec {
    fn default() -> Self {
        GenerationSpec {
            max_tokens: 100,
            stop_at_eog: false,
            sampling: Sampling::Greedy,
        }
    }
}

/// An experiment: everything needed to run it on any model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// A name for files and titles.
    pub name: String,
    /// What the experiment asks, in words.
    pub description: String,
    /// The prompt.
    pub prompt: PromptSpec,
    /// The needle fillings.
    pub variants: Vec<Variant>,
    /// Needle positions; default: where the variants' tokens differ.
    pub needle_span: Option<Span>,
    /// The grid's conditions.
    pub conditions: Vec<Condition>,
    /// Generation settings.
    pub generation: GenerationSpec,
    /// Strings whose (first) token's log-prob is recorded at every step, e.g. `" San"`.
    pub probes: Vec<String>,
    /// Alternatives recorded per step.
    pub top_k: usize,
    /// Score every judged variant's baseline continuation under each condition (the grid's
    /// "how likely is the baseline's text" numbers). Datasets turn it off: their verdicts come
    /// from the expected answers alone, and the baselines would double the scoring work.
    #[serde(skip_serializing_if = "is_true")]
    pub score_baselines: bool,
    /// A dataset: needles, answer templates, pairs and prompt templates that expand into many
    /// grids (see [`crate::experiment::dataset`]). With one, the prompt's turns, the variants
    /// and the conditions come from it and must not be given here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<crate::experiment::dataset::DatasetSpec>,
    /// The KV cache's number types (f16 unless set; `q8_0`, `q4_0`… shrink the cache). They
    /// change the numbers a run measures, so they belong to the experiment.
    #[serde(skip_serializing_if = "crate::engine::CacheTypes::is_default")]
    pub cache: crate::engine::CacheTypes,
}

impl Default for ExperimentSpec {
    fn default() -> Self {
        ExperimentSpec {
            name: "untitled".into(),
            description: String::new(),
            prompt: PromptSpec::default(),
            variants: Vec::new(),
            needle_span: None,
            conditions: Vec::new(),
            generation: GenerationSpec::default(),
            probes: Vec::new(),
            top_k: 10,
            score_baselines: true,
            dataset: None,
            cache: crate::engine::CacheTypes::default(),
        }
    }
}

/// The seed experiment, as shipped in `assets/experiments/seed-short.json`.
const SEED_JSON: &str = include_str!("../../../assets/experiments/seed-short.json");

impl ExperimentSpec {
    /// The seed experiment (the default in the app).
    pub fn seed() -> ExperimentSpec {
        ExperimentSpec::from_json(SEED_JSON).expect("the shipped seed experiment is valid")
    }

    /// Reads a spec from JSON, with a message that says where it went wrong (a misspelled
    /// field is named, with the fields that exist). A UTF-8 byte order mark is skipped.
    pub fn from_json(text: &str) -> Result<ExperimentSpec, SpecError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
        upgrade_conditions(&mut value);
        let spec: ExperimentSpec =
            serde_json::from_value(value).map_err(|e| SpecError::Json(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads an experiment file: a regular file of at most [`MAX_SPEC_BYTES`], UTF-8 JSON.
    /// Errors name the file.
    pub fn from_file(path: &std::path::Path) -> Result<ExperimentSpec, String> {
        let shown = path.display();
        let text = read_text_file(path, MAX_SPEC_BYTES, "an experiment")?;
        ExperimentSpec::from_json(&text).map_err(|e| format!("in {shown}: {e}"))
    }

    /// Checks the spec against the model it is about to run on, before anything is allocated:
    /// the tokens generated must fit the model's trained context, and what a run holds (the
    /// model's `weights` bytes, the KV cache of all sequences at `kv_bytes_per_cell` a token,
    /// and the host copies of prompt caches: [`crate::experiment::memory::RunMemory`]) must fit
    /// in `memory` bytes when that is known.
    pub fn check_fits(
        &self,
        n_ctx_train: u32,
        kv_bytes_per_cell: u64,
        weights: u64,
        memory: Option<u64>,
    ) -> Result<(), SpecError> {
        let max = self.generation.max_tokens;
        if n_ctx_train > 0 && max > n_ctx_train as usize {
            return Err(SpecError::Generation(format!(
                "max_tokens is {max}, more than the model's trained context of {n_ctx_train} tokens"
            )));
        }
        // The prompt's length is not known before tokenizing: guessed from its text.
        let need = crate::experiment::memory::RunMemory::of(self, None, kv_bytes_per_cell, weights);
        if let Some(memory) = memory
            && !need.fits(Some(memory))
        {
            let mib = |b: Option<u64>| {
                b.map_or("more than 16 EiB".into(), |b| format!("{} MiB", b >> 20))
            };
            return Err(SpecError::Generation(format!(
                "a run of {} sequences of up to {max} generated tokens needs about {} (weights {}, \
                 KV cache {}, prompt copies {}), more than this machine's {} MiB of memory: ask \
                 for fewer tokens or conditions, a shorter prompt, or a q8_0 cache",
                need.n_seq,
                mib(need.total()),
                mib(Some(need.weights)),
                mib(need.kv_cache),
                mib(need.prompt_copies),
                memory >> 20
            )));
        }
        Ok(())
    }

    /// The sequences a grid run of this spec uses: one baseline per variant, one per distinct
    /// condition (conditions that run as one share a sequence, see [`shared_runs`]).
    pub fn n_sequences(&self) -> usize {
        self.variants.len() + distinct_runs(&self.conditions)
    }

    /// Cells a sequence needs after its prompt: its generation, or an expected answer being
    /// scored teacher-forced, whichever is longer (an answer has at most one token per byte,
    /// plus one). A dataset's answers are its templates filled with its longest field, an upper
    /// bound. The run's plan and the memory estimate both size the cache with this.
    pub fn continuation_cells(&self) -> usize {
        let answer = match &self.dataset {
            Some(d) => {
                let field = (d.needles.iter())
                    .flat_map(|n| n.fields.values().chain([&n.needle, &n.name]))
                    .map(String::len)
                    .max()
                    .unwrap_or(0);
                (d.expected.iter())
                    .map(|t| {
                        let holes = t.matches('{').count();
                        t.len().saturating_add(holes.saturating_mul(field))
                    })
                    .max()
            }
            None => (self.variants.iter())
                .flat_map(|v| &v.expected)
                .map(String::len)
                .max(),
        };
        let answer = answer.map_or(0, |a| a.saturating_add(1));
        self.generation.max_tokens.max(answer)
    }

    /// Checks what can be checked without a model.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(data) = &self.dataset {
            if !self.variants.is_empty() || !self.conditions.is_empty() {
                return Err(SpecError::Dataset(
                    "an experiment with a dataset takes its variants and conditions from it: \
                     leave `variants` and `conditions` out"
                        .into(),
                ));
            }
            data.validate()?;
            return self.check_generation();
        }
        if !self
            .prompt
            .turns
            .iter()
            .any(|t| t.content.contains(NEEDLE_PLACEHOLDER))
        {
            return Err(SpecError::NoPlaceholder);
        }
        let names = self.variant_names()?;
        self.check_conditions(&names)?;
        if let Some(s) = self.needle_span
            && s.is_empty()
        {
            return Err(SpecError::Span(format!(
                "the needle span {}..{} is empty",
                s.start, s.end
            )));
        }
        self.check_generation()
    }

    /// The variants' names, checked: at least one (two without an explicit needle span),
    /// none empty, no two alike.
    fn variant_names(&self) -> Result<BTreeSet<&str>, SpecError> {
        if self.variants.is_empty() {
            return Err(SpecError::Variants("the experiment has no variants".into()));
        }
        if self.variants.len() < 2 && self.needle_span.is_none() {
            return Err(SpecError::Variants(
                "with one variant the needle span must be given (it is found where variants differ)"
                    .into(),
            ));
        }
        let mut names = BTreeSet::new();
        for v in &self.variants {
            if v.name.trim().is_empty() {
                return Err(SpecError::Variants("a variant has an empty name".into()));
            }
            if !names.insert(v.name.as_str()) {
                return Err(SpecError::Variants(format!(
                    "two variants are named {:?}",
                    v.name
                )));
            }
        }
        Ok(names)
    }

    /// Each condition names existing variants and an op that can act at its site.
    fn check_conditions(&self, names: &BTreeSet<&str>) -> Result<(), SpecError> {
        for (index, c) in self.conditions.iter().enumerate() {
            let err = |reason: String| SpecError::Condition {
                index,
                label: c.row_label(),
                reason,
            };
            if !names.contains(c.variant.as_str()) {
                return Err(err(format!("there is no variant named {:?}", c.variant)));
            }
            if let Op::Transplant { from } = &c.op
                && !names.contains(from.as_str())
            {
                return Err(err(format!("there is no donor variant named {from:?}")));
            }
            if let Op::Mean { over } = &c.op
                && let Some(v) = over.iter().find(|v| !names.contains(v.as_str()))
            {
                return Err(err(format!(
                    "the mean is over {v:?}, which is not a variant"
                )));
            }
            if let Some(v) = c
                .against
                .iter()
                .find(|v| !names.contains(v.as_str()) || **v == c.variant)
            {
                return Err(err(format!(
                    "it is judged against {v:?}, which is not another variant"
                )));
            }
            check_site(&c.op, &c.site).map_err(err)?;
        }
        Ok(())
    }

    /// Generation settings, probes and the number of sequences are in range.
    fn check_generation(&self) -> Result<(), SpecError> {
        if self.generation.max_tokens == 0 {
            return Err(SpecError::Generation(
                "max_tokens must be at least 1".into(),
            ));
        }
        if self.generation.max_tokens > MAX_TOKENS_LIMIT {
            return Err(SpecError::Generation(format!(
                "max_tokens is {}, more than kvlab generates ({MAX_TOKENS_LIMIT})",
                self.generation.max_tokens
            )));
        }
        if self.conditions.len() > MAX_CONDITIONS {
            return Err(SpecError::Variants(format!(
                "{} conditions; a grid holds at most {MAX_CONDITIONS}",
                self.conditions.len()
            )));
        }
        let n_seq = self.n_sequences();
        if n_seq > MAX_SEQUENCES {
            return Err(SpecError::Variants(format!(
                "{} variants and {} distinct conditions make {n_seq} sequences; llama.cpp runs at most {MAX_SEQUENCES}",
                self.variants.len(),
                distinct_runs(&self.conditions)
            )));
        }
        if self.top_k > MAX_TOP_K {
            return Err(SpecError::Generation(format!(
                "top_k is {}, more than the {MAX_TOP_K} alternatives kvlab records",
                self.top_k
            )));
        }
        if let Some(i) = self.probes.iter().position(|p| p.is_empty()) {
            return Err(SpecError::Generation(format!(
                "probe {i} is empty: a probe is the text of a token, e.g. \" San\""
            )));
        }
        if let Sampling::Sample {
            temperature, top_p, ..
        } = self.generation.sampling
            && !(temperature > 0.0 && top_p > 0.0 && top_p <= 1.0)
        {
            return Err(SpecError::Generation(
                "sampling needs temperature > 0 and 0 < top_p <= 1".into(),
            ));
        }
        Ok(())
    }

    /// The seed's grid for the current variants: none, zero, transplant (from the next variant,
    /// cyclically) and remove, each for every variant, on the needle in all layers, K and V.
    pub fn seed_grid(&self) -> Vec<Condition> {
        let names: Vec<&str> = self.variants.iter().map(|v| v.name.as_str()).collect();
        let n = names.len();
        let mut out: Vec<Condition> = Vec::new();
        for op in [Op::None, Op::Zero] {
            out.extend(names.iter().map(|v| Condition::new(*v, op.clone())));
        }
        if n > 1 {
            out.extend(names.iter().enumerate().map(|(i, v)| {
                let from = names[(i + 1) % n].to_string();
                Condition::new(*v, Op::Transplant { from }).labelled("transplant (other variant)")
            }));
        }
        out.extend(names.iter().map(|v| Condition::new(*v, Op::Remove)));
        out
    }

    /// The variant with this name.
    pub fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|v| v.name == name)
    }
}

/// Whether an op can act at a site, in words a user can act on.
pub fn check_site(op: &Op, site: &Site) -> Result<(), String> {
    if *op == Op::Remove && (!site.layers.is_all() || site.part != KvPart::Both) {
        return Err(
            "remove takes whole cells out of the sequence, so it acts on all layers and \
             on K and V together; use zero to act on some layers or on K or V alone"
                .into(),
        );
    }
    if let Some(s) = site.span
        && s.is_empty()
    {
        return Err(format!("the span {}..{} is empty", s.start, s.end));
    }
    if let LayerSet::Some(s) = &site.layers
        && s.is_empty()
    {
        return Err("no layer is selected".into());
    }
    if let Some(heads) = &site.heads {
        if heads.is_empty() {
            return Err("no head is selected".into());
        }
        if *op == Op::Remove {
            return Err(
                "remove takes whole cells out of the sequence, so it acts on every \
                 head; use zero to act on some heads"
                    .into(),
            );
        }
    }
    if let Op::Noise { scale, .. } = op
        && !(scale.is_finite() && *scale >= 0.0)
    {
        return Err(format!("the noise scale is {scale}: give a number ≥ 0"));
    }
    Ok(())
}
