//! From measured numbers to results: where a condition's generation leaves its baseline and
//! whether that was a near-tie, which variant's answers its cache prefers and the verdict in
//! words, keyword counts, and a sweep item's point. No model and no context here, so every
//! judgement a result carries is unit-tested on hand-made numbers.

use crate::experiment::metrics;
use crate::experiment::outcome::{self, ExpectedScore};
use crate::experiment::results::{
    ConditionResult, ContinuationScore, Generation, VariantResult, Verdict,
};
use crate::experiment::spec::{Condition, ExperimentSpec, Span};
use crate::experiment::sweep::{SweepItem, SweepPoint};

use super::plan::Plan;
use super::prompts::PreparedPrompt;
use super::score::GridScores;

/// Each variant's prompt and baseline.
pub(crate) fn variant_results(
    prompts: &[PreparedPrompt],
    baselines: Vec<Generation>,
) -> Vec<VariantResult> {
    prompts
        .iter()
        .zip(baselines)
        .map(|(p, baseline)| VariantResult {
            name: p.name.clone(),
            prompt_text: p.text.clone(),
            tokens: p.tokens.clone(),
            baseline,
        })
        .collect()
}

/// Every planned condition's result, from its generation, its variant's baseline and its scores.
pub(crate) fn condition_results(
    plan: &Plan<'_>,
    generations: Vec<Generation>,
    baselines: &[Generation],
    scores: GridScores,
) -> Vec<ConditionResult> {
    plan.conditions
        .iter()
        .zip(generations)
        .zip(scores.scores.into_iter().zip(scores.expected))
        .map(|((c, generation), (scores, expected))| {
            let measured = Measured {
                generation,
                scores,
                expected,
            };
            condition_result(
                plan.spec,
                plan.condition(c),
                c.span,
                measured,
                &baselines[c.variant],
            )
        })
        .collect()
}

/// What was measured under one condition.
pub(crate) struct Measured {
    /// Its generation.
    pub generation: Generation,
    /// Each variant's baseline continuation, scored under its cache.
    pub scores: Vec<ContinuationScore>,
    /// Each expected answer, scored under its cache.
    pub expected: Vec<ExpectedScore>,
}

/// One condition's result (`span`: the positions it touched; `baseline`: its variant's).
pub(crate) fn condition_result(
    spec: &ExperimentSpec,
    c: &Condition,
    span: Span,
    measured: Measured,
    baseline: &Generation,
) -> ConditionResult {
    let Measured {
        generation,
        scores,
        expected,
    } = measured;
    let first_divergence = metrics::first_divergence(&generation.tokens, &baseline.tokens);
    let fragile = first_divergence.is_some_and(|i| {
        let gaps: Vec<f32> = [generation.steps.get(i), baseline.steps.get(i)]
            .into_iter()
            .flatten()
            .map(|s| s.gap)
            .collect();
        outcome::is_fragile(&gaps)
    });
    let names: Vec<&str> = spec.variants.iter().map(|v| v.name.as_str()).collect();
    let pref = outcome::preference(&expected, &c.variant, &c.judged(&names));
    let keywords = if spec.variants.iter().any(|v| !v.keywords.is_empty()) {
        let lists: Vec<(&str, &[String])> = spec
            .variants
            .iter()
            .map(|v| (v.name.as_str(), v.keywords.as_slice()))
            .collect();
        outcome::keyword_tally(&generation.text, &lists)
    } else {
        Vec::new()
    };
    ConditionResult {
        label: c.row_label(),
        variant: c.variant.clone(),
        op: c.op.clone(),
        site: c.site.clone(),
        against: c.against.clone(),
        span,
        generation,
        first_divergence,
        scores,
        verdict: pref
            .as_ref()
            .map(|(p, other)| Verdict::new(&c.variant, *p, other)),
        preference: pref.map(|(p, _)| p),
        expected,
        keywords,
        fragile,
    }
}

