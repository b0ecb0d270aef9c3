//! The desktop app driven through its accessibility tree (egui_kittest), on the real model:
//! load by path, read the metadata, move the needle, add a condition, run, stop, bad files.

mod common;

use common::{model_path, wait_for};
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use kvlab::experiment::Span;
use kvlab::ui::app::Busy;
use kvlab::ui::{KvlabApp, Prefs};

fn harness(max_tokens: usize) -> Harness<'static, KvlabApp> {
    let prefs = Prefs {
        threads: 2,
        ..Prefs::default()
    };
    let mut app = KvlabApp::new(&egui::Context::default(), prefs);
    app.doc.spec.generation.max_tokens = max_tokens;
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
        h.state().doc.spec.needle_span,
        Some(Span { start: 7, end: 8 })
    );
    wait_for(&mut h, "re-tokenizing", |a| {
        a.prepared.as_ref().is_some_and(|p| p.span.start == 7)
    });
    h.get_by_label_contains("needle: 7 (chosen)");
    h.get_by_label("Auto").click();
    h.step();
    assert_eq!(h.state().doc.spec.needle_span, None);

    // One condition: zero the needle in the SF prompt.
    h.get_by_label("Clear").click();
    h.step();
    h.get_by_label("Add condition").click();
    h.step();
    assert_eq!(h.state().doc.spec.conditions.len(), 1);
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the run", |a| a.doc.results.is_some());
    let r = h.state().doc.results.clone().unwrap();
    assert!(r.complete);
    assert_eq!(r.conditions[0].op, kvlab::experiment::Op::Zero);
    // Text is in the grid, with the verdict and the divergence marker.
    let verdict = r.conditions[0].verdict.clone().unwrap().to_string();
    h.get_by_label(&verdict);
    match r.conditions[0].first_divergence {
        Some(i) => {
            h.get_by_label_contains(&format!("departs at token {i}"));
        }
        None => {
            h.get_by_label("same as baseline");
        }
    }
    // The K/V delta maps number their layers and positions and show their scale (issue #15).
    if r.kv_delta.is_some() {
        open_tab(&mut h, "KV delta");
        h.get_by_label_contains("K: layer 0–29 (rows), position 0–");
        h.get_by_label_contains("V: layer 0–29 (rows), position 0–");
        open_tab(&mut h, "Probe chart");
    }
    let first_piece = &r.conditions[0].generation.steps[0].token.piece;
    assert!(
        h.query_all_by_label(first_piece).count() > 0,
        "generated tokens are shown"
    );

    // Stop mid-run: partial results, and the app stays usable.
    h.state_mut().doc.spec.generation.max_tokens = 400;
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the first tokens", |a| a.live.tokens > 0);
    h.get_by_label("Stop").click();
    h.step();
    wait_for(&mut h, "the stop", |a| a.busy == Busy::Idle);
    // Stopping never costs a complete result: the earlier run stays (issue #15).
    let kept = h.state().doc.results.clone().expect("results are kept");
    assert!(kept.complete);
    assert_eq!(kept, r, "the earlier complete run, unchanged");
    h.get_by_label_contains("the previous complete results are kept");
    assert!(h.query_by_label_contains("Stopped early").is_none());

    h.state_mut().doc.spec.generation.max_tokens = 5;
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the run after a stop", |a| {
        a.busy == Busy::Idle && a.doc.results.as_ref().is_some_and(|r| r.complete)
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
    let spec = &h.state().doc.spec;
    let n_seq = spec.variants.len() + spec.conditions.len();
    // SmolLM2-135M: 23,040 bytes per cell; each sequence's stream rounds up to 256 cells.
    let kv = format!(
        "{:.1} MiB",
        (n_seq * 256 * 23_040) as f64 / (1 << 20) as f64
    );
    h.get_by_label(&format!("{kv} ({n_seq} sequences, f16)"));
    h.get_by_label("93.8 MiB");
    h.get_by_label_contains("prompt copies");

    // Loading replaces the estimate with llama.cpp's metadata; both count the same KV cache.
    h.get_by_label("Load").click();
    h.step();
    wait_for(&mut h, "the load", |a| a.busy == Busy::Idle);
    assert!(h.query_by_label("Before loading").is_none());
    h.get_by_label(&format!("{kv} ({n_seq} sequences, f16)"));
    h.get_by_label("memory for a run");
    assert!(h.query_by_label_contains("will not fit").is_none());

    // A q8_0 cache takes 34 bytes per 32 values where f16 takes 64: the estimate follows the
    // experiment's cache types.
    let mut spec = h.state().doc.spec.clone();
    spec.cache.k = kvlab::engine::CacheType::Q8_0;
    spec.cache.v = kvlab::engine::CacheType::Q8_0;
    h.state_mut().doc.spec = spec;
    h.run_steps(2);
    let kv = format!(
        "{:.1} MiB",
        (n_seq * 256 * 23_040 * 34 / 64) as f64 / (1 << 20) as f64
    );
    h.get_by_label(&format!("{kv} ({n_seq} sequences, q8_0)"));

    // A run far beyond this machine's memory (1,000 distinct conditions of 8,192 tokens:
    // ~100 GB of cache) is flagged before Run is pressed.
    let mut spec = h.state().doc.spec.clone();
    spec.generation.max_tokens = 8192;
    spec.conditions = (0..1000)
        .map(|seed| {
            kvlab::experiment::Condition::new(
                "SF",
                kvlab::experiment::Op::Noise { scale: 3.0, seed },
            )
        })
        .collect();
    h.state_mut().doc.spec = spec;
    h.run_steps(2);
    h.get_by_label_contains("will not fit in this machine's");
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
    h.state_mut().prefs.model_path = None;
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
    wait_for(&mut h, "the run", |a| a.doc.results.is_some());
    assert!(h.state().is_dirty());
    assert!(h.state().title().starts_with("• "), "{}", h.state().title());

    let path = dir.path().join("mine.kvlab");
    h.state_mut().save_to(&path);
    wait_for(&mut h, "the save", |a| a.tasks.is_idle());
    assert!(!h.state().is_dirty());
    assert_eq!(h.state().title(), "seed-short — kvlab");
    h.state_mut().doc.notes = "zero keeps it".into();
    h.step();
    assert!(h.state().title().starts_with("• "));

    // The same session, as if its results came from another model: read-only, with a way out.
    let mut s = kvlab::session::Session::load(&path).unwrap();
    s.model.as_mut().unwrap().fingerprint.sha256_head_tail = "0".repeat(64);
    let foreign = dir.path().join("foreign.kvlab");
    s.save(&foreign).unwrap();
    h.state_mut().open_session(&foreign);
    wait_for(&mut h, "the session to open", |a| a.tasks.is_idle());
    assert!(h.state().is_read_only());
    h.get_by_label_contains("Read-only: these results came from");
    assert!(
        h.query_by_label("Add condition").is_none(),
        "conditions are not editable"
    );
    h.get_by_label("Re-run on the loaded model").click();
    h.step();
    wait_for(&mut h, "the re-run", |a| {
        a.busy == Busy::Idle && a.doc.results.is_some()
    });
    assert!(
        !h.state().is_read_only(),
        "results now come from the loaded model"
    );

    // Closing with unsaved changes asks first.
    h.state_mut().ask_to_close();
    h.run_steps(3);
    h.get_by_label("Save changes?");
    h.get_by_label("Cancel").click();
    h.step();
    assert!(!h.state().is_asking_to_close());
}

