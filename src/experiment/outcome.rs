//! Judging a grid cell with numbers rather than by eye: which variant's expected answer the
//! intervened cache prefers, a verdict in words, a keyword tally, and near-tie warnings.

use serde::{Deserialize, Serialize};

/// Below this top-1/top-2 log-prob gap a greedy choice is a near-tie that numerical noise can flip.
pub const NEAR_TIE_GAP: f32 = 0.1;

/// |preference| below this is reported as undecided.
pub const UNDECIDED_BELOW: f64 = 0.05;

/// The teacher-forced score of one expected answer under one condition's cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectedScore {
    /// The variant the answer belongs to.
    pub variant: String,
    /// The answer text.
    pub answer: String,
    /// Sum of token log-probs.
    #[serde(with = "crate::experiment::floats")]
    pub sum: f64,
    /// Mean per token.
    #[serde(with = "crate::experiment::floats")]
    pub mean: f64,
    /// Per token log-probs.
    #[serde(with = "crate::experiment::floats")]
    pub per_token: Vec<f32>,
}

/// How often one variant's keywords occur in a generated text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeywordCount {
    /// The variant.
    pub variant: String,
    /// Occurrences of all its keywords.
    pub count: usize,
}

/// log(Σ exp(x)) — a variant's score over several acceptable answers.
fn log_sum_exp(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let xs: Vec<f64> = xs.collect();
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if xs.is_empty() || max == f64::NEG_INFINITY {
        return None;
    }
    Some(max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln())
}

/// A variant's score: the log of the total probability of its expected answers.
pub fn variant_score(scores: &[ExpectedScore], variant: &str) -> Option<f64> {
    log_sum_exp(
        scores
            .iter()
            .filter(|s| s.variant == variant)
            .map(|s| s.sum),
    )
}

/// Preference of a cell: its own variant's score minus the best other variant's, and that
/// other variant. `None` when either side has no expected answer.
pub fn preference(scores: &[ExpectedScore], own: &str, variants: &[&str]) -> Option<(f64, String)> {
    let own_score = variant_score(scores, own)?;
    let (other, other_score) = variants
        .iter()
        .filter(|v| **v != own)
        .filter_map(|v| variant_score(scores, v).map(|s| (v.to_string(), s)))
        .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))?;
    Some((own_score - other_score, other))
}

/// Which variant's expected answers a condition's cache prefers, by how much: the seed's table
/// in types. Shown as "keeps SF, +2.10", "flips to NY, −8.50" or "undecided, +0.01".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Verdict {
    /// The cache still prefers its own variant's answers.
    Keeps {
        /// The own variant.
        variant: String,
        /// Own answers' score minus the best other variant's (> 0).
        #[serde(with = "crate::experiment::floats")]
        preference: f64,
    },
    /// The cache prefers another variant's answers.
    FlipsTo {
        /// The variant whose answers it prefers.
        variant: String,
        /// Own answers' score minus that variant's (< 0).
        #[serde(with = "crate::experiment::floats")]
        preference: f64,
    },
    /// The scores are within [`UNDECIDED_BELOW`] of each other (or not comparable numbers).
    Undecided {
        /// Own answers' score minus the best other variant's.
        #[serde(with = "crate::experiment::floats")]
        preference: f64,
    },
}

impl Verdict {
    /// The verdict of a cell of variant `own` whose preference over `other` is `pref`.
    pub fn new(own: &str, pref: f64, other: &str) -> Verdict {
        if pref.is_nan() || pref.abs() < UNDECIDED_BELOW {
            Verdict::Undecided { preference: pref }
        } else if pref > 0.0 {
            Verdict::Keeps {
                variant: own.into(),
                preference: pref,
            }
        } else {
            Verdict::FlipsTo {
                variant: other.into(),
                preference: pref,
            }
        }
    }

