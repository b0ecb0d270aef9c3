//! Attention capture on the real test model: what a researcher reading the weights relies on.

mod common;

use common::{asset_spec, model};
use kvlab::engine::lab::BatchItem;
use kvlab::engine::{CaptureRequest, Lab, LabOptions};
use kvlab::experiment::metrics::argmax;
use kvlab::runner::prepare_prompts;

fn options() -> LabOptions {
    LabOptions {
        n_seq: 1,
        n_ctx_per_seq: 256,
        threads: 2,
        n_batch: 512,
        cache: Default::default(),
    }
}

fn capture_lab() -> Lab<'static> {
    Lab::with_attention_capture(model(), options()).expect("context")
}

/// The seed prompt (SF variant) and its needle's positions.
fn prompt() -> (Vec<i32>, Vec<i32>) {
    let p = prepare_prompts(model(), &asset_spec("seed-short")).unwrap();
    let tokens = p.prompts[0].tokens.iter().map(|t| t.id).collect();
    (tokens, (p.span.start as i32..p.span.end as i32).collect())
}

fn items(tokens: &[i32], first_pos: i32, logits_last: bool) -> Vec<BatchItem> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, &token)| BatchItem {
            seq: 0,
            token,
            pos: first_pos + i as i32,
            logits: logits_last && i == tokens.len() - 1,
        })
        .collect()
}

#[test]
fn rows_are_distributions_over_visible_cells() {
    let (tokens, needle) = prompt();
    let mut lab = capture_lab();
    let n = tokens.len();
    let request = CaptureRequest {
        rows: vec![0, needle[0] as usize, n / 2, n - 1],
        focus: needle.clone(),
        full_rows: true,
        focus_scores: false,
    };
    let cap = lab
        .eval_capturing(&items(&tokens, 0, true), &request, |_, _| {})
        .unwrap();
    assert_eq!(cap.n_layer, 30);
    assert_eq!(cap.n_head, 9);
    // Cell i holds position i: the prompt was written into an empty stream.
    for (c, p) in cap.cell_pos.iter().enumerate() {
        assert_eq!(*p, (c < n).then_some(c as i32), "cell {c}");
    }
    for row in &cap.rows {
        // A token sees itself and what came before it.
        let seen: Vec<usize> = (0..cap.n_kv).filter(|&c| row.visible[c]).collect();
        assert_eq!(seen, (0..=row.pos as usize).collect::<Vec<_>>());
        for l in 0..cap.n_layer {
            for h in 0..cap.n_head {
                let w = row.full(l, h).unwrap();
                let sum: f32 = (0..cap.n_kv)
                    .filter(|&c| row.visible[c])
                    .map(|c| w[c])
                    .sum();
                assert!((sum - 1.0).abs() < 1e-3, "layer {l} head {h}: {sum}");
                assert!((0..cap.n_kv).all(|c| row.visible[c] || w[c] == 0.0));
                let focus: f32 = needle.iter().map(|&p| w[p as usize]).sum();
                assert_eq!(row.focus_total(l, h), focus);
            }
        }
    }
    // The first token attends only to itself; tokens before the needle pay it nothing.
    assert_eq!(cap.rows[0].full(0, 0).unwrap()[0], 1.0);
    assert_eq!(cap.rows[0].focus_total(5, 3), 0.0);
    // The last token pays the needle something.
    assert!((0..30).any(|l| cap.rows[3].focus_total_mean(l) > 0.0));
}

/// Greedy generation of `n` tokens after the prompt, capturing the last row at every step or not.
fn generate(lab: &mut Lab<'_>, tokens: &[i32], n: usize, capture: bool) -> (Vec<i32>, f64) {
    let (_, needle) = prompt();
    let request = CaptureRequest {
        rows: vec![0],
        focus: needle,
        full_rows: false,
        focus_scores: false,
    };
    let start = std::time::Instant::now();
    let mut next = 0;
    let prompt_items = items(tokens, 0, true);
    if capture {
        let mut r = request.clone();
        r.rows = vec![tokens.len() - 1];
        lab.eval_capturing(&prompt_items, &r, |_, l| next = argmax(l) as i32)
            .unwrap();
    } else {
        lab.eval(&prompt_items, |_, l| next = argmax(l) as i32)
            .unwrap();
    }
    let mut out = vec![next];
    for i in 1..n {
        let item = items(&[next], (tokens.len() + i - 1) as i32, true);
        if capture {
            let cap = lab
                .eval_capturing(&item, &request, |_, l| next = argmax(l) as i32)
                .unwrap();
            assert_eq!(cap.rows.len(), 1);
        } else {
            lab.eval(&item, |_, l| next = argmax(l) as i32).unwrap();
        }
        out.push(next);
    }
    (out, start.elapsed().as_secs_f64())
}

#[test]
fn capturing_does_not_change_what_is_generated() {
    let (tokens, _) = prompt();
    let (plain, t_plain) = generate(&mut capture_lab(), &tokens, 24, false);
    let (captured, t_capture) = generate(&mut capture_lab(), &tokens, 24, true);
    assert_eq!(plain, captured);
    let (flash, t_flash) = generate(
        &mut Lab::new(model(), options()).unwrap(),
        &tokens,
        24,
        false,
    );
    eprintln!(
        "24 tokens: flash attention {t_flash:.3}s, capture lab idle {t_plain:.3}s, \
         capturing every step {t_capture:.3}s (same tokens as flash attention: {})",
        flash == plain
    );
}