#[test]
fn a_sweep_runs_from_its_tab_and_shows_its_effects() {
    let mut h = harness(4);
    load(&mut h, model_path().to_str().unwrap());
    open_tab(&mut h, "Sweeps");
    h.get_by_label("Needle + next k").click();
    h.step();
    // Any intervention: transplant takes the other city's rows.
    h.get_by_label("Sweep intervention").click();
    h.run_steps(2);
    h.get_by_label("transplant").click();
    h.run_steps(2);
    assert_eq!(
        h.state().prefs.sweep_op,
        kvlab::experiment::sweep::SweepOp::Transplant
    );
    h.get_by_label("Run sweep").click();
    h.step();
    wait_for(&mut h, "the sweep", |a| {
        a.doc.sweep.is_some() && a.busy == Busy::Idle
    });
    let r = h.state().doc.sweep.clone().unwrap();
    assert!(r.complete);
    assert_eq!(r.points.len(), 17, "the needle plus 0..=16 more tokens");
    assert_eq!(
        r.sweep.op,
        kvlab::experiment::Op::Transplant { from: "NY".into() }
    );
    h.get_by_label_contains("Span sweep of transplant from NY on SF");
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
    assert_eq!(h.state().prefs.gpu_layers, Some(11));
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
    assert_eq!(h.state().prefs.gpu_layers, None);
}

/// A sweep as a session file holds it (made up: these tests are about what the app keeps).
fn a_sweep() -> kvlab::experiment::sweep::SweepResults {
    use kvlab::experiment::sweep::{SweepKind, SweepPoint, SweepResults};
    let point = |label: &str, index| SweepPoint {
        label: label.into(),
        index,
        layer: None,
        preference: Some(-1.25),
        scores: vec![-3.0, -1.75],
        first_step_probes: vec![],
    };
    SweepResults {
        spec: Some(kvlab::experiment::ExperimentSpec::seed()),
        ..common::made_up_sweep(
            SweepKind::Position { range: None },
            point("no intervention", 0),
            vec![point("position 3", 3), point("position 4", 4)],
        )
    }
}

/// A session with notes and a sweep, saved in `dir` as NAME.kvlab.
fn a_session_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let mut spec = kvlab::experiment::ExperimentSpec::seed();
    spec.name = name.into();
    let mut s = kvlab::session::Session::new(spec);
    s.notes = "the sweep matters".into();
    s.sweep = Some(a_sweep());
    let path = dir.join(format!("{name}.kvlab"));
    s.save(&path).unwrap();
    path
}

/// A file dropped on the window, as the windowing layer hands it to egui.
#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn drop_file(h: &mut Harness<'_, KvlabApp>, path: &std::path::Path) {
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(path.to_path_buf())));
    h.run_steps(2);
    wait_for(h, "the dropped file", |a| a.tasks.is_idle());
}

