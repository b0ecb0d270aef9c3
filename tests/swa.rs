//! Sliding-window caches on the real Gemma 3 270M (issue #17): llama.cpp keeps its K/V in two
//! caches (3 full-attention layers, 15 sliding ones, window 512) and kvlab edits both, with
//! layers in the model's numbering. Skipped with a note where the Gemma model is not fetched
//! (`make test` fetches it).

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use kvlab::engine::{KvPart, KvStateError, Lab, LabOptions, LoadOptions, LoadedModel};
use kvlab::experiment::ExperimentSpec;
use kvlab::runner::{RunOptions, run};

/// Gemma 3 270M: `KVLAB_TEST_GEMMA` (set by `make test`), else `None` with a note.
fn gemma() -> Option<&'static LoadedModel> {
    static MODEL: OnceLock<Option<LoadedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = PathBuf::from(std::env::var("KVLAB_TEST_GEMMA").ok()?);
            assert!(
                path.is_file(),
                "KVLAB_TEST_GEMMA={} is not a file (make gemma fetches it)",
                path.display()
            );
            kvlab::engine::log::init(0);
            Some(
                LoadedModel::load(&path, &LoadOptions::default(), None, |_| {})
                    .expect("Gemma loads"),
            )
        })
        .as_ref()
        .or_else(|| {
            eprintln!("KVLAB_TEST_GEMMA is not set (make test sets it): skipped");
            None
        })
}

fn lab(model: &LoadedModel, n_ctx_per_seq: u32) -> Lab<'_> {
    Lab::new(
        model,
        LabOptions {
            n_seq: 1,
            n_ctx_per_seq,
            threads: 2,
            n_batch: 1024,
            cache: Default::default(),
        },
    )
    .expect("context")
}

#[test]
fn the_model_says_which_layers_slide() {
    let Some(m) = gemma() else { return };
    assert!(m.check_kv_surgery_supported().is_ok());
    assert_eq!(m.sliding_window(), Some(512));
    // Gemma's heads are wider than n_embd / n_head: the memory estimates use the GGUF's.
    assert_eq!(m.info().head_dims(), (256, 256));
    let split = m.sliding_layers().unwrap().expect("two caches");
    assert_eq!(split.base_layers(), vec![5, 11, 17]);
    // What the model panel and `kvlab inspect` say.
    assert_eq!(
        m.attention_summary().as_deref(),
        Some("sliding window of 512 tokens in 15 of 18 layers; layers 5, 11, 17 see every token")
    );
}

/// The state holds both caches; zeroing one position in every model layer changes exactly that
/// cell's rows in the 3 full-attention layers and the 15 sliding ones, nothing else.
#[test]
fn zero_changes_exactly_the_cell_in_both_caches() {
    let Some(m) = gemma() else { return };
    let ids: Vec<i32> = m
        .tokenize(
            "I am flying to SF city and I would like a list of places.",
            true,
            false,
        )
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    let mut lab = lab(m, 256);
    common::eval_tokens(&mut lab, 0, &ids);
    let before = lab.state(0).unwrap();
    let swa = before.swa.as_ref().expect("an iSWA state");
    assert_eq!(before.n_layer(), 18);
    let mut after = before.clone();
    let cell = after.cells_at(4)[0];
    for layer in 0..18 {
        after.zero_cell(layer, cell, KvPart::Both).unwrap();
    }
    for layer in 0..18 {
        for (r, meta) in before.cells() {
            let same = before.k_row_bytes(layer, r).unwrap()
                == after.k_row_bytes(layer, r).unwrap()
                && before.v_row_bytes(layer, r).unwrap() == after.v_row_bytes(layer, r).unwrap();
            assert_eq!(same, meta.pos != 4, "layer {layer}, position {}", meta.pos);
        }
    }
    // The bytes llama.cpp reads back: the base cache's rows first, then the sliding cache's.
    let (a, b) = (before.serialize(), after.serialize());
    assert_eq!(a.len(), b.len());
    let changed = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(changed > 0);
    assert_eq!(swa.streams.iter().flatten().count(), 1);
    lab.set_state(0, &after).unwrap();
    assert_eq!(
        lab.state(0).unwrap(),
        after,
        "llama.cpp took the edited state as it is"
    );
}

