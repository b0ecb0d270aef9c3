//! The desktop app driven through its accessibility tree (egui_kittest), on the real model:
//! load by path, read the metadata, move the needle, add a condition, run, stop, bad files.

mod common;

use common::{model_path, wait_for};
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use kvlab::experiment::Span;
use kvlab::ui::app::Busy;
use kvlab::ui::{AppState, KvlabApp};

fn harness(max_tokens: usize) -> Harness<'static, KvlabApp> {
    let mut state = AppState::default();
    state.spec.generation.max_tokens = max_tokens;
    state.threads = 2;
    let app = KvlabApp::new(&egui::Context::default(), state);
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        // Generated text is whatever the model writes (emoji too); the app shows missing glyphs
        // as boxes rather than failing.
        .allow_missing_glyphs()
        .build_ui_state(|ui, app: &mut KvlabApp| app.show(ui), app)
}

fn load(h: &mut Harness<'_, KvlabApp>, path: &str) {
    let field = h.get_by_label("Model path");
    field.focus();
    h.step();
    h.get_by_label("Model path").type_text(path);
    h.step();
    h.get_by_label("Load").click();
    h.step();
    wait_for(h, "the load to end", |a| a.busy == Busy::Idle);
    // The token strip appears above the conditions and the tabs once the prompts are tokenized;
    // clicking before that could hit a widget that is about to move.
    wait_for(h, "the token strip", |a| {
        a.model.is_none() || a.prepared.is_some() || a.prepare_error.is_some()
    });
}

#[test]
fn load_move_needle_add_condition_run_and_stop() {
    let mut h = harness(20);
    load(&mut h, model_path().to_str().unwrap());
    assert!(h.state().error.is_none(), "{:?}", h.state().error);
    // Metadata is shown.
    h.get_by_label("llama");
    h.get_by_label("Q4_1");
    h.get_by_label("30");

    // The token strip appears with the needle found where SF and NY differ.
    wait_for(&mut h, "the token strip", |a| a.prepared.is_some());
    h.get_by_label_contains("needle: 6 (found where the variants differ)");
    // Clicking " city" (position 7) moves the needle there; "Auto" brings it back.
    h.get_all_by_label(" city")
        .next()
        .expect("a city chip")
        .click();
    h.step();
    assert_eq!(
        h.state().state.spec.needle_span,
        Some(Span { start: 7, end: 8 })
    );
    wait_for(&mut h, "re-tokenizing", |a| {
        a.prepared.as_ref().is_some_and(|p| p.span.start == 7)
    });
    h.get_by_label_contains("needle: 7 (chosen)");
    h.get_by_label("Auto").click();
    h.step();
    assert_eq!(h.state().state.spec.needle_span, None);

    // One condition: zero the needle in the SF prompt.
    h.get_by_label("Clear").click();
    h.step();
    h.get_by_label("Add condition").click();
    h.step();
    assert_eq!(h.state().state.spec.conditions.len(), 1);
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the run", |a| a.results.is_some());
    let r = h.state().results.clone().unwrap();
    assert!(r.complete);
    assert_eq!(r.conditions[0].intervention, "zero");
    // Text is in the grid, with the verdict and the divergence marker.
    let verdict = r.conditions[0].verdict.clone().unwrap();
    h.get_by_label(&verdict);
    match r.conditions[0].first_divergence {
        Some(i) => {
            h.get_by_label_contains(&format!("departs at token {i}"));
        }
        None => {
            h.get_by_label("same as baseline");
        }
    }
    let first_piece = &r.conditions[0].generation.steps[0].token.piece;
    assert!(
        h.query_all_by_label(first_piece).count() > 0,
        "generated tokens are shown"
    );

    // Stop mid-run: partial results, and the app stays usable.
    h.state_mut().state.spec.generation.max_tokens = 400;
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the first tokens", |a| a.live.tokens > 0);
    h.get_by_label("Stop").click();
    h.step();
    wait_for(&mut h, "the stop", |a| a.busy == Busy::Idle);
    let partial = h.state().results.clone().expect("partial results are kept");
    assert!(!partial.complete);
    assert!(partial.conditions[0].generation.tokens.len() < 400);
    h.get_by_label_contains("Stopped early");

    h.state_mut().state.spec.generation.max_tokens = 5;
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the run after a stop", |a| {
        a.busy == Busy::Idle && a.results.as_ref().is_some_and(|r| r.complete)
    });
}

#[test]
fn a_model_is_described_before_it_loads_and_the_devices_are_listed() {
    let mut h = harness(4);
    // The worker starts llama.cpp and lists its devices without a model.
    wait_for(&mut h, "llama.cpp's devices", |a| !a.devices.is_empty());
    h.get_by_label_contains("CPU: ");
    h.get_by_label_contains("this build has no GPU backend");

    // Choosing a file (here: typing its path) shows its metadata and what a run needs, at once.
    let field = h.get_by_label("Model path");
    field.focus();
    h.step();
    h.get_by_label("Model path")
        .type_text(model_path().to_str().unwrap());
    h.step();
    wait_for(&mut h, "the header", |a| {
        a.peek.as_ref().is_some_and(|p| p.summary.is_some())
    });
    h.get_by_label("Before loading");
    h.get_by_label("llama");
    h.get_by_label("30");
    h.get_by_label("KV cache: host memory (no GPU device)");
    let spec = &h.state().state.spec;
    let n_seq = spec.variants.len() + spec.conditions.len();
    // SmolLM2-135M: 23,040 bytes per cell; each sequence's stream rounds up to 256 cells.
    let kv = format!(
        "{:.1} MiB",
        (n_seq * 256 * 23_040) as f64 / (1 << 20) as f64
    );
    h.get_by_label_contains(&format!("KV cache {kv} for {n_seq} sequences"));
    h.get_by_label_contains("(weights 93.8 MiB + ");

    // Loading replaces the estimate with llama.cpp's metadata; both count the same KV cache.
    h.get_by_label("Load").click();
    h.step();
    wait_for(&mut h, "the load", |a| a.busy == Busy::Idle);
    assert!(h.query_by_label("Before loading").is_none());
    h.get_by_label(&format!("≈ {kv} ({n_seq} sequences)"));
}

