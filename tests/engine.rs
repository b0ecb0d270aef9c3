//! The engine and the runner on the real test model (SmolLM2-135M-Instruct Q4_1).

mod common;

use common::{asset_spec, model};
use kvlab::engine::kv_state::CellRef;
use kvlab::engine::lab::BatchItem;
use kvlab::engine::{KvPart, Lab, LabOptions, SeqState};
use kvlab::experiment::metrics::argmax;
use kvlab::experiment::{LayerSet, Op, Span};
use kvlab::runner::{self, RunOptions, prepare_prompts};

fn lab(n_seq: u32) -> Lab<'static> {
    Lab::new(
        model(),
        LabOptions {
            n_seq,
            n_ctx_per_seq: 256,
            threads: 2,
            n_batch: 512,
            cache: Default::default(),
        },
    )
    .expect("context")
}

/// The seed prompt's tokens for a variant.
fn seed_tokens(variant: usize) -> Vec<i32> {
    let prompts = prepare_prompts(model(), &asset_spec("seed-short"))
        .unwrap()
        .prompts;
    prompts[variant].tokens.iter().map(|t| t.id).collect()
}

/// Evaluates `tokens[..n-1]` into `seq`.
fn eval_prompt(lab: &mut Lab<'_>, seq: i32, tokens: &[i32]) {
    common::eval_tokens(lab, seq, &tokens[..tokens.len() - 1]);
}

#[test]
fn needle_is_found_where_the_variants_differ() {
    let spec = asset_spec("seed-short");
    let runner::Prepared { prompts, span, .. } = prepare_prompts(model(), &spec).unwrap();
    assert_eq!(
        span,
        Span { start: 6, end: 7 },
        "the test model's needle is token 6"
    );
    assert_eq!(
        prompts[0].tokens.len(),
        prompts[1].tokens.len(),
        "SF and NY prompts align"
    );
    assert_eq!(prompts[0].tokens[6].piece, " SF");
    assert_eq!(prompts[1].tokens[6].piece, " NY");
    for (i, (a, b)) in prompts[0].tokens.iter().zip(&prompts[1].tokens).enumerate() {
        if i != 6 {
            assert_eq!(a, b, "token {i} differs outside the needle");
        }
    }
    assert!(prompts[0].text.starts_with("User: I am flying to SF city"));
    assert!(
        prompts[0]
            .text
            .ends_with("tell me the full answer.\n\nAssistant:")
    );
}

#[test]
fn chat_template_prompt_finds_its_own_needle() {
    let runner::Prepared {
        prompts,
        span,
        warnings,
    } = prepare_prompts(model(), &asset_spec("seed-chat")).unwrap();
    // The model's Jinja template adds its default system prompt; llama.cpp's built-in one does not.
    assert!(
        prompts[0].text.starts_with("<|im_start|>system\n"),
        "{}",
        prompts[0].text
    );
    assert!(prompts[0].text.ends_with("<|im_start|>assistant\n"));
    assert_eq!(span.len(), 1);
    assert_eq!(prompts[0].tokens[span.start].piece, " SF");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("default system prompt"),
        "{warnings:?}"
    );
    let expected = include_str!("data/seed-chat-jinja.txt");
    assert_eq!(
        prompts[0].text, expected,
        "the Jinja rendering of the seed conversation changed"
    );

    let mut builtin = asset_spec("seed-chat");
    builtin.prompt.mode = kvlab::experiment::PromptMode::ChatBuiltin;
    let b = prepare_prompts(model(), &builtin).unwrap();
    assert!(b.prompts[0].text.starts_with("<|im_start|>user\n"));
    assert!(
        b.span.start < span.start,
        "no system turn, so the needle comes earlier"
    );
    assert!(b.warnings.is_empty());
}

#[test]
fn a_state_copy_reproduces_the_original_logit_for_logit() {
    let tokens = seed_tokens(0);
    let mut lab = lab(2);
    eval_prompt(&mut lab, 0, &tokens);
    let bytes = lab.state_bytes(0).unwrap();
    let parsed = SeqState::parse(&bytes, Default::default()).unwrap();
    assert_eq!(
        parsed.serialize(),
        bytes,
        "parse → serialize is byte-identical on a real state"
    );
    lab.set_state(1, &parsed).unwrap();
    let mut next = [*tokens.last().unwrap(); 2];
    for (step, pos) in (0..12).zip((tokens.len() - 1) as i32..) {
        let items = [0, 1].map(|s| BatchItem {
            seq: s,
            token: next[s as usize],
            pos,
            logits: true,
        });
        let mut logits: Vec<Vec<f32>> = Vec::new();
        lab.eval(&items, |_, l| logits.push(l.to_vec())).unwrap();
        let max_abs = logits[0]
            .iter()
            .zip(&logits[1])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(
            max_abs, 0.0,
            "step {step}: the copy's logits differ by {max_abs}"
        );
        next = [argmax(&logits[0]) as i32, argmax(&logits[1]) as i32];
    }
}