/// With a prompt longer than the window, llama.cpp leaves the cells a sliding layer no longer
/// sees out of the sliding cache: position 0 is readable in exactly the full-attention layers
/// (5, 11, 17) — had kvlab mapped the layers wrongly, other layers would have it.
#[test]
fn past_the_window_only_full_attention_layers_keep_the_first_token() {
    let Some(m) = gemma() else { return };
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(70);
    let ids: Vec<i32> = m
        .tokenize(&text, true, false)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert!(ids.len() > 600, "{} tokens", ids.len());
    let mut lab = lab(m, 1024);
    common::eval_tokens(&mut lab, 0, &ids);
    let st = lab.state(0).unwrap();
    let first = st.cells_at(0)[0];
    let readable: Vec<usize> = (0..18)
        .filter(|&l| match st.k_row_f32(l, first) {
            Ok(_) => true,
            Err(KvStateError::OutsideWindow { .. }) => false,
            Err(e) => panic!("layer {l}: {e}"),
        })
        .collect();
    assert_eq!(readable, vec![5, 11, 17]);
    // The last position is in every layer's window.
    let last = st.cells_at(ids.len() as i32 - 1)[0];
    assert!((0..18).all(|l| st.k_row_f32(l, last).is_ok()));
}

/// The seed grid runs on Gemma 3 (plain prompt: its GGUF has no chat template): the controls
/// equal their baselines token for token, and every edit is scored.
#[test]
fn the_seed_grid_runs_with_controls_equal_to_baselines() {
    let Some(m) = gemma() else { return };
    let mut spec = ExperimentSpec::seed();
    spec.generation.max_tokens = 6;
    let r = run(
        m,
        &spec,
        &RunOptions {
            threads: 2,
            ..RunOptions::default()
        },
        |_| {},
    )
    .unwrap();
    assert!(r.complete);
    // The results know which layers slide, and say whether the needle stays in their window.
    assert_eq!(r.model_info.sliding_window, Some(512));
    assert_eq!(r.model_info.sliding_layers.len(), 15);
    let said = kvlab::experiment::window::describe(&r).unwrap();
    assert!(
        said.contains("15 of 18 layers slide")
            && said.contains("stays inside their window for all 6"),
        "{said}"
    );
    assert!(kvlab::experiment::grid::to_table(&r, false).contains(&said));
    // The report's K/V difference marks the 15 sliding layers in both maps.
    let mut session = kvlab::session::Session::new(spec.clone());
    session.results = Some(r.clone());
    let html = kvlab::session::report::html(&session);
    assert!(r.kv_delta.is_some());
    assert_eq!(
        html.matches("class=\"sliding\"").count(),
        30,
        "15 rows in K and V"
    );
    assert!(html.contains("<title>layer 4: sliding window</title>"));
    assert!(!html.contains("<title>layer 5: sliding window</title>"));
    for c in &r.conditions {
        let base = &r
            .variants
            .iter()
            .find(|v| v.name == c.variant)
            .unwrap()
            .baseline;
        if c.op == kvlab::experiment::Op::None {
            assert_eq!(
                c.generation.tokens, base.tokens,
                "{} equals its baseline",
                c.label
            );
        }
        assert!(c.verdict.is_some(), "{} is scored", c.label);
    }
    let _ = common::layers_on_gpu();
}

