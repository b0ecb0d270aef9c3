//! The experiment a user designs: prompt, variants, needle, conditions, generation settings.
//! Saved as JSON; every field has a default so older or hand-written specs stay readable.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::engine::KvPart;

/// The most tokens a spec may ask to generate: more than any model's context, and small enough
/// that context sizes computed from it never overflow.
pub const MAX_TOKENS_LIMIT: usize = 1 << 20;
/// The most sequences llama.cpp runs in one context (`LLAMA_MAX_SEQ`): a grid runs one per
/// variant and one per condition.
pub const MAX_SEQUENCES: usize = 256;
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
}

/// How the turns become the prompt text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptMode {
    /// Role labels and blank lines, no chat template (the seed's way):
    /// `User: …\n\nAssistant: …\n\nAssistant:`.
    #[default]
    Plain,
    /// The model's own Jinja chat template from the GGUF, rendered in a sandbox (with its
    /// default system prompt, if it has one), as the model's authors intended.
    ChatTemplate,
    /// llama.cpp's built-in renderer for the template's family (it recognizes common families
    /// and formats them itself; it may leave out a template's default system prompt).
    ChatBuiltin,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// The text; may contain `{needle}`.
    pub content: String,
}

/// The prompt: turns and how to render them. Generation continues as the assistant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// Plain text or chat template.
    pub mode: PromptMode,
    /// The conversation so far.
    pub turns: Vec<Turn>,
}

impl Default for PromptSpec {
    fn default() -> Self {
        PromptSpec {
            mode: PromptMode::Plain,
            turns: vec![Turn {
                role: "user".into(),
                content: "I am flying to {needle} city.".into(),
            }],
        }
    }
}

/// One filling of the needle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Short name (column header), e.g. `SF`.
    pub name: String,
    /// The text put in place of `{needle}`.
    pub needle: String,
    /// Answers this variant's prompt should get, e.g. `" Here are some historical places to
    /// visit in San Francisco:"`; scored teacher-forced under every condition. Tokenized as
    /// written: a leading space matters after a plain `Assistant:` label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected: Vec<String>,
    /// Words that mark this variant in generated text (counted case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
}

/// A half-open range of token positions `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// First position.
    pub start: usize,
    /// One past the last position.
    pub end: usize,
}

impl Span {
    /// The positions in the span.
    pub fn positions(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
    /// Number of positions.
    pub fn len(self) -> usize {
        self.end.saturating_sub(self.start)
    }
    /// Whether the span holds no position.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len() == 1 {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}..{}", self.start, self.end)
        }
    }
}

/// Which layers an intervention touches: all, or a set. Written as `"all"`, `"0-15"`,
/// `"0,3,7-9"` or a JSON list of numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LayerSet {
    /// Every layer.
    #[default]
    All,
    /// These layers (sorted, no repeats).
    Some(BTreeSet<u32>),
}

impl LayerSet {
    /// Parses `"all"`, `"3"`, `"0-15"`, `"0,3,7-9"`.
    pub fn parse(text: &str) -> Result<LayerSet, SpecError> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("all") || t.is_empty() {
            return Ok(LayerSet::All);
        }
        let bad = || SpecError::Layers(text.to_string());
        let mut set = BTreeSet::new();
        for part in t.split(',') {
            let part = part.trim();
            if let Some((a, b)) = part.split_once('-') {
                let a: u32 = a.trim().parse().map_err(|_| bad())?;
                let b: u32 = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 100_000 {
                    return Err(bad());
                }
                set.extend(a..=b);
            } else {
                set.insert(part.parse().map_err(|_| bad())?);
            }
        }
        Ok(LayerSet::Some(set))
    }

    /// The layers, given how many the model has.
    pub fn resolve(&self, n_layer: u32) -> Vec<u32> {
        match self {
            LayerSet::All => (0..n_layer).collect(),
            LayerSet::Some(s) => s.iter().copied().collect(),
        }
    }

    /// Whether every layer of a model with `n_layer` layers is selected.
    pub fn covers_all(&self, n_layer: u32) -> bool {
        match self {
            LayerSet::All => true,
            LayerSet::Some(s) => (0..n_layer).all(|l| s.contains(&l)),
        }
    }

    /// The largest layer named, if any.
    pub fn max(&self) -> Option<u32> {
        match self {
            LayerSet::All => None,
            LayerSet::Some(s) => s.iter().next_back().copied(),
        }
    }
}