#[test]
fn removed_needle_cells_get_exactly_zero() {
    let (tokens, needle) = prompt();
    let mut lab = capture_lab();
    let n = tokens.len();
    lab.eval(&items(&tokens[..n - 1], 0, false), |_, _| {})
        .unwrap();
    let request = CaptureRequest {
        rows: vec![0],
        focus: needle.clone(),
        full_rows: true,
        focus_scores: false,
    };
    let mut probe = lab.state_bytes(0).unwrap();
    let before = lab
        .eval_capturing(
            &items(&tokens[n - 1..], n as i32 - 1, true),
            &request,
            |_, _| {},
        )
        .unwrap();
    let needle_cells: Vec<usize> = (0..before.n_kv)
        .filter(|&c| before.cell_pos[c].is_some_and(|p| needle.contains(&p)))
        .collect();
    assert_eq!(needle_cells.len(), needle.len());
    assert!(before.rows[0].focus_total_mean(0) > 0.0);
    // Back to the prompt without its last token, then remove the needle and ask again.
    lab.set_state_bytes(0, &probe).unwrap();
    probe.clear();
    lab.remove(0, needle[0], needle[needle.len() - 1] + 1)
        .unwrap();
    let after = lab
        .eval_capturing(
            &items(&tokens[n - 1..], n as i32 - 1, true),
            &request,
            |_, _| {},
        )
        .unwrap();
    let row = &after.rows[0];
    for l in 0..after.n_layer {
        for h in 0..after.n_head {
            assert_eq!(row.focus_total(l, h), 0.0, "layer {l} head {h}");
            let w = row.full(l, h).unwrap();
            let sum: f32 = w.iter().sum();
            assert!((sum - 1.0).abs() < 1e-3);
        }
    }
    // No cell holds the needle's positions any more, and nothing is paid to them.
    assert!(
        after
            .cell_pos
            .iter()
            .all(|p| p.is_none_or(|p| !needle.contains(&p)))
    );
    // The needle's old cells are empty (masked: exactly 0 in every layer and head), unless the
    // new token was written into one of them.
    for &c in &needle_cells {
        match after.cell_pos[c] {
            None => {
                assert!(!row.visible[c]);
                for l in 0..after.n_layer {
                    for h in 0..after.n_head {
                        assert_eq!(row.full(l, h).unwrap()[c], 0.0);
                    }
                }
            }
            Some(p) => assert_eq!(p, n as i32 - 1, "cell {c} was reused by the new token"),
        }
    }
}

#[test]
fn a_row_alone_equals_the_row_in_a_batch() {
    let (tokens, needle) = prompt();
    let n = tokens.len();
    let full = |rows: Vec<usize>| CaptureRequest {
        rows,
        focus: needle.clone(),
        full_rows: true,
        focus_scores: false,
    };
    // The whole prompt in one batch, the last row asked for with others and alone.
    let mut batch = capture_lab();
    let with_others = batch
        .eval_capturing(
            &items(&tokens, 0, true),
            &full(vec![1, 7, n - 1]),
            |_, _| {},
        )
        .unwrap();
    batch.clear(0);
    let alone_in_batch = batch
        .eval_capturing(&items(&tokens, 0, true), &full(vec![n - 1]), |_, _| {})
        .unwrap();
    // The prompt, then the last token evaluated on its own.
    let mut single = capture_lab();
    single
        .eval(&items(&tokens[..n - 1], 0, false), |_, _| {})
        .unwrap();
    let alone = single
        .eval_capturing(
            &items(&tokens[n - 1..], n as i32 - 1, true),
            &full(vec![0]),
            |_, _| {},
        )
        .unwrap();
    // Asking for other rows changes nothing: the same numbers, bit for bit.
    let mut worst = vec![0f32; 30];
    for (l, worst) in worst.iter_mut().enumerate() {
        for h in 0..9 {
            let a = with_others.rows[2].full(l, h).unwrap();
            assert_eq!(a, alone_in_batch.rows[0].full(l, h).unwrap());
            let b = alone.rows[0].full(l, h).unwrap();
            for c in 0..a.len() {
                *worst = worst.max((a[c] - b[c]).abs());
            }
        }
    }
    // Evaluating the token on its own is llama.cpp's one-row matrix kernels instead of the
    // batched ones: equal within 1e-4 in the first layers on the CPU, then differences of the
    // activations (about 1e-2 on this model from layer 4 on) show in the weights.
    eprintln!("largest difference per layer, batched vs one token: {worst:?}");
    let tol = if common::layers_on_gpu() { 1e-1 } else { 5e-2 };
    assert!(worst.iter().all(|&w| w < tol), "{worst:?}");
    if !common::layers_on_gpu() {
        assert!(worst[..4].iter().all(|&w| w < 1e-4), "{worst:?}");
    }
}

#[test]
fn misuse_is_refused_with_a_reason() {
    let (tokens, _) = prompt();
    let mut plain = Lab::new(model(), options()).unwrap();
    let req = CaptureRequest {
        rows: vec![0],
        ..Default::default()
    };
    let e = plain
        .eval_capturing(&items(&tokens, 0, false), &req, |_, _| {})
        .unwrap_err();
    assert!(e.to_string().contains("with_attention_capture"), "{e}");
    let mut lab = capture_lab();
    let bad = CaptureRequest {
        rows: vec![tokens.len()],
        ..Default::default()
    };
    let e = lab
        .eval_capturing(&items(&tokens, 0, false), &bad, |_, _| {})
        .unwrap_err();
    assert!(e.to_string().contains("not one of the"), "{e}");
}