/// Every intervention, made by the runner exactly as a run makes it and read back from
/// llama.cpp, changes exactly the needle's rows in exactly its layers, in both caches: zero,
/// transplant (the donor's rows), mean, noise, remove (the cells gone from both caches), and a
/// zero limited to one full-attention or one sliding layer.
#[test]
fn every_intervention_changes_exactly_its_rows_in_both_caches() {
    use kvlab::experiment::{Condition, LayerSet, Op, Site};
    let Some(m) = gemma() else { return };
    let mut spec = ExperimentSpec::seed();
    let (sf, ny) = (spec.variants[0].name.clone(), spec.variants[1].name.clone());
    let in_layer = |l: &str| Site {
        layers: LayerSet::parse(l).unwrap(),
        ..Site::default()
    };
    spec.conditions = vec![
        Condition::new(&sf, Op::None),
        Condition::new(&sf, Op::Zero),
        Condition::new(&sf, Op::Transplant { from: ny.clone() }),
        Condition::new(&sf, Op::Mean { over: Vec::new() }),
        Condition::new(
            &sf,
            Op::Noise {
                scale: 3.0,
                seed: 7,
            },
        ),
        Condition::new(&sf, Op::Remove),
        Condition::new(&sf, Op::Zero).at(in_layer("5")),
        Condition::new(&sf, Op::Zero).at(in_layer("3")),
    ];
    let caches = kvlab::runner::starting_caches(m, &spec, &RunOptions::default()).unwrap();
    let (before, donor) = (&caches.prompts[0], &caches.prompts[1]);
    assert!(before.swa.is_some(), "an iSWA state");
    let needle = caches.needle;
    let all: Vec<usize> = (0..18).collect();
    let edited_layers = [
        vec![],
        all.clone(),
        all.clone(),
        all.clone(),
        all.clone(),
        all.clone(),
        vec![5],
        vec![3],
    ];
    for (ci, (after, layers)) in caches.conditions.iter().zip(&edited_layers).enumerate() {
        let label = spec.conditions[ci].op.short();
        let removed = ci == 5;
        for layer in 0..18 {
            for (r, meta) in before.cells() {
                let in_needle = needle.positions().any(|p| p as i32 == meta.pos);
                let found = after.cells_at(meta.pos);
                if removed && in_needle {
                    assert!(found.is_empty(), "{label}: position {} is gone", meta.pos);
                    let sliding = &after.swa.as_ref().unwrap().streams;
                    assert!(
                        !sliding
                            .iter()
                            .flatten()
                            .any(|s| s.cells.iter().any(|c| c.pos == meta.pos)),
                        "{label}: position {} is gone from the sliding cache too",
                        meta.pos
                    );
                    continue;
                }
                let a = found
                    .first()
                    .unwrap_or_else(|| panic!("{label}: position {} kept", meta.pos));
                let (k0, v0) = (
                    before.k_row_bytes(layer, r).unwrap(),
                    before.v_row_bytes(layer, r).unwrap(),
                );
                let (k1, v1) = (
                    after.k_row_bytes(layer, *a).unwrap(),
                    after.v_row_bytes(layer, *a).unwrap(),
                );
                let changed = k0 != k1 || v0 != v1;
                let meant = in_needle && !removed && layers.contains(&layer);
                assert_eq!(
                    changed, meant,
                    "{label}: layer {layer}, position {}",
                    meta.pos
                );
                if meant && ci == 2 {
                    let d = donor.cells_at(meta.pos)[0];
                    assert_eq!(k1, donor.k_row_bytes(layer, d).unwrap(), "the donor's K");
                    assert_eq!(v1, donor.v_row_bytes(layer, d).unwrap(), "the donor's V");
                }
            }
        }
    }
}

