//! Attention capture in batches of several sequences, and the scores before the softmax.

mod common;

use common::{asset_spec, eval_tokens, model};
use kvlab::engine::lab::BatchItem;
use kvlab::engine::{CaptureRequest, KvPart, Lab, LabOptions};
use kvlab::runner::prepare_prompts;

fn lab(n_seq: u32) -> Lab<'static> {
    let options = LabOptions {
        n_seq,
        n_ctx_per_seq: 256,
        threads: 2,
        n_batch: 512,
        cache: Default::default(),
    };
    Lab::with_attention_capture(model(), options).expect("context")
}

/// The seed's two prompts (SF, Paris) and the needle's positions.
fn prompts() -> (Vec<Vec<i32>>, Vec<i32>) {
    let p = prepare_prompts(model(), &asset_spec("seed-short")).unwrap();
    let tokens = p
        .prompts
        .iter()
        .map(|p| p.tokens.iter().map(|t| t.id).collect())
        .collect();
    (tokens, (p.span.start as i32..p.span.end as i32).collect())
}

/// Caches `prompts[i][:-1]` in sequence i, then captures every last token in one batch.
fn capture_last(prompts: &[&[i32]], needle: &[i32]) -> Vec<kvlab::engine::AttentionCapture> {
    let mut lab = lab(prompts.len() as u32);
    for (s, p) in prompts.iter().enumerate() {
        eval_tokens(&mut lab, s as i32, &p[..p.len() - 1]);
    }
    let items: Vec<BatchItem> = prompts
        .iter()
        .enumerate()
        .map(|(s, p)| BatchItem {
            seq: s as i32,
            token: p[p.len() - 1],
            pos: p.len() as i32 - 1,
            logits: true,
        })
        .collect();
    let request = CaptureRequest {
        rows: (0..items.len()).collect(),
        focus: needle.to_vec(),
        full_rows: true,
        focus_scores: false,
    };
    lab.eval_capturing_seqs(&items, &request, |_, _| {})
        .unwrap()
}

/// The largest difference between two captured rows over every layer, head and cell.
fn worst(a: &kvlab::engine::CapturedRow, b: &kvlab::engine::CapturedRow, layers: usize) -> f32 {
    let mut w = 0f32;
    for l in 0..layers {
        for h in 0..9 {
            let (x, y) = (a.full(l, h).unwrap(), b.full(l, h).unwrap());
            for c in 0..x.len().min(y.len()) {
                w = w.max((x[c] - y[c]).abs());
            }
        }
    }
    w
}

#[test]
fn each_stream_of_a_batch_is_its_own_sequence() {
    let (p, needle) = prompts();
    // A third prompt of another length: the SF prompt without its first token.
    let short: Vec<i32> = p[0][1..].to_vec();
    let ab = capture_last(&[&p[0], &p[1], &short], &needle);
    let ba = capture_last(&[&p[1], &short, &p[0]], &needle);
    assert_eq!(ab.iter().map(|c| c.seq).collect::<Vec<_>>(), [0, 1, 2]);
    for (c, p) in ab.iter().zip([&p[0], &p[1], &short]) {
        assert_eq!(c.rows.len(), 1);
        assert_eq!(c.rows[0].pos, p.len() as i32 - 1);
        // Each sequence's row sees its own cells: as many as its prompt.
        let seen = c.rows[0].visible.iter().filter(|&&v| v).count();
        assert_eq!(seen, p.len());
    }
    // The same prompt in stream 0 of one batch and stream 2 of another: the same row.
    let sf_moved = worst(&ab[0].rows[0], &ba[2].rows[0], 30);
    let paris_moved = worst(&ab[1].rows[0], &ba[0].rows[0], 30);
    let short_moved = worst(&ab[2].rows[0], &ba[1].rows[0], 30);
    eprintln!("moved between streams: {sf_moved} {paris_moved} {short_moved}");
    let tol = if common::layers_on_gpu() { 1e-2 } else { 1e-4 };
    assert!(sf_moved < tol && paris_moved < tol && short_moved < tol);
    // And a row of one batch is not another sequence's (the check above can fail).
    assert!(worst(&ab[0].rows[0], &ab[1].rows[0], 30) > 1e-2);
    // Alone (one sequence, one token): the same numbers within 1e-4 on the CPU (measured: equal
    // bit for bit on the test model).
    let alone = capture_last(&[&p[0]], &needle);
    let all = worst(&ab[0].rows[0], &alone[0].rows[0], 30);
    eprintln!("batch vs alone: {all}");
    assert!(all < tol, "{all}");
}

#[test]
fn batches_llama_cpp_would_split_are_refused() {
    let (p, needle) = prompts();
    let mut lab = lab(3);
    for s in 0..3 {
        eval_tokens(&mut lab, s, &p[0][..p[0].len() - 1]);
    }
    let item = |seq: i32| BatchItem {
        seq,
        token: p[0][p[0].len() - 1],
        pos: p[0].len() as i32 - 1,
        logits: true,
    };
    let request = CaptureRequest {
        rows: vec![0],
        focus: needle,
        ..Default::default()
    };
    for items in [vec![item(0), item(2)], vec![item(1), item(0)]] {
        let e = lab
            .eval_capturing_seqs(&items, &request, |_, _| {})
            .unwrap_err();
        assert!(e.to_string().contains("consecutive"), "{e}");
    }
}

#[test]
fn zeroed_keys_score_exactly_zero_before_the_softmax() {
    let (p, needle) = prompts();
    let tokens = &p[0];
    let n = tokens.len();
    let mut lab = lab(1);
    eval_tokens(&mut lab, 0, &tokens[..n - 1]);
    let mut state = lab.state(0).unwrap();
    for &pos in &needle {
        for r in state.cells_at(pos) {
            for l in 0..state.n_layer() {
                state.zero_cell(l, r, KvPart::K).unwrap();
            }
        }
    }
    lab.set_state(0, &state).unwrap();
    let request = CaptureRequest {
        rows: vec![0],
        focus: [needle.clone(), vec![0, n as i32 - 2]].concat(),
        full_rows: false,
        focus_scores: true,
    };
    let item = BatchItem {
        seq: 0,
        token: tokens[n - 1],
        pos: n as i32 - 1,
        logits: true,
    };
    let cap = lab.eval_capturing(&[item], &request, |_, _| {}).unwrap();
    let row = &cap.rows[0];
    let k = needle.len();
    for l in 0..cap.n_layer {
        for h in 0..cap.n_head {
            let s = row.focus_scores(l, h).unwrap();
            assert!(
                s[..k].iter().all(|&x| x == 0.0),
                "layer {l} head {h}: {s:?}"
            );
            // Other cells score something; a zero score still gets weight exp(0 - max) > 0.
            assert!(s[k..].iter().all(|&x| x != 0.0 && x.is_finite()));
            assert!(row.focus(l, h)[..k].iter().all(|&w| w > 0.0));
        }
    }
}