#[test]
fn zero_changes_exactly_the_chosen_rows() {
    let tokens = seed_tokens(0);
    let mut lab = lab(2);
    eval_prompt(&mut lab, 0, &tokens);
    let orig = lab.state(0).unwrap();
    let mut edited = orig.clone();
    let cell = edited.cells_at(6)[0];
    for layer in 0..5 {
        edited.zero_cell(layer, cell, KvPart::K).unwrap();
    }
    lab.set_state(1, &edited).unwrap();
    let back = lab.state(1).unwrap();
    assert_eq!(back.positions(), orig.positions());
    let mut zeroed = 0;
    for (r, meta) in orig.cells() {
        // The copy lives in its own stream: find its cells by position.
        let rb = back.cells_at(meta.pos)[0];
        for layer in 0..orig.n_layer() {
            let k = back.k_row_f32(layer, rb).unwrap();
            if meta.pos == 6 && layer < 5 {
                assert!(
                    k.iter().all(|&x| x == 0.0),
                    "layer {layer} K at the needle is zero"
                );
                zeroed += 1;
            } else {
                assert_eq!(
                    k,
                    orig.k_row_f32(layer, r).unwrap(),
                    "K layer {layer} pos {}",
                    meta.pos
                );
            }
            assert_eq!(
                back.v_row_f32(layer, rb).unwrap(),
                orig.v_row_f32(layer, r).unwrap()
            );
        }
    }
    assert_eq!(zeroed, 5);
    assert!(
        orig.k_row_f32(0, cell).unwrap().iter().any(|&x| x != 0.0),
        "the original row was not zero"
    );
}

#[test]
fn transplant_copies_the_donor_bytes() {
    let (sf, ny) = (seed_tokens(0), seed_tokens(1));
    let mut lab = lab(3);
    eval_prompt(&mut lab, 0, &sf);
    eval_prompt(&mut lab, 1, &ny);
    let (a, donor) = (lab.state(0).unwrap(), lab.state(1).unwrap());
    let mut edited = a.clone();
    let (dst, src) = (edited.cells_at(6)[0], donor.cells_at(6)[0]);
    for layer in 0..edited.n_layer() {
        edited
            .copy_cell_from(&donor, layer, dst, src, KvPart::Both)
            .unwrap();
    }
    lab.set_state(2, &edited).unwrap();
    let back = lab.state(2).unwrap();
    let got = back.cells_at(6)[0];
    assert_same_rows(&back, got, &donor, src);
    for layer in 0..a.n_layer() {
        assert_ne!(
            a.k_row_bytes(layer, dst).unwrap(),
            donor.k_row_bytes(layer, src).unwrap()
        );
        // Position 7 (after the needle) keeps the recipient's own rows.
        let (c7, b7) = (a.cells_at(7)[0], back.cells_at(7)[0]);
        assert_eq!(
            back.k_row_bytes(layer, b7).unwrap(),
            a.k_row_bytes(layer, c7).unwrap()
        );
        // ...which differ from the donor's from layer 1 on (layer 0 sees only the token itself).
        if layer > 0 {
            let d7 = donor.cells_at(7)[0];
            assert_ne!(
                back.k_row_bytes(layer, b7).unwrap(),
                donor.k_row_bytes(layer, d7).unwrap()
            );
        }
    }
}

