//! Quantized KV caches (issue #17) on the real model: a q8_0 cache runs the seed grid with the
//! same verdicts as f16, the control still equals its baseline, ablations that need numbers
//! (mean, noise) read and write q8_0 rows through ggml, noise of σ = 0 changes nothing, and the
//! results record the cache types.

mod common;

use common::model;
use kvlab::engine::{CacheType, CacheTypes};
use kvlab::experiment::{Condition, ExperimentSpec, Op};
use kvlab::runner::{RunOptions, run};

fn seed(cache: CacheTypes) -> ExperimentSpec {
    let mut spec = ExperimentSpec::seed();
    spec.generation.max_tokens = 4;
    spec.cache = cache;
    spec.conditions
        .push(Condition::new("SF", Op::Mean { over: vec![] }));
    spec.conditions.push(Condition::new(
        "SF",
        Op::Noise {
            scale: 0.0,
            seed: 7,
        },
    ));
    spec
}

fn options() -> RunOptions {
    RunOptions {
        threads: 2,
        ..RunOptions::default()
    }
}

#[test]
fn a_q8_0_cache_gives_the_f16_verdicts() {
    let f16 = run(model(), &seed(CacheTypes::default()), &options(), |_| {}).unwrap();
    let q8 = CacheTypes {
        k: CacheType::Q8_0,
        v: CacheType::Q8_0,
    };
    let q = run(model(), &seed(q8), &options(), |_| {}).unwrap();
    assert_eq!(q.settings.cache, q8, "the results record the cache types");
    assert_eq!(f16.settings.cache, CacheTypes::default());
    let mut largest = 0f64;
    for (a, b) in f16.conditions.iter().zip(&q.conditions) {
        let (va, vb) = (a.verdict.as_ref().unwrap(), b.verdict.as_ref().unwrap());
        assert_eq!(
            va.class(),
            vb.class(),
            "{} ({}): {va} vs {vb}",
            a.label,
            a.variant
        );
        largest = largest.max((a.preference.unwrap() - b.preference.unwrap()).abs());
    }
    eprintln!("largest preference difference f16 vs q8_0: {largest:.3}");
    // The control and σ = 0 noise reproduce the baseline exactly on the quantized cache too.
    let sf = &q.variants[0].baseline;
    let none = q
        .conditions
        .iter()
        .find(|c| c.op == Op::None && c.variant == "SF")
        .unwrap();
    let still = q.conditions.last().unwrap();
    assert_eq!(none.generation.tokens, sf.tokens);
    assert_eq!(
        still.generation.tokens, sf.tokens,
        "noise of σ = 0 is the identity"
    );
    assert_eq!(still.preference, none.preference);
}
