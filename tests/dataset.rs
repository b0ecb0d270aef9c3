//! Datasets on the real model: the shipped places are one token wherever the templates put
//! them, items give the same numbers however they are packed into waves, a stopped dataset
//! keeps its finished items, and a dataset session reads back as written.

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
