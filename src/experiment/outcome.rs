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

/// The verdict in words, as the seed's table: "keeps SF, +2.10" or "flips to NY, −8.50".
pub fn verdict(own: &str, pref: f64, other: &str) -> String {
    let sign = if pref < 0.0 { "−" } else { "+" };
    let magnitude = format!("{sign}{:.2}", pref.abs());
    if pref.abs() < UNDECIDED_BELOW {
        format!("undecided, {magnitude}")
    } else if pref > 0.0 {
        format!("keeps {own}, {magnitude}")
    } else {
        format!("flips to {other}, {magnitude}")
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
        assert_eq!(verdict("SF", 2.104, "NY"), "keeps SF, +2.10");
        assert_eq!(verdict("SF", -8.5, "NY"), "flips to NY, −8.50");
        assert_eq!(verdict("SF", 0.01, "NY"), "undecided, +0.01");
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