#[test]
fn dropping_a_session_file_opens_it_and_other_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = a_session_file(dir.path(), "dropped");
    let mut h = harness(4);
    drop_file(&mut h, &path);
    assert_eq!(h.state().doc.spec.name, "dropped");
    assert_eq!(h.state().doc.path.as_deref(), Some(path.as_path()));
    assert_eq!(h.state().doc.sweep, Some(a_sweep()));
    assert!(!h.state().is_dirty(), "just opened");
    assert_eq!(h.state().title(), "dropped — kvlab");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    drop_file(&mut h, &text);
    h.get_by_label_contains("is none of them");
    assert_eq!(h.state().doc.spec.name, "dropped", "nothing replaced");

    // An experiment file (as `kvlab run` takes) opens as a new, unsaved document: the shipped
    // dataset, ready to run; saving would ask where, never write over the JSON.
    let cities =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/experiments/cities.json");
    drop_file(&mut h, &cities);
    assert_eq!(h.state().doc.spec.name, "cities");
    assert!(h.state().doc.spec.dataset.is_some());
    assert_eq!(h.state().doc.path, None);
    assert!(h.state().is_dirty());
    assert!(h.state().doc.sweep.is_none() && h.state().doc.results.is_none());
    // A broken one is named with its fault, and replaces nothing.
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, "{\"name\": \"x\", \"prompt\": ").unwrap();
    drop_file(&mut h, &bad);
    h.get_by_label_contains("broken.json");
    assert_eq!(h.state().doc.spec.name, "cities", "nothing replaced");
}

#[test]
fn restoring_the_autosave_keeps_the_sweep_and_the_file_it_belongs_to() {
    let dir = tempfile::tempdir().unwrap();
    let auto = a_session_file(dir.path(), "autosave");
    let mut h = harness(4);
    let file = dir.path().join("mine.kvlab");
    h.state_mut().prefs.last_session_path = Some(file.clone());
    h.state_mut().restore_autosave(&auto);
    h.step();
    assert_eq!(h.state().doc.sweep, Some(a_sweep()));
    assert_eq!(h.state().doc.notes, "the sweep matters");
    assert_eq!(h.state().doc.path.as_deref(), Some(file.as_path()));
    assert!(h.state().is_dirty(), "a restored autosave is not saved yet");
    // The sweep tab draws it.
    open_tab(&mut h, "Sweeps");
    h.get_by_label_contains("Position sweep of zero on SF");
}

#[test]
fn the_seed_experiment_starts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = a_session_file(dir.path(), "old");
    let mut h = harness(4);
    h.state_mut().open_session(&path);
    wait_for(&mut h, "the session to open", |a| a.tasks.is_idle());
    assert!(h.state().doc.sweep.is_some());
    h.get_by_label("Seed experiment").click();
    h.run_steps(2);
    let doc = &h.state().doc;
    assert_eq!(doc.spec, kvlab::experiment::ExperimentSpec::seed());
    assert!(
        doc.sweep.is_none(),
        "no stale sweep from the previous experiment"
    );
    assert!(doc.results.is_none() && doc.notes.is_empty() && doc.path.is_none());
    open_tab(&mut h, "Sweeps");
    assert!(
        h.query_by_label_contains("Position sweep of zero")
            .is_none()
    );
}

#[test]
fn the_first_start_explains_the_demo_and_can_be_dismissed() {
    let mut h = harness(4);
    h.get_by_label("Welcome to kvlab: the seed experiment");
    h.get_by_label(kvlab::ui::panels::WELCOME_TEXT);
    h.get_by_label("Got it").click();
    h.run_steps(2);
    assert!(
        h.state().prefs.welcome_dismissed,
        "remembered between launches"
    );
    assert!(h.query_by_label(kvlab::ui::panels::WELCOME_TEXT).is_none());
}

#[test]
fn a_stopped_first_run_shows_its_partial_results_and_edits_mark_results_stale() {
    let mut h = harness(400);
    load(&mut h, model_path().to_str().unwrap());
    // With nothing earlier to keep, a stopped run shows what it generated, marked partial.
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the first tokens", |a| a.live.tokens > 0);
    h.get_by_label("Stop").click();
    h.step();
    wait_for(&mut h, "the stop", |a| a.busy == Busy::Idle);
    let partial = h
        .state()
        .doc
        .results
        .clone()
        .expect("the partial run is shown");
    assert!(!partial.complete);
    assert!(partial.conditions[0].generation.tokens.len() < 400);
    h.get_by_label_contains("Stopped early");

    h.state_mut().doc.spec.generation.max_tokens = 4;
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the run", |a| {
        a.busy == Busy::Idle && a.doc.results.as_ref().is_some_and(|r| r.complete)
    });
    assert!(h.query_by_label(kvlab::ui::panels::STALE_TEXT).is_none());
    // Any edit that changes what a run does marks the results as stale, in the grid and in
    // the analysis views; renaming the experiment does not.
    h.state_mut().doc.spec.name = "renamed".into();
    h.step();
    assert!(h.query_by_label(kvlab::ui::panels::STALE_TEXT).is_none());
    h.get_by_label("Add condition").click();
    h.run_steps(2);
    assert_eq!(
        h.query_all_by_label(kvlab::ui::panels::STALE_TEXT).count(),
        2,
        "above the grid and above the analysis view"
    );
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the refresh", |a| {
        a.busy == Busy::Idle && a.doc.results.as_ref().is_some_and(|r| r.complete)
    });
    h.step();
    assert!(h.query_by_label(kvlab::ui::panels::STALE_TEXT).is_none());
}