    /// A one-word class for styling: "keeps", "flips" or "undecided".
    pub fn class(&self) -> &'static str {
        match self {
            Verdict::Keeps { .. } => "keeps",
            Verdict::FlipsTo { .. } => "flips",
            Verdict::Undecided { .. } => "undecided",
        }
    }

    /// The preference it was decided from.
    pub fn preference(&self) -> f64 {
        match self {
            Verdict::Keeps { preference, .. }
            | Verdict::FlipsTo { preference, .. }
            | Verdict::Undecided { preference } => *preference,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pref = self.preference();
        let sign = if pref < 0.0 { "−" } else { "+" };
        let magnitude = format!("{sign}{:.2}", pref.abs());
        match self {
            Verdict::Keeps { variant, .. } => write!(f, "keeps {variant}, {magnitude}"),
            Verdict::FlipsTo { variant, .. } => write!(f, "flips to {variant}, {magnitude}"),
            Verdict::Undecided { .. } => write!(f, "undecided, {magnitude}"),
        }
    }
}

/// Counts each variant's keywords in `text`, case-insensitively.
pub fn keyword_tally(text: &str, variants: &[(&str, &[String])]) -> Vec<KeywordCount> {
    let hay = text.to_lowercase();
    variants
        .iter()
        .map(|(name, words)| KeywordCount {
            variant: name.to_string(),
            count: words
                .iter()
                .filter(|w| !w.trim().is_empty())
                .map(|w| hay.matches(&w.to_lowercase()).count())
                .sum(),
        })
        .collect()
}

/// Whether a divergence at a step whose top-1/top-2 gaps were `gaps` is a near-tie.
pub fn is_fragile(gaps: &[f32]) -> bool {
    gaps.iter().any(|&g| g < NEAR_TIE_GAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(variant: &str, sum: f64) -> ExpectedScore {
        ExpectedScore {
            variant: variant.into(),
            answer: String::new(),
            sum,
            mean: sum,
            per_token: vec![],
        }
    }

    #[test]
    fn preference_is_own_minus_best_other() {
        let scores = [s("SF", -3.0), s("NY", -5.0), s("LA", -4.0)];
        let (p, other) = preference(&scores, "SF", &["SF", "NY", "LA"]).unwrap();
        assert!((p - 1.0).abs() < 1e-12);
        assert_eq!(other, "LA");
        let (p, _) = preference(&scores, "NY", &["SF", "NY", "LA"]).unwrap();
        assert!((p + 2.0).abs() < 1e-12);
        assert!(preference(&scores, "SF", &["SF"]).is_none());
    }

    #[test]
    fn several_answers_add_up_as_probabilities() {
        let scores = [
            s("SF", (0.25f64).ln()),
            s("SF", (0.25f64).ln()),
            s("NY", (0.5f64).ln()),
        ];
        let (p, _) = preference(&scores, "SF", &["SF", "NY"]).unwrap();
        assert!(p.abs() < 1e-12, "{p}");
    }

    #[test]
    fn verdicts_read_like_the_seed_table() {
        let v = |p| Verdict::new("SF", p, "NY").to_string();
        assert_eq!(v(2.104), "keeps SF, +2.10");
        assert_eq!(v(-8.5), "flips to NY, −8.50");
        assert_eq!(v(0.01), "undecided, +0.01");
        assert_eq!(v(f64::NAN), "undecided, +NaN");
    }

    #[test]
    fn keywords_are_counted_case_insensitively() {
        let sf = vec!["San Francisco".to_string(), "Golden Gate".to_string()];
        let ny = vec!["New York".to_string()];
        let t = keyword_tally(
            "the golden gate of San Francisco, not new york",
            &[("SF", &sf), ("NY", &ny)],
        );
        assert_eq!(t[0].count, 2);
        assert_eq!(t[1].count, 1);
    }

    #[test]
    fn near_ties_are_fragile() {
        assert!(is_fragile(&[0.05, 2.0]));
        assert!(!is_fragile(&[0.5, 2.0]));
    }
}
