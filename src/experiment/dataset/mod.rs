//! Datasets: from anecdote to evidence. One grid on one prompt is an anecdote; a dataset is a
//! table of needles with fields, answer templates filled from those fields, the pairs of
//! needles to compare and several paraphrased prompts. Each (prompt template, pair) is one
//! item: the chosen conditions on the pair's first needle, judged against its partner.
//!
//! A dataset is the optional `dataset` part of an [`ExperimentSpec`]; it is checked here,
//! expanded into ordinary grids (`expand`), and its rows summarized with intervals
//! (`aggregate`). All of it is pure: no model.

mod aggregate;
mod expand;
mod results;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::spec::{NEEDLE_PLACEHOLDER, Op, Site, SpecError, Turn, check_site};

pub use aggregate::{
    Aggregate, Aggregates, HEADER, aggregate, aggregates, cells, title, to_csv, to_markdown,
    to_table,
};
pub use expand::{DatasetItem, Wave, expand, items, largest_wave};
pub use results::{DatasetResults, DatasetWave, ItemRow};

/// The placeholder a transplant's `from` names the item's partner with.
pub const PARTNER: &str = "{partner}";

/// A transplant's donor drawn per item from the needles that are neither the item's needle nor
/// its partner (a "resample" ablation: another needle's rows, not the one it is judged against).
/// The draw is fixed by the item's index, so a dataset always resamples the same way.
pub const RANDOM: &str = "{random}";

/// One needle and the fields its answers are written from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeedleRow {
    /// Short name (pairs and tables use it); default: the needle text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The text put in place of `{needle}` in the prompt templates.
    pub needle: String,
    /// Any other fields, e.g. `"city": "San Francisco"`, used as `{city}` in answer templates.
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
}

impl NeedleRow {
    /// Its name: the explicit one, or the needle text.
    pub fn name(&self) -> &str {
        if self.name.is_empty() {
            &self.needle
        } else {
            &self.name
        }
    }

    /// The value of a template field: `needle`, `name`, or one of its fields.
    pub fn field(&self, key: &str) -> Option<&str> {
        match key {
            "needle" => Some(&self.needle),
            "name" => Some(self.name()),
            _ => self.fields.get(key).map(String::as_str),
        }
    }

    /// `template` with every `{field}` filled from this row (unknown fields stay as written;
    /// validation refuses them first).
    pub fn fill(&self, template: &str) -> String {
        let mut out = template.to_string();
        for key in placeholders(template) {
            if let Some(v) = self.field(key) {
                out = out.replace(&format!("{{{key}}}"), v);
            }
        }
        out
    }
}

/// The `{field}` names in a template: braces around letters, digits and `_`.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('}') else { break };
        let key = &rest[..close];
        if !key.is_empty() && key.chars().all(|c| c.is_alphanumeric() || c == '_') {
            out.push(key);
            rest = &rest[close + 1..];
        }
    }
    out
}

/// Which ordered pairs (needle, partner) make items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pairs {
    /// Every ordered pair of distinct needles (n·(n−1) items per template).
    All,
    /// These pairs, by needle name: `[["SF", "NY"], ["NY", "SF"]]`.
    Listed(Vec<[String; 2]>),
}

/// A prompt template: turns with `{needle}`, rendered in the experiment's prompt mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplate {
    /// Its name in tables.
    pub name: String,
    /// The turns.
    pub turns: Vec<Turn>,
}

/// A condition applied to every item: an op at a site on the item's needle. A transplant's
/// `from` is `{partner}` (the item's other needle) or a needle's name; a mean's `over` names
/// needles (empty: every needle of the dataset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionTemplate {
    /// Row label; default: derived from the op and its site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// What is done to the cache.
    pub op: Op,
    /// Where (default: the needle, every layer, K and V).
    #[serde(default, skip_serializing_if = "Site::is_default")]
    pub site: Site,
}

impl ConditionTemplate {
    /// The row label: the explicit one, or the op's short name and its site.
    pub fn row_label(&self) -> String {
        if let Some(l) = &self.label {
            return l.clone();
        }
        let mut s = match &self.op {
            Op::Transplant { from } if from == PARTNER => "transplant from partner".into(),
            Op::Transplant { from } if from == RANDOM => "transplant from a random needle".into(),
            op => op.short(),
        };
        if self.op != Op::None {
            s.push_str(&self.site.suffix());
        }
        s
    }
}

/// A dataset: needles with fields, answer templates, pairs, prompt templates and conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// The needles.
    pub needles: Vec<NeedleRow>,
    /// Expected-answer templates, e.g. `" Here are some historical places to visit in
    /// {city}:"`, filled per needle and scored teacher-forced.
    pub expected: Vec<String>,
    /// Keyword templates, counted in generated text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// The pairs compared.
    pub pairs: Pairs,
    /// The prompt templates (paraphrases).
    pub templates: Vec<PromptTemplate>,
    /// The conditions run on every item.
    pub conditions: Vec<ConditionTemplate>,
}

