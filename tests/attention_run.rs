//! Grid runs with attention capture (`RunOptions::attention`) on the real test model.

mod common;

use common::{asset_spec, model};
use kvlab::experiment::{Op, RunResults};
use kvlab::runner::{self, AttentionMode, RunOptions};

fn seed_run(attention: AttentionMode) -> (RunResults, f64) {
    let mut spec = asset_spec("seed-short");
    spec.generation.max_tokens = 8;
    let options = RunOptions {
        // One thread: ggml's spinning thread pool crawls on a shared, busy machine.
        threads: 1,
        attention,
        ..RunOptions::default()
    };
    let t = std::time::Instant::now();
    let r = runner::run(model(), &spec, &options, |_| {}).unwrap();
    (r, t.elapsed().as_secs_f64())
}

fn tokens(r: &RunResults) -> Vec<Vec<i32>> {
    let baselines = r.variants.iter().map(|v| v.baseline.tokens.clone());
    baselines
        .chain(r.conditions.iter().map(|c| c.generation.tokens.clone()))
        .collect()
}

#[test]
fn a_capturing_run_records_attention_without_changing_the_tokens() {
    let (on, t_on) = seed_run(AttentionMode::Capture);
    let (idle, t_idle) = seed_run(AttentionMode::IdleLab);
    eprintln!("seed grid, 8 tokens: capture lab idle {t_idle:.2}s, capturing {t_on:.2}s");
    // Capture changes nothing that is generated or scored.
    assert_eq!(tokens(&on), tokens(&idle));
    for (a, b) in on.conditions.iter().zip(&idle.conditions) {
        assert_eq!(a.scores, b.scores, "{}", a.label);
    }
    assert!(on.settings.attention && !idle.settings.attention);
    assert!(idle.attention.is_none());
    let att = on.attention.as_ref().expect("captured");
    att.validate(on.variants.len(), on.conditions.len())
        .unwrap();
    assert_eq!((att.n_layer, att.n_head), (30, 9));
    assert_eq!(att.needle, on.needle_span);

    // The prompt pass: one entry per carrier (after the needle, before the last token).
    for (v, p) in on.variants.iter().zip(&att.variants) {
        assert_eq!(p.carriers.start, att.needle.end);
        assert_eq!(p.carriers.end, v.tokens.len() - 1);
        assert_eq!(p.needle.len(), p.carriers.len());
        assert!(p.needle.iter().flatten().all(|&w| (0.0..=1.0).contains(&w)));
        // The token right after the needle reads it somewhere.
        assert!(p.needle[0].iter().any(|&w| w > 0.01));
    }

    // Generation: every row, every step, every layer and head.
    let rows = att.baselines.iter().chain(&att.conditions);
    for row in rows {
        assert_eq!(row.needle.len(), 8);
        for s in 0..8 {
            for i in 0..270 {
                let (n, c, p) = (row.needle[s][i], row.carriers[s][i], row.prompt[s][i]);
                assert!(n >= 0.0 && c >= 0.0);
                assert!(n + c <= p + 1e-5, "step {s} {i}: {n} + {c} > {p}");
                assert!(p <= 1.0 + 1e-3, "step {s} {i}: {p}");
                // Step 0's query is the last prompt token: it sees the prompt and nothing else.
                if s == 0 {
                    assert!((p - 1.0).abs() < 1e-3, "step 0 {i}: {p}");
                }
            }
        }
    }

    // After `remove` the needle is paid exactly nothing; after `zero` (K and V zeroed, the
    // cells still there) it still gets some weight; unchanged conditions equal their baselines.
    for (c, row) in on.conditions.iter().zip(&att.conditions) {
        let vi = on
            .variants
            .iter()
            .position(|v| v.name == c.variant)
            .unwrap();
        match c.op {
            Op::Remove => {
                assert!(
                    row.needle.iter().flatten().all(|&w| w == 0.0),
                    "{}",
                    c.label
                );
            }
            Op::Zero => assert!(row.needle.iter().flatten().any(|&w| w > 0.0)),
            Op::None => assert_eq!(row, &att.baselines[vi], "{}", c.label),
            _ => {}
        }
    }
}
