//! The Attention tab driven through the accessibility tree (egui_kittest), on the real model:
//! a short seed run with "capture attention" ticked, then the tab's maps, strip and heads.

mod common;

use common::wait_for;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use kvlab::ui::app::Busy;
use kvlab::ui::{KvlabApp, Prefs};

fn harness() -> Harness<'static, KvlabApp> {
    let prefs = Prefs {
        threads: 1,
        ..Prefs::default()
    };
    let mut app = KvlabApp::new(&egui::Context::default(), prefs);
    app.doc.spec.generation.max_tokens = 6;
    Harness::builder()
        .with_size(egui::vec2(1600.0, 1000.0))
        .allow_missing_glyphs()
        .build_ui_state(|ui, app: &mut KvlabApp| app.show(ui), app)
}

#[test]
fn a_run_with_attention_shows_maps_the_prompt_strip_and_heads() {
    let mut h = harness();
    common::load_test_model(&mut h);
    h.get_by_label("Attention").click();
    h.run_steps(2);
    h.get_by_label("No results yet.");
    // The run setting, next to Run (and in the tab).
    h.get_by_label("capture attention").click();
    h.run_steps(2);
    assert!(h.state().prefs.attention);
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the run", |a| {
        a.busy == Busy::Idle && a.doc.results.as_ref().is_some_and(|r| r.complete)
    });
    h.run_steps(3);
    let r = h.state().doc.results.clone().unwrap();
    assert!(r.settings.attention && r.attention.is_some());
    // The first zeroed row's map, its baseline's and the difference: layers and steps on the
    // axes.
    h.get_by_label_contains("zero (SF): layer 0–29 (rows), step 0–5 (columns), from ");
    h.get_by_label_contains("baseline SF: layer 0–29 (rows), step 0–5 (columns)");
    h.get_by_label_contains("row − baseline: layer 0–29 (rows), step 0–5 (columns)");
    // Choose another row: removed from the NY prompt, next to the NY baseline.
    h.get_by_label("Row").click();
    h.run_steps(2);
    h.get_by_label("remove (NY)").click();
    h.run_steps(2);
    h.get_by_label_contains(
        "remove (NY): layer 0–29 (rows), step 0–5 (columns), from 0.0000 to 0.0000",
    );
    h.get_by_label_contains("baseline NY: layer 0–29 (rows)");
    h.get_by_label("Row").click();
    h.run_steps(2);
    h.get_by_label("zero (SF)").click();
    h.run_steps(2);
    // The prompt strip names the tokens that read the needle most, with their values.
    h.get_by_label_contains("Which prompt tokens read the needle (SF)");
    let most = h.get_by_label_contains("Read the needle most: ");
    let text = format!("{:?}", most);
    assert!(text.contains("\" city\"") || text.contains("0."), "{text}");
    // One layer's heads.
    h.get_by_label_contains("zero (SF), layer 0: head 0–8 (rows), step 0–5 (columns)");
    h.get_by_label_contains("baseline SF, layer 0: head 0–8 (rows)");
    // Under the strip, the position sweep of the same prompt when there is one: which tokens
    // carry the needle next to which read it.
    h.get_by_label_contains("Run a position sweep on the SF prompt");
    h.state_mut().doc.sweep = Some(position_sweep_of(&r));
    h.run_steps(2);
    h.get_by_label_contains(
        "Beside it, what each position carries: the position sweep of zero on SF",
    );
    // An edit makes the results stale: the tab says so (and greys its views).
    h.get_by_label("Add condition").click();
    h.run_steps(2);
    assert!(
        h.query_all_by_label(kvlab::ui::panels::STALE_TEXT).count() >= 1,
        "stale results are marked"
    );
}

/// A position sweep of zero over the SF prompt of `r`'s experiment (made-up effects).
fn position_sweep_of(r: &kvlab::experiment::RunResults) -> kvlab::experiment::sweep::SweepResults {
    use kvlab::experiment::sweep::{SweepKind, SweepPoint, SweepResults};
    let tokens = r.variants[0].tokens.clone();
    let point = |i: usize| SweepPoint {
        label: format!("pos {i}"),
        index: i,
        layer: None,
        preference: Some(-(i as f64) * 0.1),
        scores: vec![],
        first_step_probes: vec![],
    };
    let points = (0..tokens.len() - 1).map(point).collect();
    SweepResults {
        spec: Some(r.spec.clone()),
        tokens,
        ..common::made_up_sweep(SweepKind::Position { range: None }, point(0), points)
    }
}