impl DatasetSpec {
    /// The needle row with this name.
    pub fn needle(&self, name: &str) -> Option<&NeedleRow> {
        self.needles.iter().find(|n| n.name() == name)
    }

    /// The ordered pairs of needle indices, in item order.
    pub fn pair_indices(&self) -> Vec<(usize, usize)> {
        let index = |name: &str| self.needles.iter().position(|n| n.name() == name);
        match &self.pairs {
            Pairs::All => (0..self.needles.len())
                .flat_map(|a| (0..self.needles.len()).map(move |b| (a, b)))
                .filter(|(a, b)| a != b)
                .collect(),
            Pairs::Listed(p) => p
                .iter()
                .filter_map(|[a, b]| Some((index(a)?, index(b)?)))
                .collect(),
        }
    }

    /// Checks everything that can be checked without a model; errors say what to fix.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |s: String| Err(SpecError::Dataset(s));
        let names = self.needle_names()?;
        for (what, list) in [
            ("expected answer", &self.expected),
            ("keyword", &self.keywords),
        ] {
            for t in list {
                for key in placeholders(t) {
                    if let Some(n) = self.needles.iter().find(|n| n.field(key).is_none()) {
                        return err(format!(
                            "the {what} {t:?} uses {{{key}}}, but needle {:?} has no field {key:?}",
                            n.name()
                        ));
                    }
                }
            }
        }
        if self.expected.is_empty() {
            return err("a dataset needs expected answers: items are judged by them".into());
        }
        self.check_pairs(&names)?;
        self.check_templates()?;
        self.check_conditions(&names)
    }

    /// Needle names: at least two, none empty, no two alike.
    fn needle_names(&self) -> Result<BTreeSet<&str>, SpecError> {
        if self.needles.len() < 2 {
            return Err(SpecError::Dataset(
                "a dataset needs at least two needles".into(),
            ));
        }
        let mut names = BTreeSet::new();
        for n in &self.needles {
            if n.needle.is_empty() || n.name().trim().is_empty() {
                return Err(SpecError::Dataset("a needle is empty".into()));
            }
            if !names.insert(n.name()) {
                return Err(SpecError::Dataset(format!(
                    "two needles are named {:?}",
                    n.name()
                )));
            }
        }
        Ok(names)
    }

    /// Listed pairs name two different existing needles; there is at least one pair.
    fn check_pairs(&self, names: &BTreeSet<&str>) -> Result<(), SpecError> {
        if let Pairs::Listed(pairs) = &self.pairs {
            if pairs.is_empty() {
                return Err(SpecError::Dataset("the dataset lists no pairs".into()));
            }
            for [a, b] in pairs {
                if let Some(x) = [a, b].into_iter().find(|x| !names.contains(x.as_str())) {
                    return Err(SpecError::Dataset(format!(
                        "the pair [{a:?}, {b:?}] names {x:?}, which is not a needle"
                    )));
                }
                if a == b {
                    return Err(SpecError::Dataset(format!(
                        "the pair [{a:?}, {b:?}] compares a needle with itself"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every prompt template has a name (unique) and a `{needle}`.
    fn check_templates(&self) -> Result<(), SpecError> {
        if self.templates.is_empty() {
            return Err(SpecError::Dataset(
                "the dataset has no prompt templates".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for t in &self.templates {
            if !seen.insert(t.name.as_str()) || t.name.trim().is_empty() {
                return Err(SpecError::Dataset(format!(
                    "prompt template names must be distinct and not empty ({:?})",
                    t.name
                )));
            }
            if !t
                .turns
                .iter()
                .any(|x| x.content.contains(NEEDLE_PLACEHOLDER))
            {
                return Err(SpecError::Dataset(format!(
                    "the prompt template {:?} has no {{needle}} placeholder",
                    t.name
                )));
            }
        }
        Ok(())
    }

    /// Conditions name existing needles (or `{partner}`) and act where their op can.
    fn check_conditions(&self, names: &BTreeSet<&str>) -> Result<(), SpecError> {
        if self.conditions.is_empty() {
            return Err(SpecError::Dataset("the dataset has no conditions".into()));
        }
        for (index, c) in self.conditions.iter().enumerate() {
            let err = |reason: String| SpecError::Condition {
                index,
                label: c.row_label(),
                reason,
            };
            match &c.op {
                Op::Transplant { from } if from == RANDOM && self.needles.len() < 3 => {
                    return Err(err(format!(
                        "transplant from {RANDOM} draws a needle other than the item's two: it needs at least 3 needles"
                    )));
                }
                Op::Transplant { from }
                    if from != PARTNER && from != RANDOM && !names.contains(from.as_str()) =>
                {
                    return Err(err(format!(
                        "transplant from {from:?}: name a needle, or {PARTNER} for the item's partner, or {RANDOM}"
                    )));
                }
                Op::Mean { over } => {
                    if let Some(v) = over.iter().find(|v| !names.contains(v.as_str())) {
                        return Err(err(format!(
                            "the mean is over {v:?}, which is not a needle"
                        )));
                    }
                }
                _ => {}
            }
            check_site(&c.op, &c.site).map_err(err)?;
        }
        Ok(())
    }
}