/// Brings an analysis view to the front, as a click on its tab does (the dock shows the new
/// tab from the next frame on).
fn open_tab(h: &mut Harness<'static, KvlabApp>, title: &str) {
    h.get_by_label(title).click();
    h.run_steps(2);
}

/// Scrolls the token strip back to its first token with the mouse wheel over the (visible)
/// chip `visible`, as a user would.
fn scroll_token_strip_to_start(h: &mut Harness<'static, KvlabApp>, visible: &str) {
    // Let the strip finish bringing a moved needle into view first (a few frames).
    h.run_steps(3);
    let at = h.get_all_by_label(visible).next().unwrap().rect().center();
    h.hover_at(at);
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(100_000.0, 0.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
        modifiers: egui::Modifiers::NONE,
    });
    h.run_steps(3);
}

/// The first variant's token texts at the spec's needle, and that needle's start.
fn needle_text(a: &KvlabApp) -> Option<(String, usize)> {
    let span = a.doc.spec.needle_span?;
    let p = a.prepared.as_ref().filter(|p| p.span == span)?;
    let text = p.prompts[0].tokens[span.start..span.end]
        .iter()
        .map(|t| t.piece.as_str())
        .collect();
    Some((text, span.start))
}

#[test]
fn a_chosen_needle_follows_its_text_when_the_prompt_is_tokenized_anew() {
    use kvlab::experiment::spec::PromptMode;
    let mut h = harness(4);
    load(&mut h, model_path().to_str().unwrap());
    assert_eq!(h.state().doc.spec.prompt.mode, PromptMode::Plain);
    h.get_all_by_label(" city").next().unwrap().click();
    h.step();
    wait_for(&mut h, "the chosen needle", |a| {
        needle_text(a).is_some_and(|(_, at)| at == 7)
    });
    h.get_by_label_contains("needle: 7 (chosen)");

    // The chat template wraps the prompt in other tokens: the needle moves with " city".
    h.get_by_label("Chat template").click();
    h.step();
    wait_for(&mut h, "the chat-template tokens with the needle", |a| {
        a.prepared
            .as_ref()
            .is_some_and(|p| p.prompts[0].text.contains("<|im_start|>"))
            && needle_text(a).is_some()
    });
    let (text, at) = needle_text(h.state()).unwrap();
    assert_eq!(text, " city", "the needle is still the chosen text");
    assert_ne!(at, 7, "the template moved it");
    h.get_by_label_contains(&format!("needle: {at} (chosen)"));
    assert!(
        h.query_by_label_contains("found automatically again")
            .is_none()
    );

    // A needle only the template has ("<|im_start|>" at 0) has no place in plain text: Auto,
    // and the strip says why. The strip scrolled to the moved needle; the user scrolls back.
    scroll_token_strip_to_start(&mut h, " city");
    h.get_all_by_label("<|im_start|>").next().unwrap().click();
    h.step();
    wait_for(&mut h, "the template needle", |a| {
        needle_text(a).is_some_and(|(t, _)| t == "<|im_start|>")
    });
    h.get_by_label("Plain text").click();
    h.step();
    wait_for(
        &mut h,
        "the plain tokens, needle found where the variants differ",
        |a| {
            a.doc.spec.needle_span.is_none()
                && a.prepared.as_ref().is_some_and(|p| {
                    !p.prompts[0].text.contains("<|im_start|>")
                        && p.span == Span { start: 6, end: 7 }
                })
        },
    );
    h.get_by_label_contains("found automatically again");
    h.get_by_label_contains("needle: 6 (found where the variants differ)");
}

#[test]
fn a_model_kvlab_cannot_edit_says_so_at_load_and_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let forged = dir.path().join("mamba.gguf");
    common::gguf_writer::tiny_mamba(&model_path(), &forged);
    let mut h = harness(4);
    // Known from the header, before loading.
    h.get_by_label("Model path").focus();
    h.step();
    h.get_by_label("Model path")
        .type_text(forged.to_str().unwrap());
    h.step();
    wait_for(&mut h, "the header", |a| {
        a.peek.as_ref().is_some_and(|p| p.summary.is_some())
    });
    h.step();
    h.get_by_label_contains(kvlab::ui::panels::UNSUPPORTED_BEFORE_LOADING);
    h.get_by_label("Load").click();
    h.step();
    wait_for(&mut h, "the load to end", |a| a.busy == Busy::Idle);
    assert!(h.state().model.is_some(), "{:?}", h.state().error);
    // Said at once, in the model panel, with the engine's reason.
    let said = h.get_by_label_contains("KV surgery: not supported");
    assert!(
        said.accesskit_node()
            .value()
            .is_some_and(|l| l.contains("mamba keeps a recurrent state")),
        "{said:?}"
    );
    h.get_by_label_contains("Loaded for inspection only");
    // The tokens can still be inspected; Run and Run sweep are disabled.
    wait_for(&mut h, "the token strip", |a| a.prepared.is_some());
    assert!(h.get_by_label("Run").accesskit_node().is_disabled());
    assert!(!h.state().can_run());
    h.get_by_label("Run").click();
    h.run_steps(3);
    assert_eq!(h.state().busy, Busy::Idle, "nothing started");
    assert!(h.state().doc.results.is_none());
}