impl fmt::Display for LayerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let LayerSet::Some(set) = self else {
            return write!(f, "all");
        };
        let v: Vec<u32> = set.iter().copied().collect();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            parts.push(if i == j {
                v[i].to_string()
            } else {
                format!("{}-{}", v[i], v[j])
            });
            i = j + 1;
        }
        write!(f, "{}", parts.join(","))
    }
}

impl Serialize for LayerSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for LayerSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<u32>),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => LayerSet::parse(&t).map_err(serde::de::Error::custom),
            Raw::List(l) => Ok(LayerSet::Some(l.into_iter().collect())),
        }
    }
}

/// What is done to the cache at the span before generating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Intervention {
    /// Nothing: the control.
    None,
    /// Rows set to zero (the attention logit of those keys becomes 0, not -inf).
    Zero,
    /// Rows copied from another variant's cache at the same positions.
    Transplant {
        /// The donor variant's name.
        from: String,
    },
    /// The cells leave the sequence (masked from attention; later positions unchanged).
    Remove,
}

impl Intervention {
    /// A short name for tables.
    pub fn short(&self) -> String {
        match self {
            Intervention::None => "none".into(),
            Intervention::Zero => "zero".into(),
            Intervention::Transplant { from } => format!("transplant from {from}"),
            Intervention::Remove => "remove".into(),
        }
    }
}

fn default_part() -> KvPart {
    KvPart::Both
}

/// One cell of the grid: a variant's prompt with an intervention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Row label in the grid; conditions of different variants with the same label share a row.
    /// Default: derived from the intervention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The variant whose prompt is used.
    pub variant: String,
    /// What is done to the cache.
    pub intervention: Intervention,
    /// Layers touched (default all).
    #[serde(default)]
    pub layers: LayerSet,
    /// K, V or both (default both).
    #[serde(default = "default_part")]
    pub part: KvPart,
    /// Positions touched (default: the needle span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
}

impl Condition {
    /// The row label: the explicit one, or one derived from the intervention and its scope.
    pub fn row_label(&self) -> String {
        if let Some(l) = &self.label {
            return l.clone();
        }
        let mut s = self.intervention.short();
        if self.intervention != Intervention::None {
            if self.layers != LayerSet::All {
                s.push_str(&format!(" [layers {}]", self.layers));
            }
            if self.part != KvPart::Both {
                s.push_str(match self.part {
                    KvPart::K => " [K]",
                    _ => " [V]",
                });
            }
            if let Some(span) = self.span {
                s.push_str(&format!(" @{span}"));
            }
        }
        s
    }
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
        }
    }
}