/// The layer sweep covers all 18 layers in the model's numbering, and says which slide.
#[test]
fn the_layer_sweep_covers_every_layer_and_marks_the_sliding_ones() {
    use kvlab::experiment::sweep::{SweepKind, SweepSpec, to_table};
    use kvlab::experiment::{LayerSet, Op};
    let Some(m) = gemma() else { return };
    let mut spec = ExperimentSpec::seed();
    spec.generation.max_tokens = 2;
    let sweep = SweepSpec {
        kind: SweepKind::Layer,
        variant: spec.variants[0].name.clone(),
        op: Op::Zero,
        layers: LayerSet::All,
        part: KvPart::Both,
    };
    // Shared caches asked for: a sliding-window cache cannot share cells, and the run says so.
    let options = RunOptions {
        sweep_caches: kvlab::runner::SweepCaches::Shared,
        ..RunOptions::default()
    };
    let mut stages = Vec::new();
    let r = kvlab::runner::run_sweep(m, &spec, &sweep, &options, |e| {
        if let kvlab::runner::RunEvent::Stage(s) = e {
            stages.push(s);
        }
    })
    .unwrap();
    assert!(r.complete);
    assert!(!r.shared_cache);
    assert!(
        stages
            .iter()
            .any(|s| s.contains("sliding-window cache, which cannot share cells")),
        "{stages:?}"
    );
    let singles: Vec<u32> = r.points.iter().filter_map(|p| p.layer).collect();
    assert_eq!(singles, (0..18).collect::<Vec<_>>());
    assert_eq!(
        r.points.len(),
        3 * 18,
        "single, from the bottom, from the top"
    );
    let sliding: Vec<u32> = r
        .points
        .iter()
        .filter(|p| r.slides(p))
        .filter_map(|p| p.layer)
        .collect();
    assert_eq!(
        sliding,
        (0..18)
            .filter(|l| ![5, 11, 17].contains(l))
            .collect::<Vec<_>>()
    );
    let t = to_table(&r, 0);
    assert!(
        t.contains("layer 4 (sliding)") && !t.contains("layer 5 (sliding)"),
        "{t}"
    );
    assert!(t.contains("attends to the last 512 tokens only"), "{t}");
}

/// A sliding-window key alone is no reason to refuse: llama.cpp keeps one cache for a llama
/// model with the key (and ignores the window), so the state parses as one cache, the model
/// runs, and it generates what the same model without the key generates.
#[test]
fn a_sliding_window_key_with_one_cache_runs() {
    let dir = tempfile::tempdir().unwrap();
    let forged = common::gguf_writer::with_sliding_window(&common::model_path(), dir.path());
    let m = LoadedModel::load(&forged, &LoadOptions::default(), None, |_| {}).unwrap();
    m.check_kv_surgery_supported()
        .expect("one cache: KV surgery works");
    assert!(m.info().sliding_layers.is_empty());
    let mut spec = common::asset_spec("seed-short");
    spec.generation.max_tokens = 4;
    let r = run(&m, &spec, &RunOptions::default(), |_| {}).unwrap();
    let plain = run(common::model(), &spec, &RunOptions::default(), |_| {}).unwrap();
    for (a, b) in r.conditions.iter().zip(&plain.conditions) {
        assert_eq!(a.generation.tokens, b.generation.tokens, "{}", a.label);
    }
}

/// A recurrent model (Mamba: a state per sequence, no KV cache) is refused with the reason,
/// by the header before loading and by llama.cpp's own flag once loaded.
#[test]
fn a_recurrent_model_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mamba.gguf");
    common::gguf_writer::tiny_mamba(&common::model_path(), &path);
    let header = kvlab::gguf::read_summary(&path).unwrap();
    let before = header.kv_surgery_support().unwrap_err();
    let m = LoadedModel::load(&path, &LoadOptions::default(), None, |_| {}).unwrap();
    let after = m.check_kv_surgery_supported().unwrap_err().to_string();
    for why in [&before, &after] {
        assert!(why.contains("mamba keeps a recurrent state"), "{why}");
    }
    assert!(
        Lab::new(
            &m,
            LabOptions {
                n_seq: 1,
                n_ctx_per_seq: 64,
                threads: 1,
                n_batch: 8,
                cache: Default::default(),
            }
        )
        .is_err()
    );
}

/// A sliding-window model whose second cache kvlab cannot map (OLMo 2 with a window: llama.cpp
/// keeps two caches) is refused at load with the reason, read from the state llama.cpp writes;
/// the header alone could not tell.
#[test]
fn two_caches_kvlab_cannot_map_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("olmo2.gguf");
    common::gguf_writer::tiny_olmo2_sliding(&common::model_path(), &path);
    assert!(
        kvlab::gguf::read_summary(&path)
            .unwrap()
            .kv_surgery_support()
            .is_ok()
    );
    let m = LoadedModel::load(&path, &LoadOptions::default(), None, |_| {}).unwrap();
    let why = m.check_kv_surgery_supported().unwrap_err().to_string();
    assert!(
        why.contains("olmo2 uses sliding-window attention")
            && why.contains("cannot map to layers")
            && why.contains("unexplained trailing bytes"),
        "{why}"
    );
}