#[test]
fn the_first_start_offers_the_demo_model_and_no_made_up_layers() {
    let mut h = harness(4);
    h.state_mut().demo_model = Some(model_path());
    h.step();
    // Before a model is loaded, the conditions name their layers without a layer count.
    assert!(
        h.query_by_label("First layer of condition 1").is_none(),
        "no layer numbers before a model is loaded"
    );
    assert!(h.query_all_by_label("layers all").count() > 0);
    h.get_by_label("Use the demo model").click();
    h.step();
    wait_for(&mut h, "the demo model", |a| {
        a.busy == Busy::Idle && a.model.is_some()
    });
    assert_eq!(h.state().model.as_ref().unwrap().path, model_path());
    assert!(h.query_by_label("Use the demo model").is_none());
    // Now the layer range is the model's: 0–29.
    let first = h.get_by_label("First layer of condition 1");
    assert_eq!(first.accesskit_node().numeric_value(), Some(0.0));
    let last = h.get_by_label("Last layer of condition 1");
    assert_eq!(last.accesskit_node().numeric_value(), Some(29.0));
}

/// A sweep is drawn over the prompt it was measured on, and says so when the experiment on
/// screen is another one (or when its file did not record which one).
#[test]
fn a_sweep_keeps_its_own_prompt_and_goes_stale_with_the_experiment() {
    use kvlab::engine::TokenPiece;
    use kvlab::experiment::spec::PromptMode;
    use kvlab::ui::panels::{SWEEP_STALE_TEXT, SWEEP_UNKNOWN_TEXT};
    let mut h = harness(4);
    let mut sweep = a_sweep();
    sweep.tokens = (0..6)
        .map(|i| TokenPiece {
            id: i,
            piece: format!("tok{i}"),
        })
        .collect();
    // Measured on the experiment on screen.
    sweep.spec = Some(h.state().doc.spec.clone());
    h.state_mut().doc.sweep = Some(sweep);
    open_tab(&mut h, "Sweeps");
    h.get_by_label("tok3");
    assert!(h.query_by_label(SWEEP_STALE_TEXT).is_none());

    h.state_mut().doc.spec.prompt.mode = PromptMode::ChatTemplate;
    h.step();
    h.get_by_label(SWEEP_STALE_TEXT);
    h.get_by_label("tok3");
    h.state_mut().doc.spec.prompt.mode = PromptMode::Plain;
    h.step();
    assert!(h.query_by_label(SWEEP_STALE_TEXT).is_none());

    h.state_mut().doc.sweep.as_mut().unwrap().spec = None;
    h.step();
    h.get_by_label(SWEEP_UNKNOWN_TEXT);
}

/// A harness with the window at `w` × `h` (no model).
fn harness_sized(w: f32, h: f32) -> Harness<'static, KvlabApp> {
    let prefs = Prefs {
        threads: 2,
        ..Prefs::default()
    };
    let app = KvlabApp::new(&egui::Context::default(), prefs);
    Harness::builder()
        .with_size(egui::vec2(w, h))
        .allow_missing_glyphs()
        .build_ui_state(|ui, app: &mut KvlabApp| app.show(ui), app)
}

fn within(outer: egui::Rect, inner: egui::Rect) -> bool {
    outer.expand(0.5).contains_rect(inner)
}

/// A position × layer sweep over positions 3–5 of a six-token prompt, layers 0–2, the needle
/// at 4.
fn a_position_layer_sweep() -> kvlab::experiment::sweep::SweepResults {
    use kvlab::engine::TokenPiece;
    use kvlab::experiment::sweep::SweepKind;
    let mut s = a_sweep();
    s.sweep.kind = SweepKind::PositionLayer { range: None };
    let p = s.points[0].clone();
    s.points = (3..6)
        .flat_map(|pos| (0..3).map(move |l| (pos, l)))
        .map(|(pos, l)| {
            let mut q = p.clone();
            q.label = format!("position {pos}, layer {l}");
            q.index = pos;
            q.layer = Some(l);
            q.preference = Some(-(pos as f64) - l as f64 * 0.5);
            q
        })
        .collect();
    s.tokens = (0..6)
        .map(|i| TokenPiece {
            id: i,
            piece: format!("tok{i}"),
        })
        .collect();
    s.spec.as_mut().unwrap().needle_span = Some(Span { start: 4, end: 5 });
    s
}

