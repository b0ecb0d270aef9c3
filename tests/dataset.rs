//! Datasets on the real model: the shipped places are one token wherever the templates put
//! them, items give the same numbers however they are packed into waves (and whichever cells
//! share a run), a stopped dataset keeps its finished items, and a dataset session reads back
//! as written.

mod common;

use std::sync::atomic::Ordering;

use common::{assert_same_score, asset_spec, model, tiny_dataset_json};
use kvlab::experiment::ExperimentSpec;
use kvlab::experiment::dataset::{self, aggregates};
use kvlab::runner::{self, DatasetOptions, RunEvent};
use kvlab::session::Session;

fn tiny() -> ExperimentSpec {
    ExperimentSpec::from_json(&tiny_dataset_json().to_string()).unwrap()
}

#[test]
fn every_shipped_needle_is_one_token_in_every_template() {
    let spec = asset_spec("cities");
    let data = spec.dataset.as_ref().unwrap();
    assert!(data.needles.len() >= 24);
    assert_eq!(data.templates.len(), 3);
    // With a mean over all needles every wave holds every needle: one prompt per needle.
    for wave in dataset::expand(&spec, 256).unwrap() {
        let template = &data.templates[wave.template].name;
        assert_eq!(wave.spec.variants.len(), data.needles.len());
        let p = runner::prepare_prompts(model(), &wave.spec).unwrap();
        assert_eq!(
            p.span.len(),
            1,
            "template {template}: needle span {}",
            p.span
        );
        let lens: Vec<usize> = p.prompts.iter().map(|p| p.tokens.len()).collect();
        assert!(
            lens.iter().all(|&l| l == lens[0]),
            "template {template}: the needles do not align: {lens:?}"
        );
        for (v, prompt) in wave.spec.variants.iter().zip(&p.prompts) {
            let piece = &prompt.tokens[p.span.start].piece;
            assert_eq!(piece.trim(), v.needle, "template {template}");
        }
    }
}

#[test]
fn items_do_not_depend_on_their_wave_and_a_stop_keeps_finished_ones() {
    let spec = tiny();
    let whole = runner::run_dataset(model(), &spec, &DatasetOptions::default(), |_| {}).unwrap();
    assert!(whole.complete);
    assert_eq!(whole.waves.len(), 2, "one wave per template");
    assert_eq!(whole.finished_items(), 4);

    // One item per wave (2 needles + 3 conditions), stopped after the first wave.
    let options = DatasetOptions {
        max_sequences: 5,
        ..DatasetOptions::default()
    };
    let cancel = options.run.cancel.clone();
    let mut progress = Vec::new();
    let part = runner::run_dataset(model(), &spec, &options, |e| {
        if let RunEvent::Progress { done, total } = e {
            progress.push((done, total));
            if done >= 1 {
                cancel.store(true, Ordering::Relaxed);
            }
        }
    })
    .unwrap();
    assert_eq!(progress, [(0, 4), (1, 4)]);
    assert!(!part.complete);
    assert_eq!((part.finished_items(), part.items.len()), (1, 4));
    let rows = part.rows();
    assert_eq!(rows.len(), 3);
    let all_rows = whole.rows();
    for (a, b) in rows.iter().zip(&all_rows) {
        assert_eq!((a.item, &a.label), (b.item, &b.label));
        assert!(a.preference.is_some());
        assert_same_score(
            a.preference,
            b.preference,
            &format!("{} {}", a.needle, a.label),
        );
    }
    let a = aggregates(&part);
    assert_eq!(a.items, (1, 4));
    assert_eq!(a.overall[0].n, 1);
    assert!(dataset::to_table(&part).contains("1 of 4 items, STOPPED EARLY (partial)"));

    // A session keeps everything and reads back as written.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.kvlab");
    let mut s = Session::new(spec.clone());
    s.dataset = Some(part.clone());
    s.save(&path).unwrap();
    let back = Session::load(&path).unwrap();
    assert_eq!(back.dataset.as_ref(), Some(&part));
    assert_eq!(aggregates(back.dataset.as_ref().unwrap()), a);
}

#[test]
fn items_of_one_needle_share_its_runs_and_read_what_they_would_alone() {
    // Every ordered pair of three needles, one template: a needle's two items edit it the same
    // way under none and zero, and differ only in the transplant's donor.
    let mut v = tiny_dataset_json();
    v["dataset"]["pairs"] = "all".into();
    v["dataset"]["templates"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    let spec = ExperimentSpec::from_json(&v.to_string()).unwrap();
    let mut stages = Vec::new();
    let shared = runner::run_dataset(model(), &spec, &DatasetOptions::default(), |e| {
        if let RunEvent::Stage(s) = e {
            stages.push(s);
        }
    })
    .unwrap();
    assert_eq!(shared.waves.len(), 1);
    assert_eq!(stages[0], "wave 1 of 1 (6 items, 18 cells in 15 sequences)");
    let grid = &shared.waves[0].results;
    assert_eq!(
        grid.conditions.len(),
        6 * 3,
        "a cell per item and condition"
    );
    // 3 needles, and per needle none, zero and two transplants (not 6 × 3 cells).
    assert_eq!(grid.settings.n_seq, 3 + 3 * 4);

    // A session keeps the shared wave and reads back as written (its grid has fewer sequences
    // than cells).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all-pairs.kvlab");
    let mut s = Session::new(spec.clone());
    s.dataset = Some(shared.clone());
    s.save(&path).unwrap();
    assert_eq!(
        Session::load(&path).unwrap().dataset.as_ref(),
        Some(&shared)
    );

    // One item per wave: nothing to share.
    let alone_options = DatasetOptions {
        max_sequences: 5,
        ..DatasetOptions::default()
    };
    let alone = runner::run_dataset(model(), &spec, &alone_options, |_| {}).unwrap();
    assert_eq!(alone.waves.len(), 6);
    for item in &shared.items {
        let (a, b) = (
            shared.item_conditions(item.index).unwrap(),
            alone.item_conditions(item.index).unwrap(),
        );
        for (x, y) in a.iter().zip(b) {
            let what = format!("{} vs {}: {}", item.needle, item.partner, x.label);
            assert_eq!(x.generation.tokens, y.generation.tokens, "{what}");
            assert_same_score(x.preference, y.preference, &what);
            assert_eq!(x.verdict, y.verdict, "{what}");
            // A shared cell keeps only its own pair's answers.
            let mut judged: Vec<&str> = x.expected.iter().map(|e| e.variant.as_str()).collect();
            judged.sort();
            let mut pair = [item.needle.as_str(), item.partner.as_str()];
            pair.sort();
            assert_eq!(judged, pair, "{what}");
            assert_eq!(x.expected.len(), y.expected.len(), "{what}");
            for (e, f) in x.expected.iter().zip(&y.expected) {
                assert_eq!(e.variant, f.variant, "{what}");
                assert_same_score(Some(e.sum), Some(f.sum), &what);
            }
        }
    }

    // Tokens stream into every cell of a shared run, as into a cell of its own.
    let wave = &dataset::expand(&spec, 256).unwrap()[0];
    let mut streamed = vec![0; wave.spec.conditions.len()];
    runner::run(model(), &wave.spec, &Default::default(), |e| {
        if let RunEvent::Token {
            row: runner::RowRef::Condition(i),
            ..
        } = e
        {
            streamed[i] += 1;
        }
    })
    .unwrap();
    assert!(streamed.iter().all(|&n| n == 4), "{streamed:?}");
}