#[test]
fn remove_takes_out_the_span_and_keeps_the_rest() {
    let tokens = seed_tokens(0);
    let mut lab = lab(2);
    eval_prompt(&mut lab, 0, &tokens);
    let orig = lab.state(0).unwrap();
    lab.set_state(1, &orig).unwrap();
    let copy = lab.state(1).unwrap();
    lab.remove(1, 6, 8).unwrap();
    let back = lab.state(1).unwrap();
    let expect: Vec<i32> = orig
        .positions()
        .into_iter()
        .filter(|p| !(6..8).contains(p))
        .collect();
    assert_eq!(back.positions(), expect);
    for &pos in &expect {
        let (a, b) = (orig.cells_at(pos)[0], back.cells_at(pos)[0]);
        for layer in 0..orig.n_layer() {
            assert_eq!(
                orig.k_row_bytes(layer, a).unwrap(),
                back.k_row_bytes(layer, b).unwrap()
            );
            assert_eq!(
                orig.v_row_bytes(layer, a).unwrap(),
                back.v_row_bytes(layer, b).unwrap()
            );
        }
    }
    // The codec's removal (what a remove condition restores) is byte for byte what llama.cpp
    // writes after its own, and restoring it reads back the same.
    let mut codec = copy;
    codec.remove_positions(6, 8);
    assert_eq!(codec.serialize(), lab.state_bytes(1).unwrap());
    lab.set_state(1, &codec).unwrap();
    assert_eq!(lab.state_bytes(1).unwrap(), codec.serialize());
}