/// Issue #15 item 9: the sweep map numbers its layers and positions and shows its colour scale;
/// the position strip marks the needle.
#[test]
fn sweep_maps_have_axes_and_a_scale_and_the_strip_marks_the_needle() {
    let mut h = harness(4);
    let sweep = a_position_layer_sweep();
    h.state_mut().doc.spec = sweep.spec.clone().unwrap();
    h.state_mut().doc.sweep = Some(sweep.clone());
    open_tab(&mut h, "Sweeps");
    h.get_by_label_contains("layer 0–2 (rows), position 3–5 (columns)");
    // The scale's ends: the effects' sizes run from |...| lowest to highest.
    let effects = sweep.effects(0);
    let abs: Vec<f64> = effects.iter().map(|e| e.abs()).collect();
    let lo = abs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = abs.iter().copied().fold(0.0, f64::max);
    h.get_by_label(&format!("{lo:.4}"));
    h.get_by_label(&format!("{hi:.4}"));
    assert!(h.query_by_label_contains("rows marked").is_none());

    // A model with sliding-window layers: they are marked and said to slide (issue #17).
    let mut sliding = sweep.clone();
    sliding.sliding_layers = vec![0, 2];
    sliding.sliding_window = Some(512);
    h.state_mut().doc.sweep = Some(sliding);
    h.step();
    h.get_by_label_contains("2 rows marked: sliding-window layer");
    h.get_by_label_contains("they attend to the last 512 tokens only");

    // A position sweep over the same prompt: the needle's chip says so.
    let mut strip = a_sweep();
    strip.tokens = sweep.tokens.clone();
    strip.spec = sweep.spec.clone();
    h.state_mut().doc.sweep = Some(strip);
    h.step();
    // The needle's chip says so on hover (its accessible description); its neighbour does not.
    let needle = h.get_by_label("tok4");
    let d = needle.accesskit_node().description().unwrap_or_default();
    assert!(d.contains("needle"), "{d}");
    let other = h.get_by_label("tok3");
    let d = other.accesskit_node().description().unwrap_or_default();
    assert!(!d.contains("needle"), "{d}");
}

/// Issue #15 item 10: a sweep says how many items are done and about how long the rest takes.
#[test]
fn a_running_sweep_counts_items_and_estimates_the_time_left() {
    let mut h = harness(4);
    let started = std::time::Instant::now().checked_sub(std::time::Duration::from_secs(8));
    h.state_mut().live = kvlab::ui::app::LiveGrid {
        started,
        sweep: true,
        ..Default::default()
    };
    h.state_mut().busy = Busy::Running {
        stage: "sweeping".into(),
        done: 4,
        total: 17,
    };
    h.step();
    h.get_by_label_contains("4/17 items, about");
    h.get_by_label_contains("s left");
    // The app would go idle on its own only with a worker job; put it back for the drop.
    h.state_mut().busy = Busy::Idle;
    h.step();
}

/// Issue #15 item 11: a long error wraps inside a small window and can be dismissed.
#[test]
fn a_long_error_wraps_and_can_be_dismissed_in_a_small_window() {
    let mut h = harness_sized(640.0, 480.0);
    let long = "the model file /home/someone/models/a-very-long-directory-name/another/one/\
                and-the-file-itself.Q4_K_M.gguf could not be read because "
        .repeat(4);
    h.state_mut().error = Some(long.clone());
    h.step();
    let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(640.0, 480.0));
    let msg = h.get_by_label(&format!("Error: {long}")).rect();
    assert!(
        msg.max.x <= 640.5,
        "the message wraps within the window: {msg:?}"
    );
    let dismiss = h.get_by_label("Dismiss");
    assert!(within(window, dismiss.rect()), "{:?}", dismiss.rect());
    dismiss.click();
    h.step();
    assert!(h.state().error.is_none());
}

/// Issue #15 item 11: at 640 × 480 Run and Stop stay in the window and the set-up column leaves
/// the experiment room.
#[test]
fn run_and_stop_stay_visible_at_640_by_480() {
    let mut h = harness_sized(640.0, 480.0);
    h.run_steps(2);
    let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(640.0, 480.0));
    for b in ["Run", "Stop"] {
        let r = h.get_by_label(b).rect();
        assert!(within(window, r), "{b} is in the window: {r:?}");
    }
    let add = h.get_by_label("Add condition").rect();
    // "Add condition" sits about 100 px into the middle column, which now starts before 300.
    assert!(
        add.min.x < 400.0,
        "the middle keeps half the window: {add:?}"
    );
}

/// Issue #15 item 11: without a file dialog, Open model… points at the path field.
#[test]
fn without_a_file_dialog_the_app_points_at_the_path_field() {
    use kvlab::ui::app::{NO_DIALOG_MODEL, dialog_did_not_show};
    assert!(dialog_did_not_show(std::time::Duration::from_millis(5)));
    assert!(!dialog_did_not_show(std::time::Duration::from_secs(2)));
    let mut h = harness(4);
    h.state_mut().no_file_dialog = true;
    h.get_by_label("Open model…").click();
    h.run_steps(2);
    assert_eq!(h.state().error.as_deref(), Some(NO_DIALOG_MODEL));
    h.get_by_label(&format!("Error: {NO_DIALOG_MODEL}"));
    h.get_by_label("Model path");
}

