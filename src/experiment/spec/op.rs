//! *What* an intervention does to the cache rows it touches ([`Op`]), and the grid's conditions
//! that pair an op with a variant and a [`Site`]. Where it applies is [`Site`]'s job: the two
//! vary independently (a sweep keeps the op and moves the site), as TransformerLens keeps a
//! hook's function apart from its hook point.

use serde::{Deserialize, Serialize};

use super::site::Site;

/// What is done to the cache rows at a site before generating.
///
/// Read through [`RawOp`] so that a field the op does not take is an error, not silently
/// ignored (serde ignores unknown fields in the unit variants of internally tagged enums).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawOp")]
pub enum Op {
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
    /// Rows replaced by their mean over a reference set of variants at the same positions (the
    /// same position means the same RoPE phase, so the mean of K is meaningful): an in-
    /// distribution "average needle" instead of zero's out-of-distribution rows.
    Mean {
        /// The variants averaged (empty: every variant of the experiment).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        over: Vec<String>,
    },
    /// Gaussian noise added to the rows, σ = `scale` × the standard deviation of that layer's
    /// K (or V) values over the prompt (causal tracing uses 3), drawn from `seed`.
    Noise {
        /// σ in units of the layer's standard deviation.
        scale: f32,
        /// The random seed (the same seed draws the same noise).
        seed: u64,
    },
}

/// An op as written in a file, before its fields are checked against its kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOp {
    kind: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    over: Option<Vec<String>>,
    #[serde(default)]
    scale: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
}

/// The default noise scale: causal tracing's 3 σ.
pub const DEFAULT_NOISE_SCALE: f32 = 3.0;

impl TryFrom<RawOp> for Op {
    type Error = String;

    fn try_from(raw: RawOp) -> Result<Op, String> {
        let kind = raw.kind.as_str();
        // Each field is taken by one kind only.
        for (field, given, owner) in [
            ("from", raw.from.is_some(), "transplant"),
            ("over", raw.over.is_some(), "mean"),
            ("scale", raw.scale.is_some(), "noise"),
            ("seed", raw.seed.is_some(), "noise"),
        ] {
            if given && kind != owner {
                return Err(format!("{kind} takes no `{field}` (only {owner} does)"));
            }
        }
        Ok(match kind {
            "none" => Op::None,
            "zero" => Op::Zero,
            "remove" => Op::Remove,
            "transplant" => Op::Transplant {
                from: raw
                    .from
                    .ok_or("transplant needs `from`: the donor variant's name")?,
            },
            "mean" => Op::Mean {
                over: raw.over.unwrap_or_default(),
            },
            "noise" => Op::Noise {
                scale: raw.scale.unwrap_or(DEFAULT_NOISE_SCALE),
                seed: raw.seed.unwrap_or(0),
            },
            other => {
                return Err(format!(
                    "unknown intervention `{other}`: expected none, zero, transplant, mean, noise or remove"
                ));
            }
        })
    }
}

impl Op {
    /// A short name for tables: "zero", "transplant from NY".
    pub fn short(&self) -> String {
        match self {
            Op::None => "none".into(),
            Op::Zero => "zero".into(),
            Op::Transplant { from } => format!("transplant from {from}"),
            Op::Remove => "remove".into(),
            Op::Mean { over } if over.is_empty() => "mean".into(),
            Op::Mean { over } => format!("mean of {}", over.join(",")),
            Op::Noise { scale, seed } => format!("noise {scale}σ (seed {seed})"),
        }
    }

    /// Reads what [`Op::short`] wrote (results of session format 1 kept only that text).
    pub fn from_short(text: &str) -> Option<Op> {
        Some(match text {
            "none" => Op::None,
            "zero" => Op::Zero,
            "remove" => Op::Remove,
            _ => Op::Transplant {
                from: text.strip_prefix("transplant from ")?.to_string(),
            },
        })
    }

    /// Whether the op edits row contents (as opposed to the control, or removing whole cells).
    pub fn edits_rows(&self) -> bool {
        !matches!(self, Op::None | Op::Remove)
    }
}

/// One cell of the grid: a variant's prompt with an op applied at a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Row label in the grid; conditions of different variants with the same label share a row.
    /// Default: derived from the op and its site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The variant whose prompt is used.
    pub variant: String,
    /// What is done to the cache.
    pub op: Op,
    /// Where (default: the needle, every layer, K and V).
    #[serde(default, skip_serializing_if = "Site::is_default")]
    pub site: Site,
    /// The variants this cell is judged against (its preference is its own variant's answers
    /// over the best of these). Empty: every other variant. A dataset packs many items into
    /// one grid; each cell is judged against its own item's partner only, which also keeps
    /// scoring linear in the number of items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub against: Vec<String>,
}

impl Condition {
    /// `op` on `variant`'s needle, in every layer, K and V.
    pub fn new(variant: impl Into<String>, op: Op) -> Condition {
        Condition {
            label: None,
            variant: variant.into(),
            op,
            site: Site::default(),
            against: Vec::new(),
        }
    }

    /// The same condition at another site.
    pub fn at(mut self, site: Site) -> Condition {
        self.site = site;
        self
    }

    /// The same condition with an explicit row label.
    pub fn labelled(mut self, label: impl Into<String>) -> Condition {
        self.label = Some(label.into());
        self
    }

    /// The variants it is judged between: its own, then those it is judged against (all of
    /// `variants` when it names none).
    pub fn judged<'a>(&'a self, variants: &[&'a str]) -> Vec<&'a str> {
        if self.against.is_empty() {
            return variants.to_vec();
        }
        std::iter::once(self.variant.as_str())
            .chain(self.against.iter().map(String::as_str))
            .collect()
    }

    /// Whether `other` starts from the same cache as this one and so generates the same
    /// tokens: the same op on the same variant at the same site (`none` at any site). Labels
    /// and whom a condition is judged against only change how its scores are read, so a run
    /// computes such conditions once (see [`shared_runs`]).
    pub fn runs_as(&self, other: &Condition) -> bool {
        self.variant == other.variant
            && self.op == other.op
            && (self.op == Op::None || self.site == other.site)
    }

    /// The row label: the explicit one, or one derived from the op and its site.
    pub fn row_label(&self) -> String {
        if let Some(l) = &self.label {
            return l.clone();
        }
        let mut s = self.op.short();
        if self.op != Op::None {
            s.push_str(&self.site.suffix());
        }
        s
    }
}

/// Per condition, the index of the first condition it runs as ([`Condition::runs_as`]): its
/// own index when it is the first of its kind. A grid runs one sequence per first condition, so
/// a dataset's items that edit the same needle the same way (one needle, many partners) share
/// one generation.
pub fn shared_runs(conditions: &[Condition]) -> Vec<usize> {
    let mut firsts: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(conditions.len());
    for (i, c) in conditions.iter().enumerate() {
        match firsts.iter().find(|&&f| conditions[f].runs_as(c)) {
            Some(&f) => out.push(f),
            None => {
                firsts.push(i);
                out.push(i);
            }
        }
    }
    out
}

/// How many sequences `conditions` run in (their first conditions, see [`shared_runs`]).
pub fn distinct_runs(conditions: &[Condition]) -> usize {
    let runs = shared_runs(conditions);
    runs.iter().enumerate().filter(|&(i, &f)| i == f).count()
}