/// Reads a text file that a user names (an experiment, a session): it must be a regular file
/// (a FIFO would block, `/dev/zero` never ends) of at most `max` bytes, in UTF-8 (a byte order
/// mark is allowed). `what` names the kind of file in messages ("an experiment").
pub fn read_text_file(path: &std::path::Path, max: u64, what: &str) -> Result<String, String> {
    use std::io::Read;
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read {what} {shown}: {e}");
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if let Some(kind) = crate::gguf::not_a_regular_file(&meta) {
        return Err(format!("{shown} is {kind}, not {what} file"));
    }
    let too_big = || {
        format!(
            "{shown} is larger than {} MiB, too large for {what} file",
            max >> 20
        )
    };
    if meta.len() > max {
        return Err(too_big());
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    let mut text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{shown} is not UTF-8 text (invalid byte at {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..3);
    }
    Ok(text)
}

/// Turns a role name into the plain-text label (`user` → `User`).
fn role_label(role: &str) -> String {
    let mut c = role.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The seed experiment, as shipped in `assets/experiments/seed-short.json`.
const SEED_JSON: &str = include_str!("../../assets/experiments/seed-short.json");

impl ExperimentSpec {
    /// The seed experiment (the default in the app).
    pub fn seed() -> ExperimentSpec {
        ExperimentSpec::from_json(SEED_JSON).expect("the shipped seed experiment is valid")
    }

    /// Reads a spec from JSON, with a message that says where it went wrong (a misspelled
    /// field is named, with the fields that exist). A UTF-8 byte order mark is skipped.
    pub fn from_json(text: &str) -> Result<ExperimentSpec, SpecError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let spec: ExperimentSpec =
            serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
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
    /// the tokens generated must fit the model's trained context, and the KV cache of all
    /// sequences (`kv_bytes_per_cell` per token) must fit in `memory` bytes when that is known.
    pub fn check_fits(
        &self,
        n_ctx_train: u32,
        kv_bytes_per_cell: u64,
        memory: Option<u64>,
    ) -> Result<(), SpecError> {
        let max = self.generation.max_tokens;
        if n_ctx_train > 0 && max > n_ctx_train as usize {
            return Err(SpecError::Generation(format!(
                "max_tokens is {max}, more than the model's trained context of {n_ctx_train} tokens"
            )));
        }
        let n_seq = (self.variants.len() + self.conditions.len()) as u64;
        // The prompt's length is not known before tokenizing: about four characters a token.
        let prompt: usize = self
            .prompt
            .turns
            .iter()
            .map(|t| t.content.len() + 8)
            .sum::<usize>()
            + self
                .variants
                .iter()
                .map(|v| v.needle.len())
                .max()
                .unwrap_or(0);
        let cells = crate::gguf::kv_cells_for_run(n_seq, prompt as u64 / 4, max as u64);
        let bytes = cells.saturating_mul(kv_bytes_per_cell);
        if let Some(memory) = memory
            && bytes > memory
        {
            return Err(SpecError::Generation(format!(
                "the KV cache for {n_seq} sequences of up to {max} generated tokens needs about {} MiB, more than this machine's {} MiB of memory: ask for fewer tokens or conditions",
                bytes >> 20,
                memory >> 20
            )));
        }
        Ok(())
    }

    /// Checks what can be checked without a model.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !self
            .prompt
            .turns
            .iter()
            .any(|t| t.content.contains(NEEDLE_PLACEHOLDER))
        {
            return Err(SpecError::NoPlaceholder);
        }
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
        for (index, c) in self.conditions.iter().enumerate() {
            let err = |reason: String| SpecError::Condition {
                index,
                label: c.row_label(),
                reason,
            };
            if !names.contains(c.variant.as_str()) {
                return Err(err(format!("there is no variant named {:?}", c.variant)));
            }
            if let Intervention::Transplant { from } = &c.intervention
                && !names.contains(from.as_str())
            {
                return Err(err(format!("there is no donor variant named {from:?}")));
            }
            if c.intervention == Intervention::Remove
                && (c.layers != LayerSet::All || c.part != KvPart::Both)
            {
                return Err(err(
                    "remove takes whole cells out of the sequence, so it acts on all layers and \
                     on K and V together; use zero to act on some layers or on K or V alone"
                        .into(),
                ));
            }
            if let Some(s) = c.span
                && s.is_empty()
            {
                return Err(err(format!("the span {}..{} is empty", s.start, s.end)));
            }
            if let LayerSet::Some(s) = &c.layers
                && s.is_empty()
            {
                return Err(err("no layer is selected".into()));
            }
        }
        if let Some(s) = self.needle_span
            && s.is_empty()
        {
            return Err(SpecError::Span(format!(
                "the needle span {}..{} is empty",
                s.start, s.end
            )));
        }
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
        let n_seq = self.variants.len() + self.conditions.len();
        if n_seq > MAX_SEQUENCES {
            return Err(SpecError::Variants(format!(
                "{} variants and {} conditions make {n_seq} sequences; llama.cpp runs at most {MAX_SEQUENCES}",
                self.variants.len(),
                self.conditions.len()
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
        let n = self.variants.len();
        let mut out = Vec::new();
        // Per variant index: the condition's label and intervention, if it applies.
        type Kind = fn(&ExperimentSpec, usize) -> Option<(Option<String>, Intervention)>;
        let kinds: [Kind; 4] = [
            |_, _| Some((None, Intervention::None)),
            |_, _| Some((None, Intervention::Zero)),
            |s, i| {
                let n = s.variants.len();
                (n > 1).then(|| {
                    (
                        Some("transplant (other variant)".to_string()),
                        Intervention::Transplant {
                            from: s.variants[(i + 1) % n].name.clone(),
                        },
                    )
                })
            },
            |_, _| Some((None, Intervention::Remove)),
        ];
        for kind in kinds {
            for i in 0..n {
                if let Some((label, intervention)) = kind(self, i) {
                    out.push(Condition {
                        label,
                        variant: self.variants[i].name.clone(),
                        intervention,
                        layers: LayerSet::All,
                        part: KvPart::Both,
                        span: None,
                    });
                }
            }
        }
        out
    }

    /// The variant with this name.
    pub fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|v| v.name == name)
    }

    /// The turns with the needle filled in for one variant.
    pub fn filled_turns(&self, variant: &Variant) -> Vec<(String, String)> {
        self.prompt
            .turns
            .iter()
            .map(|t| {
                (
                    t.role.clone(),
                    t.content.replace(NEEDLE_PLACEHOLDER, &variant.needle),
                )
            })
            .collect()
    }

    /// The plain-text prompt for one variant: `Role: content` turns separated by blank lines,
    /// then the assistant's label, which generation continues.
    pub fn plain_prompt(&self, variant: &Variant) -> String {
        let mut parts: Vec<String> = self
            .filled_turns(variant)
            .into_iter()
            .map(|(role, content)| format!("{}: {}", role_label(&role), content))
            .collect();
        parts.push(format!("{}:", role_label("assistant")));
        parts.join("\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_variant_spec() -> ExperimentSpec {
        ExperimentSpec {
            variants: vec![
                Variant {
                    name: "SF".into(),
                    needle: "SF".into(),
                    expected: vec![],
                    keywords: vec![],
                },
                Variant {
                    name: "NY".into(),
                    needle: "NY".into(),
                    expected: vec![],
                    keywords: vec![],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn layer_sets_parse_and_print() {
        assert_eq!(LayerSet::parse("all").unwrap(), LayerSet::All);
        let s = LayerSet::parse("0-3, 7,9-10").unwrap();
        assert_eq!(s.resolve(30), vec![0, 1, 2, 3, 7, 9, 10]);
        assert_eq!(s.to_string(), "0-3,7,9-10");
        assert_eq!(s.max(), Some(10));
        assert!(LayerSet::parse("3-1").is_err());
        assert!(LayerSet::parse("x").is_err());
        assert!(LayerSet::parse("0-29").unwrap().covers_all(30));
        let json: LayerSet = serde_json::from_str("[2, 1]").unwrap();
        assert_eq!(json.to_string(), "1-2");
    }

    #[test]
    fn plain_prompt_has_role_labels_and_blank_lines() {
        let mut spec = two_variant_spec();
        spec.prompt.turns = vec![
            Turn {
                role: "user".into(),
                content: "To {needle}.".into(),
            },
            Turn {
                role: "assistant".into(),
                content: "Ok.".into(),
            },
        ];
        assert_eq!(
            spec.plain_prompt(&spec.variants[1]),
            "User: To NY.\n\nAssistant: Ok.\n\nAssistant:"
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let mut spec = two_variant_spec();
        spec.prompt.turns[0].content = "no placeholder".into();
        assert_eq!(spec.validate(), Err(SpecError::NoPlaceholder));

        let mut spec = two_variant_spec();
        spec.conditions.push(Condition {
            label: None,
            variant: "SF".into(),
            intervention: Intervention::Remove,
            layers: LayerSet::parse("0-3").unwrap(),
            part: KvPart::Both,
            span: None,
        });
        let msg = spec.validate().unwrap_err().to_string();
        assert!(msg.contains("all layers"), "{msg}");

        let mut spec = two_variant_spec();
        spec.conditions.push(Condition {
            label: None,
            variant: "SF".into(),
            intervention: Intervention::Transplant { from: "LA".into() },
            layers: LayerSet::All,
            part: KvPart::Both,
            span: None,
        });
        assert!(spec.validate().unwrap_err().to_string().contains("\"LA\""));
    }

    #[test]
    fn hostile_specs_are_refused_with_the_cause() {
        let seed = SEED_JSON;
        let err = |text: &str| ExperimentSpec::from_json(text).unwrap_err().to_string();
        let typo = seed.replacen("\"max_tokens\"", "\"max_token\"", 1);
        let e = err(&typo);
        assert!(e.contains("unknown field `max_token`"), "{e}");
        let e = err(&seed.replacen("\"probes\": [", "\"probes\": [\"\", ", 1));
        assert!(e.contains("probe 0 is empty"), "{e}");
        let e = err(&seed.replacen("\"max_tokens\": 100", "\"max_tokens\": 1000000000", 1));
        assert!(e.contains("max_tokens is 1000000000"), "{e}");
        let e = err(&seed.replacen(
            "\"max_tokens\": 100",
            "\"max_tokens\": 18446744073709551615",
            1,
        ));
        assert!(e.contains("max_tokens"), "{e}");
        let e = err(&seed.replacen("\"top_k\": 10", "\"top_k\": 4000000000", 1));
        assert!(e.contains("top_k is 4000000000"), "{e}");
        // A byte order mark is skipped.
        assert!(ExperimentSpec::from_json(&format!("\u{feff}{seed}")).is_ok());
        let spec = ExperimentSpec::seed();
        let e = spec.check_fits(64, 23_040, None).unwrap_err().to_string();
        assert!(e.contains("trained context of 64 tokens"), "{e}");
        let e = spec
            .check_fits(8192, 23_040, Some(1 << 20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MiB of memory"), "{e}");
        assert!(spec.check_fits(8192, 23_040, Some(1 << 40)).is_ok());
    }

    #[test]
    fn json_errors_are_explained() {
        let err = ExperimentSpec::from_json("{\"variants\": 3}").unwrap_err();
        assert!(matches!(err, SpecError::Json(_)));
        assert!(err.to_string().contains("not valid"));
    }

    #[test]
    fn seed_grid_covers_every_variant_and_intervention() {
        let spec = two_variant_spec();
        let grid = spec.seed_grid();
        assert_eq!(grid.len(), 8);
        assert!(grid.iter().any(|c| c.variant == "SF"
            && c.intervention == Intervention::Transplant { from: "NY".into() }));
        let mut with_grid = spec.clone();
        with_grid.conditions = grid;
        assert!(with_grid.validate().is_ok());
    }

    #[test]
    fn row_labels_describe_scope() {
        let c = Condition {
            label: None,
            variant: "SF".into(),
            intervention: Intervention::Zero,
            layers: LayerSet::parse("0-4").unwrap(),
            part: KvPart::K,
            span: None,
        };
        assert_eq!(c.row_label(), "zero [layers 0-4] [K]");
    }
}