/// Issue #15 item 10: a prompt wider than the window scrolls to show the needle, and again when
/// the needle moves.
#[test]
fn the_token_strip_scrolls_to_the_needle() {
    use kvlab::engine::TokenPiece;
    use kvlab::runner::{Prepared, PreparedPrompt};
    let mut h = harness_sized(900.0, 600.0);
    let tokens: Vec<TokenPiece> = (0..200)
        .map(|i| TokenPiece {
            id: i,
            piece: format!("w{i}"),
        })
        .collect();
    h.state_mut().prepared = Some(Prepared {
        prompts: vec![PreparedPrompt {
            name: "SF".into(),
            text: String::new(),
            tokens,
        }],
        span: Span {
            start: 150,
            end: 151,
        },
        warnings: vec![],
    });
    h.run_steps(3);
    let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(900.0, 600.0));
    let r = h.get_by_label("w150").rect();
    assert!(within(window, r), "the needle is in view: {r:?}");
    h.state_mut().prepared.as_mut().unwrap().span = Span { start: 5, end: 6 };
    h.run_steps(3);
    let r = h.get_by_label("w5").rect();
    assert!(within(window, r), "the moved needle is in view: {r:?}");
}

/// Issue #15 item 8: after a seed run at 1600×1000 the outcome grid and an analysis view are on
/// screen at once, each in its own area; the grid's texts use the width there is; the mouse
/// wheel over a cell scrolls the grid (no scroll area inside a cell captures it); an analysis
/// tab brought to the front shows there.
#[test]
fn the_grid_and_the_analysis_views_each_have_room_after_a_run() {
    let mut h = harness_sized(1600.0, 1000.0);
    h.state_mut().doc.spec.generation.max_tokens = 24;
    load(&mut h, model_path().to_str().unwrap());
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the run", |a| {
        a.doc.results.is_some() && a.busy == Busy::Idle
    });
    h.run_steps(3);
    let window = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(1600.0, 1000.0));
    let r = h.state().doc.results.clone().unwrap();
    let baseline = shown_rect(&h, "baseline");
    assert!(
        within(window, baseline),
        "the grid is on screen: {baseline:?}"
    );
    // The variants' column headers sit just above the baseline row.
    let header = |name: &str| -> egui::Rect {
        h.get_all_by_label(name)
            .filter_map(|n| node_rect(&n))
            .find(|r| r.max.y <= baseline.min.y + 2.0 && r.min.y > baseline.min.y - 40.0)
            .unwrap_or_else(|| panic!("no column header {name}"))
    };
    let (sf, ny) = (header("SF"), header("NY"));
    assert!(
        ny.min.x - sf.min.x > 400.0,
        "the columns share the width there is, not a fixed narrow one: {sf:?} {ny:?}"
    );
    // The probe chart (the first tab) is on screen with the grid.
    let probe = shown_rect(&h, "\" San\"");
    assert!(
        within(window, probe),
        "the probe chart is on screen: {probe:?}"
    );

    // The wheel over a cell moves the whole grid: no cell keeps it for itself.
    h.hover_at(egui::pos2(sf.min.x + 100.0, baseline.center().y));
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(0.0, -120.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
        modifiers: egui::Modifiers::NONE,
    });
    h.run_steps(3);
    let moved = h
        .get_all_by_label("baseline")
        .filter_map(|n| node_rect(&n))
        .next();
    assert!(
        moved.is_none_or(|m| m.min.y < baseline.min.y - 20.0),
        "the grid scrolled under the wheel: {baseline:?} → {moved:?}"
    );

    open_tab(&mut h, "Score table");
    let verdict = r.conditions[0].verdict.as_ref().unwrap().to_string();
    let in_table = h
        .get_all_by_label(&verdict)
        .filter_map(|n| node_rect(&n))
        .filter(|r| within(window, *r))
        .count();
    assert!(
        in_table >= 2,
        "the verdict shows in the grid and the score table"
    );
}

/// Where a widget is laid out, if it is.
fn node_rect(n: &egui_kittest::Node<'_>) -> Option<egui::Rect> {
    let b = n.accesskit_node().bounding_box()?;
    Some(egui::Rect::from_min_max(
        egui::pos2(b.x0 as f32, b.y0 as f32),
        egui::pos2(b.x1 as f32, b.y1 as f32),
    ))
}

/// Where the first widget named `label` that is laid out is.
fn shown_rect(h: &Harness<'static, KvlabApp>, label: &str) -> egui::Rect {
    h.get_all_by_label(label)
        .find_map(|n| node_rect(&n))
        .unwrap_or_else(|| panic!("no widget {label:?} on screen"))
}

