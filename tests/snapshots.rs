//! Snapshot tests: the main views rendered by wgpu on a software rasterizer (Mesa's lavapipe on
//! Linux) and compared with committed images in `tests/snapshots/`. They catch what a user sees
//! break (a panel that lays out wrong, a heatmap that turns blank, a verdict that loses its
//! colour) and no accessibility query would.
//!
//! The app is driven on the real model (a short seed run), then each view is drawn alone at a
//! fixed size. What differs between machines is pinned first (the device list, the status line).
//! After an intended change: `UPDATE_SNAPSHOTS=1 cargo test --test snapshots`, look at the
//! images, commit them. A failing comparison leaves `NAME.new.png` and `NAME.diff.png` beside
//! the committed one.

mod common;

use common::wait_for;
use egui_kittest::{Harness, SnapshotResults};
use kvlab::engine::Device;
use kvlab::ui::app::Busy;
use kvlab::ui::panels::View;
use kvlab::ui::prefs::AnalysisTab;
use kvlab::ui::{KvlabApp, Prefs};

/// The app after loading the test model and running the seed grid for a few tokens (capturing
/// attention or not).
fn app_after_a_seed_run(attention: bool) -> KvlabApp {
    let prefs = Prefs {
        threads: 2,
        tab: AnalysisTab::Probes,
        attention,
        ..Prefs::default()
    };
    let mut app = KvlabApp::new(&egui::Context::default(), prefs);
    app.doc.spec.generation.max_tokens = 12;
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .allow_missing_glyphs()
        .build_ui_state(|ui, app: &mut KvlabApp| app.show(ui), app);
    common::load_test_model(&mut h);
    h.state_mut().queue(kvlab::ui::commands::Command::Run);
    h.step();
    wait_for(&mut h, "the run", |a| {
        a.busy == Busy::Idle && a.doc.results.as_ref().is_some_and(|r| r.complete)
    });
    let mut app = h.into_state();
    pin_machine_specific(&mut app);
    app
}

/// What would differ between machines: the CPU's name and memory, timings in the status line.
fn pin_machine_specific(app: &mut KvlabApp) {
    app.devices = vec![Device {
        name: "CPU".into(),
        description: "x86-64 CPU".into(),
        backend: "CPU".into(),
        memory_total: 16 << 30,
        memory_free: 8 << 30,
        is_gpu: false,
    }];
    app.status = "Done.".into();
    app.slowest_frame_ms = 0.0;
    app.prefs.threads = 2;
}

/// The views that show text the model generated.
const MODEL_TEXT: [&str; 5] = [
    "token_strip",
    "outcome_grid",
    "probe_chart",
    "score_table",
    "attention",
];

/// Draws one view alone at `size` with wgpu and compares it with `tests/snapshots/NAME.png`.
fn snapshot_view(
    results: &mut SnapshotResults,
    app: KvlabApp,
    name: &str,
    size: egui::Vec2,
    view: View,
) -> KvlabApp {
    let mut builder = Harness::builder()
        .with_size(size)
        .with_theme(egui::Theme::Dark)
        .wgpu();
    // Views that show the model's own text may meet glyphs no bundled font has (the app shows
    // boxes); in the others, a missing glyph is a bug in kvlab's own labels and fails the test.
    if MODEL_TEXT.contains(&name) {
        builder = builder.allow_missing_glyphs();
    }
    let mut h = builder.build_ui_state(
        move |ui, app: &mut KvlabApp| {
            egui::Frame::central_panel(ui.style()).show(ui, |ui| {
                ui.set_min_size(ui.available_size());
                egui::ScrollArea::vertical().show(ui, |ui| app.show_view(ui, view));
            });
        },
        app,
    );
    h.run_steps(4);
    pin_machine_specific(h.state_mut());
    h.run_steps(2);
    // Compare every view before failing, so one run shows (and UPDATE_SNAPSHOTS writes) them all.
    // The committed images are lavapipe's (Linux, as CI); elsewhere the GPU's rasterizer differs
    // in antialiasing, so other systems render the views (catching panics) without comparing.
    if cfg!(target_os = "linux") {
        results.add(h.try_snapshot(name));
    } else {
        h.render().expect("the view renders");
    }
    h.into_state()
}

#[test]
fn main_views_match_their_snapshots() {
    let mut r = SnapshotResults::new();
    let app = app_after_a_seed_run(false);
    let size = egui::vec2;
    let app = snapshot_view(&mut r, app, "model_panel", size(420.0, 480.0), View::Model);
    let app = snapshot_view(
        &mut r,
        app,
        "experiment_editor",
        size(420.0, 640.0),
        View::ExperimentEditor,
    );
    let app = snapshot_view(
        &mut r,
        app,
        "token_strip",
        size(1000.0, 220.0),
        View::TokenStrip,
    );
    let app = snapshot_view(
        &mut r,
        app,
        "conditions",
        size(1000.0, 320.0),
        View::Conditions,
    );
    let app = snapshot_view(
        &mut r,
        app,
        "outcome_grid",
        size(1000.0, 460.0),
        View::OutcomeGrid,
    );
    let app = snapshot_view(
        &mut r,
        app,
        "probe_chart",
        size(1000.0, 360.0),
        View::ProbeChart,
    );
    let app = snapshot_view(
        &mut r,
        app,
        "score_table",
        size(1000.0, 360.0),
        View::ScoreTable,
    );
    let mut app = snapshot_view(&mut r, app, "kv_delta", size(1000.0, 520.0), View::KvDelta);
    app.doc.sweep = Some(a_layer_sweep_with_sliding_layers(&app));
    let _ = snapshot_view(
        &mut r,
        app,
        "layer_sweep_sliding",
        size(1000.0, 360.0),
        View::Sweeps,
    );
    r.unwrap();
}

/// A layer sweep of an 18-layer model whose layers slide but 5, 11 and 17 (Gemma 3's shape),
/// with made-up effects: the bars of single sliding layers take their own colour.
fn a_layer_sweep_with_sliding_layers(app: &KvlabApp) -> kvlab::experiment::sweep::SweepResults {
    use kvlab::experiment::sweep::{SweepKind, SweepPoint, SweepResults};
    let point = |label: String, layer: Option<u32>, p: f64| SweepPoint {
        label,
        index: 0,
        layer,
        preference: Some(p),
        scores: vec![],
        first_step_probes: vec![],
    };
    let effect = |l: u32| -1.0 - ((l * 7) % 5) as f64 * 0.4;
    let mut points: Vec<SweepPoint> = (0..18)
        .map(|l| point(format!("layer {l}"), Some(l), effect(l)))
        .collect();
    points.extend((0..18).map(|l| point(format!("layers 0-{l}"), None, -0.3 * l as f64)));
    SweepResults {
        spec: Some(app.doc.spec.clone()),
        sliding_layers: (0..18).filter(|l| l % 6 != 5).collect(),
        sliding_window: Some(512),
        shared_cache: false,
        ..common::made_up_sweep(
            SweepKind::Layer,
            point("no intervention".into(), None, 0.0),
            points,
        )
    }
}

/// The Attention tab after a seed run with capture (its own run: a capturing run's numbers
/// differ slightly from the other views').
#[test]
fn the_attention_tab_matches_its_snapshot() {
    let mut r = SnapshotResults::new();
    let app = app_after_a_seed_run(true);
    let _ = snapshot_view(
        &mut r,
        app,
        "attention",
        egui::vec2(1000.0, 900.0),
        View::Attention,
    );
    r.unwrap();
}