#[test]
fn runs_are_reproducible_and_the_control_equals_the_baseline() {
    let mut spec = asset_spec("seed-short");
    spec.generation.max_tokens = 24;
    let opts = RunOptions {
        delta_layer: Some(3),
        ..RunOptions::default()
    };
    let a = runner::run(model(), &spec, &opts, |_| {}).unwrap();
    let b = runner::run(model(), &spec, &opts, |_| {}).unwrap();
    assert!(a.complete);
    for c in a.conditions.iter().filter(|c| c.op == Op::None) {
        let base = &a.variant(&c.variant).unwrap().baseline;
        assert_eq!(
            c.generation.tokens, base.tokens,
            "{}: control differs from baseline",
            c.variant
        );
        assert_eq!(
            c.generation.steps, base.steps,
            "{}: control's log-probs differ",
            c.variant
        );
        assert_eq!(c.first_divergence, None);
    }
    // Everything but the timings is identical across runs.
    let strip = |mut r: kvlab::experiment::RunResults| {
        r.timings = Default::default();
        serde_json::to_value(r).unwrap()
    };
    assert_eq!(strip(a.clone()), strip(b));
    // Every condition is scored against both baselines, and the K/V delta is non-zero only from
    // the needle on (earlier positions see the same tokens).
    assert!(
        a.conditions
            .iter()
            .all(|c| c.scores.len() == 2 && c.scores.iter().all(|s| s.n_tokens == 24))
    );
    let delta = a.kv_delta.as_ref().unwrap();
    assert_eq!(delta.k_l2.len(), 30);
    for layer in &delta.k_l2 {
        assert!(layer[..6].iter().all(|&x| x == 0.0));
        assert!(layer[6] > 0.0);
    }
    assert_eq!(
        delta.layer_rows.as_ref().unwrap().k.len(),
        delta.k_l2[0].len()
    );
    assert_eq!(a.model.file_name, "SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn bad_conditions_are_refused_with_reasons() {
    let base = asset_spec("seed-short");
    let run = |spec: &kvlab::experiment::ExperimentSpec| {
        runner::run(model(), spec, &RunOptions::default(), |_| {})
            .unwrap_err()
            .to_string()
    };

    let mut spec = base.clone();
    spec.conditions.truncate(1);
    spec.conditions[0].op = Op::Zero;
    spec.conditions[0].site.layers = LayerSet::parse("0-40").unwrap();
    let msg = run(&spec);
    assert!(
        msg.contains("layer 40 is out of range") && msg.contains("30 layers"),
        "{msg}"
    );

    let mut spec = base.clone();
    spec.needle_span = Some(Span {
        start: 500,
        end: 501,
    });
    let msg = run(&spec);
    assert!(msg.contains("outside the prompt"), "{msg}");

    let mut spec = base.clone();
    spec.variants[1].needle = "New York".into();
    spec.conditions
        .retain(|c| matches!(c.op, Op::Transplant { .. }));
    let msg = run(&spec);
    assert!(msg.contains("do not align"), "{msg}");
}

#[test]
fn long_seed_prompt_has_an_early_needle_never_repeated() {
    let runner::Prepared { prompts, span, .. } =
        prepare_prompts(model(), &asset_spec("seed-long")).unwrap();
    let n = prompts[0].tokens.len();
    assert!((150..=180).contains(&n), "about 160 tokens, got {n}");
    assert!(span.start < 10, "needle early, at {span}");
    let needle = &prompts[0].tokens[span.start];
    assert_eq!(
        prompts[0]
            .tokens
            .iter()
            .filter(|t| t.id == needle.id)
            .count(),
        1
    );
}

#[test]
fn the_gguf_header_agrees_with_llama_cpp_and_with_the_cache() {
    let path = common::model_path();
    let s = kvlab::gguf::read_summary(&path).unwrap();
    let info = model().info();
    assert_eq!(s.architecture, info.architecture);
    assert_eq!(s.name, info.name);
    assert_eq!(
        (s.n_layer, s.n_embd, s.n_head, s.n_ctx_train),
        (info.n_layer, info.n_embd, info.n_head, info.n_ctx_train)
    );
    assert_eq!(s.n_head_kv, vec![info.n_head_kv]);
    assert_eq!(s.quantization.as_deref(), Some(info.quantization.as_str()));
    assert_eq!(s.has_chat_template, info.has_chat_template);
    assert_eq!(s.file_size, std::fs::metadata(&path).unwrap().len());

    // The memory estimate's bytes per cell are what a cell of the real cache holds (F16 K and V).
    let mut lab = lab(1);
    eval_prompt(&mut lab, 0, &seed_tokens(0));
    let state = lab.state(0).unwrap();
    let cell = state.cells_at(0)[0];
    let bytes: usize = (0..state.n_layer())
        .map(|l| {
            2 * (state.k_row_f32(l, cell).unwrap().len() + state.v_row_f32(l, cell).unwrap().len())
        })
        .sum();
    assert_eq!(s.kv_bytes_per_cell(), bytes as u64);

    // A cut-off download is named as such.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&cut, &bytes[..200_000]).unwrap();
    let err = kvlab::gguf::read_summary(&cut).unwrap_err().to_string();
    assert!(err.contains("is not a GGUF model file"), "{err}");
    assert!(err.contains("truncated"), "{err}");
    // Loading reads the same metadata first, so llama.cpp never sees such a file.
    let err = kvlab::engine::LoadedModel::load(&cut, &Default::default(), None, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not a GGUF model file") && err.contains("truncated"),
        "{err}"
    );
}

/// A shared lab (one KV stream for every sequence, how sweeps make items at large caches): a
/// range of a sequence's cells reads back with exactly their bytes, a sequence that shares
/// another's cells holds the same state, and the scratch sequence used for reading is left
/// empty. A lab with a stream per sequence refuses to share (its copies move whole streams).
#[test]
fn a_shared_lab_reads_some_cells_and_shares_the_rest() {
    let options = LabOptions {
        n_seq: 3,
        n_ctx_per_seq: 512,
        threads: 2,
        n_batch: 512,
        cache: Default::default(),
    };
    let mut shared_lab = Lab::shared(model(), options).expect("context");
    assert!(shared_lab.is_shared());
    let tokens = seed_tokens(0);
    eval_prompt(&mut shared_lab, 0, &tokens);
    let whole = shared_lab.state(0).unwrap();

    let piece = shared_lab.state_of_positions(0, 2, 3, 7).unwrap();
    assert_eq!(piece.positions(), [3, 4, 5, 6]);
    for (cell, meta) in piece.cells() {
        let at = whole.cells_at(meta.pos)[0];
        assert_same_rows(&piece, cell, &whole, at);
    }
    assert!(
        shared_lab.state(2).unwrap().positions().is_empty(),
        "the scratch sequence is left empty"
    );

    shared_lab.share(0, 1, 0, None).unwrap();
    let mut shared = shared_lab.state(1).unwrap();
    for stream in shared.streams.iter_mut().flatten() {
        stream.cells.iter_mut().for_each(|c| c.seq_ids = vec![0]);
    }
    assert!(
        shared.streams == whole.streams,
        "sharing gives the same cells"
    );

    assert!(lab(2).share(0, 1, 0, None).is_err());
}

/// Cell `ca` of `a` holds the same K and V bytes as cell `cb` of `b`, in every layer.
fn assert_same_rows(a: &SeqState, ca: CellRef, b: &SeqState, cb: CellRef) {
    for layer in 0..a.n_layer() {
        let k = (
            a.k_row_bytes(layer, ca).unwrap(),
            b.k_row_bytes(layer, cb).unwrap(),
        );
        assert_eq!(k.0, k.1, "K of layer {layer}");
        let v = (
            a.v_row_bytes(layer, ca).unwrap(),
            b.v_row_bytes(layer, cb).unwrap(),
        );
        assert_eq!(v.0, v.1, "V of layer {layer}");
    }
}