/// Issue #16: a dataset experiment runs from the app; its Dataset tab comes to the front with
/// the aggregate table `kvlab run` prints (same numbers), and the session keeps every wave.
#[test]
fn a_dataset_runs_in_the_app_and_shows_its_aggregates() {
    use kvlab::experiment::dataset;
    let mut h = harness_sized(1600.0, 1000.0);
    load(&mut h, model_path().to_str().unwrap());
    h.state_mut().doc.spec =
        kvlab::experiment::ExperimentSpec::from_json(&common::tiny_dataset_json().to_string())
            .unwrap();
    h.run_steps(2);
    h.get_by_label_contains("3 needles, 2 prompt templates, 4 items");
    // The memory estimate is a wave's: 3 needles and 6 cells (no two edit one needle alike).
    h.get_by_label_contains("(9 sequences, f16)");
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the dataset", |a| {
        a.doc.dataset.is_some() && a.busy == Busy::Idle
    });
    h.run_steps(3);
    let d = h.state().doc.dataset.clone().unwrap();
    assert!(d.complete);
    assert_eq!(h.state().prefs.tab, kvlab::ui::prefs::AnalysisTab::Dataset);
    h.get_by_label(&dataset::title(&d));
    // Two waves (one per template) of two items of three cells; no two cells of a wave edit the
    // same needle, so every cell is a run of its own.
    h.get_by_label_contains("2 wave(s): 12 cells in 12 condition runs");
    let a = dataset::aggregates(&d);
    assert_eq!(a.items, (4, 4));
    for g in &a.overall {
        let cells = dataset::cells(g);
        // The flip rate with its interval, as the CLI prints it.
        assert!(
            h.query_all_by_label(&cells[3]).count() > 0,
            "{} shows {:?}",
            g.condition,
            cells[3]
        );
    }
    // An item's own grid: pick it from the list; its conditions' verdicts and texts show.
    let item = &d.items[1];
    let template = &d.spec.dataset.as_ref().unwrap().templates[item.template].name;
    // (Below the charts, out of the tab's view: clicked through the accessibility tree, as a
    // screen reader would.)
    h.get_by_label("item (or click a dot)").click_accesskit();
    h.run_steps(2);
    h.get_by_label(&format!(
        "item 1: {template}, {} vs {}",
        item.needle, item.partner
    ))
    .click_accesskit();
    h.run_steps(2);
    let cells = d.item_conditions(1).expect("item 1 finished");
    assert_eq!(cells.len(), 3);
    for c in cells {
        // As the app previews a text: newlines as pilcrows.
        let text = kvlab::experiment::grid::preview(&c.generation.text, 160).replace('⏎', "¶ ");
        assert!(!text.is_empty());
        assert!(
            h.query_all_by_label(&text).count() > 0,
            "{} shows its text {text:?}",
            c.label
        );
    }
    let s = h.state().to_session();
    assert_eq!(
        s.dataset.as_ref(),
        Some(&d),
        "the session keeps the dataset"
    );
}

/// Issue #17: the KV cache's types are chosen in the experiment editor and belong to the
/// experiment (results measured with another type go stale).
#[test]
fn the_cache_type_is_chosen_in_the_editor() {
    let mut h = harness(4);
    h.step();
    let k = h.get_by_label("keys");
    assert_eq!(k.value().as_deref(), Some("f16"));
    k.click();
    h.run_steps(2);
    h.get_by_label("q8_0").click();
    h.run_steps(2);
    assert_eq!(h.state().doc.spec.cache.k, kvlab::engine::CacheType::Q8_0);
    assert_eq!(h.get_by_label("keys").value().as_deref(), Some("q8_0"));
    assert_eq!(h.get_by_label("values").value().as_deref(), Some("f16"));
}

/// Issue #16: per-head surgery from the conditions editor: a condition can be limited to some of
/// the model's KV heads, and says so.
#[test]
fn a_condition_can_be_limited_to_some_kv_heads() {
    let mut h = harness(4);
    load(&mut h, model_path().to_str().unwrap());
    let i = (h.state().doc.spec.conditions.iter())
        .position(|c| c.op == kvlab::experiment::Op::Zero)
        .expect("the seed grid zeroes");
    let n = i + 1;
    // (Possibly below the panel's view: clicked through the accessibility tree.)
    h.get_by_label(&format!("Heads of condition {n}"))
        .click_accesskit();
    h.run_steps(2);
    h.get_by_label(&format!("KV head 1 of condition {n}"))
        .click_accesskit();
    h.run_steps(2);
    let c = &h.state().doc.spec.conditions[i];
    assert_eq!(c.site.heads, Some([0, 2].into_iter().collect()));
    assert!(c.row_label().contains("[heads 0,2]"), "{}", c.row_label());
    // Every head again is "all heads".
    h.get_by_label(&format!("KV head 1 of condition {n}"))
        .click_accesskit();
    h.run_steps(2);
    assert_eq!(h.state().doc.spec.conditions[i].site.heads, None);
}

/// Issue #16: noise in the app: its σ and seed are set per condition, "4 more noise draws" adds
/// draws with new seeds, and a run summarizes the draws under the score table.
#[test]
fn noise_draws_are_added_in_the_editor_and_summarized() {
    use kvlab::experiment::{Condition, Op};
    let mut h = harness(2);
    load(&mut h, model_path().to_str().unwrap());
    let noise = Op::Noise {
        scale: 3.0,
        seed: 0,
    };
    h.state_mut().doc.spec.conditions =
        vec![Condition::new("SF", Op::None), Condition::new("SF", noise)];
    h.run_steps(2);
    h.get_by_label("Noise scale of condition 2")
        .accesskit_node()
        .numeric_value()
        .filter(|v| *v == 3.0)
        .expect("3 σ");
    h.get_by_label("4 more noise draws").click_accesskit();
    h.run_steps(2);
    let seeds: Vec<u64> = (h.state().doc.spec.conditions.iter())
        .filter_map(|c| match c.op {
            Op::Noise { seed, .. } => Some(seed),
            _ => None,
        })
        .collect();
    assert_eq!(seeds, vec![0, 1, 2, 3, 4]);
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the run", |a| {
        a.busy == Busy::Idle && a.doc.results.is_some()
    });
    open_tab(&mut h, "Score table");
    h.get_by_label("Noise draws");
    h.get_by_label_contains("SF, noise 3σ over 5 seeds: preference");
}