/// A sweep's point for `item` (`None`: the reference, no intervention) on variant `own`'s
/// prompt, from its scores:
/// per variant the log of the total probability of its measured continuations, and the
/// preference when the continuations are expected answers.
pub(crate) fn sweep_point(
    spec: &ExperimentSpec,
    own: &str,
    item: Option<&SweepItem>,
    expected: &[ExpectedScore],
    with_preference: bool,
    first_step_probes: Vec<f32>,
) -> SweepPoint {
    let scores = spec
        .variants
        .iter()
        .map(|v| outcome::variant_score(expected, &v.name).unwrap_or(f64::NEG_INFINITY))
        .collect();
    let names: Vec<&str> = spec.variants.iter().map(|v| v.name.as_str()).collect();
    let preference = if with_preference {
        outcome::preference(expected, own, &names).map(|p| p.0)
    } else {
        None
    };
    let (label, index, layer) = match item {
        None => ("no intervention".to_string(), 0, None),
        Some(it) => (it.label.clone(), it.index, it.layer),
    };
    SweepPoint {
        label,
        index,
        layer,
        preference,
        scores,
        first_step_probes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::results::{Alternative, Step};
    use crate::experiment::spec::{KvPart, LayerSet, Op, Site};
    use crate::runner::score::expected_score;

    /// A generation of `tokens` whose steps had top-1/top-2 gaps `gaps`.
    fn generation(tokens: &[i32], gaps: &[f32], text: &str) -> Generation {
        let alt = |id| Alternative {
            id,
            piece: String::new(),
            logprob: -1.0,
        };
        Generation {
            tokens: tokens.to_vec(),
            text: text.into(),
            steps: tokens
                .iter()
                .zip(gaps)
                .map(|(&id, &gap)| Step {
                    token: alt(id),
                    top: vec![alt(id)],
                    probes: Vec::new(),
                    gap,
                })
                .collect(),
        }
    }

    fn zero(variant: &str) -> Condition {
        Condition::new(variant, Op::Zero)
            .at(Site::layers(LayerSet::parse("0-3").unwrap(), KvPart::V))
    }

    /// Expected-answer scores: SF's answer at `sf`, NY's at `ny` (sums).
    fn answers(sf: f32, ny: f32) -> Vec<ExpectedScore> {
        vec![
            expected_score("SF", " in San Francisco", vec![sf]),
            expected_score("NY", " in New York", vec![ny]),
        ]
    }

    fn result(
        c: &Condition,
        g: Generation,
        base: &Generation,
        e: Vec<ExpectedScore>,
    ) -> ConditionResult {
        let measured = Measured {
            generation: g,
            scores: Vec::new(),
            expected: e,
        };
        condition_result(
            &ExperimentSpec::seed(),
            c,
            Span { start: 6, end: 7 },
            measured,
            base,
        )
    }

    #[test]
    fn a_divergence_at_a_near_tie_is_fragile() {
        let base = generation(&[1, 2, 3], &[1.0, 0.05, 1.0], "");
        let r = result(
            &zero("SF"),
            generation(&[1, 5, 3], &[1.0; 3], ""),
            &base,
            vec![],
        );
        assert_eq!(r.first_divergence, Some(1));
        assert!(r.fragile, "the baseline's step 1 was a near-tie");

        let base = generation(&[1, 2, 3], &[1.0; 3], "");
        let r = result(
            &zero("SF"),
            generation(&[1, 2, 4], &[1.0, 1.0, 0.09], ""),
            &base,
            vec![],
        );
        assert_eq!(r.first_divergence, Some(2));
        assert!(r.fragile, "the condition's step 2 was a near-tie");

        let r = result(
            &zero("SF"),
            generation(&[7, 2, 3], &[0.5; 3], ""),
            &base,
            vec![],
        );
        assert_eq!(r.first_divergence, Some(0));
        assert!(!r.fragile);

        let r = result(
            &zero("SF"),
            generation(&[1, 2, 3], &[0.0; 3], ""),
            &base,
            vec![],
        );
        assert_eq!(r.first_divergence, None);
        assert!(!r.fragile, "no divergence, nothing to be fragile about");
    }

    #[test]
    fn preference_and_verdict_compare_own_answers_with_the_others() {
        let base = generation(&[1], &[1.0], "");
        let g = || generation(&[1], &[1.0], "");
        let r = result(&zero("SF"), g(), &base, answers(-3.0, -5.0));
        assert_eq!(r.preference, Some(2.0));
        assert_eq!(r.verdict.as_ref().unwrap().to_string(), "keeps SF, +2.00");
        assert_eq!(r.expected.len(), 2);

        let r = result(&zero("NY"), g(), &base, answers(-3.0, -5.0));
        assert_eq!(r.preference, Some(-2.0));
        assert_eq!(
            r.verdict,
            Some(Verdict::FlipsTo {
                variant: "SF".into(),
                preference: -2.0
            })
        );

        let r = result(&zero("SF"), g(), &base, Vec::new());
        assert_eq!((r.preference, r.verdict), (None, None));
    }

    #[test]
    fn a_result_describes_its_condition_and_counts_keywords() {
        let base = generation(&[1], &[1.0], "");
        let g = generation(&[1], &[1.0], "Alcatraz, then the Golden Gate. Manhattan!");
        let r = result(&zero("SF"), g, &base, Vec::new());
        assert_eq!(r.label, "zero [layers 0-3] [V]");
        assert_eq!(r.condition().variant, "SF");
        assert_eq!(r.condition().op, Op::Zero);
        assert_eq!(r.site, zero("SF").site);
        assert_eq!(r.span, Span { start: 6, end: 7 });
        let counts: Vec<(&str, usize)> = r
            .keywords
            .iter()
            .map(|k| (k.variant.as_str(), k.count))
            .collect();
        assert_eq!(counts, [("SF", 2), ("NY", 1)]);
    }

    #[test]
    fn sweep_points_score_each_variant_and_prefer_when_asked() {
        let spec = ExperimentSpec::seed();
        let reference = sweep_point(&spec, "NY", None, &answers(-1.0, -4.0), true, vec![-0.5]);
        assert_eq!(reference.label, "no intervention");
        assert_eq!((reference.index, reference.layer), (0, None));
        assert_eq!(reference.scores, [-1.0, -4.0]);
        assert_eq!(reference.preference, Some(-3.0));
        assert_eq!(reference.first_step_probes, [-0.5]);

        let item = SweepItem {
            label: "layer 3".into(),
            index: 3,
            layer: Some(3),
            condition: zero("NY"),
        };
        let only_sf = vec![expected_score("SF", "", vec![-2.0])];
        let p = sweep_point(&spec, "NY", Some(&item), &only_sf, false, Vec::new());
        assert_eq!(
            (p.label.as_str(), p.index, p.layer),
            ("layer 3", 3, Some(3))
        );
        assert_eq!(p.scores, [-2.0, f64::NEG_INFINITY]);
        assert_eq!(p.preference, None);
    }
}