#[test]
fn a_bad_model_file_shows_an_error_and_the_app_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.gguf");
    std::fs::write(&bad, "not a model at all").unwrap();
    let mut h = harness(4);
    load(&mut h, bad.to_str().unwrap());
    assert!(h.state().model.is_none());
    // Named twice: by the header check before loading, and by the failed load.
    assert!(
        h.query_all_by_label_contains("is not a GGUF model file")
            .count()
            >= 1
    );
    // The path field keeps what was typed; replace it with the real model.
    h.state_mut().state.model_path = None;
    h.step();
    load(&mut h, model_path().to_str().unwrap());
    assert!(h.state().model.is_some());
    assert!(h.state().error.is_none());
}

#[test]
fn sessions_save_open_mark_changes_and_guard_foreign_results() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(6);
    load(&mut h, model_path().to_str().unwrap());
    h.get_by_label("Clear").click();
    h.step();
    h.get_by_label("Add condition").click();
    h.step();
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the run", |a| a.results.is_some());
    assert!(h.state().is_dirty());
    assert!(h.state().title().starts_with("• "), "{}", h.state().title());

    let path = dir.path().join("mine.kvlab");
    assert!(h.state_mut().save_to(&path));
    h.step();
    assert!(!h.state().is_dirty());
    assert_eq!(h.state().title(), "seed-short — kvlab");
    h.state_mut().state.notes = "zero keeps it".into();
    h.step();
    assert!(h.state().title().starts_with("• "));

    // The same session, as if its results came from another model: read-only, with a way out.
    let mut s = kvlab::session::Session::load(&path).unwrap();
    s.model.as_mut().unwrap().fingerprint.sha256_head_tail = "0".repeat(64);
    let foreign = dir.path().join("foreign.kvlab");
    s.save(&foreign).unwrap();
    h.state_mut().open_session(&foreign);
    h.step();
    assert!(h.state().is_read_only());
    h.get_by_label_contains("Read-only: these results came from");
    assert!(
        h.query_by_label("Add condition").is_none(),
        "conditions are not editable"
    );
    h.get_by_label("Re-run on the loaded model").click();
    h.step();
    wait_for(&mut h, "the re-run", |a| {
        a.busy == Busy::Idle && a.results.is_some()
    });
    assert!(
        !h.state().is_read_only(),
        "results now come from the loaded model"
    );

    // Closing with unsaved changes asks first.
    h.state_mut().confirm_close = true;
    h.run_steps(3);
    h.get_by_label("Save changes?");
    h.get_by_label("Cancel").click();
    h.step();
    assert!(!h.state().confirm_close);
}

#[test]
fn a_sweep_runs_from_its_tab_and_shows_its_effects() {
    let mut h = harness(4);
    load(&mut h, model_path().to_str().unwrap());
    h.get_by_label("Sweeps").click();
    h.step();
    h.get_by_label("Needle + next k").click();
    h.step();
    h.get_by_label("Run sweep").click();
    h.step();
    wait_for(&mut h, "the sweep", |a| {
        a.sweep.is_some() && a.busy == Busy::Idle
    });
    let r = h.state().sweep.clone().unwrap();
    assert!(r.complete);
    assert_eq!(r.points.len(), 17, "the needle plus 0..=16 more tokens");
    h.get_by_label_contains("Span sweep of zero on SF");
    // Sweeps are saved with the session.
    assert!(h.state().to_session().sweep.is_some());
}

#[test]
fn the_gpu_layers_slider_moves_the_kv_cache_and_reloads_the_model() {
    let mut h = harness(4);
    wait_for(&mut h, "llama.cpp's devices", |a| !a.devices.is_empty());
    assert!(
        h.query_by_role_and_label(Role::Slider, "GPU layers")
            .is_none(),
        "no slider without a GPU"
    );
    load(&mut h, model_path().to_str().unwrap());
    // As a GPU build on a machine with a GPU would see it (llama.cpp ignores the offload here).
    let mut gpu = h.state().devices[0].clone();
    gpu.name = "Vulkan0".into();
    gpu.backend = "Vulkan".into();
    gpu.is_gpu = true;
    h.state_mut().devices.push(gpu);
    h.step();
    h.get_by_label("KV cache: Vulkan0 memory (all 30 layers)");
    assert!(h.query_by_label("Reload to apply").is_none());

    h.get_by_role_and_label(Role::Slider, "GPU layers")
        .set_value_accesskit(11.0);
    h.step();
    assert_eq!(h.state().state.gpu_layers, Some(11));
    // What the loaded model has stays shown until it is reloaded with the new setting.
    h.get_by_label("KV cache: Vulkan0 memory (all 30 layers)");
    h.get_by_label("Reload to apply").click();
    h.step();
    wait_for(&mut h, "the reload", |a| {
        a.busy == Busy::Idle && a.model.as_ref().is_some_and(|m| m.gpu_layers == Some(11))
    });
    h.get_by_label("KV cache: 10 of 30 layers on Vulkan0, the rest in host memory");
    assert!(h.query_by_label("Reload to apply").is_none());

    // The far end of the slider is "all" (llama.cpp's default), not a number.
    h.get_by_role_and_label(Role::Slider, "GPU layers")
        .set_value_accesskit(31.0);
    h.step();
    assert_eq!(h.state().state.gpu_layers, None);
}
