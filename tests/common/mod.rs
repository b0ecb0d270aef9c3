//! Shared set-up for the integration tests: the real test model, loaded once per test binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use kvlab::engine::{LoadOptions, LoadedModel};
use kvlab::experiment::ExperimentSpec;

pub mod gguf_writer;

/// The test model's path: `KVLAB_TEST_MODEL` (set by `make test`) or the default cache.
pub fn model_path() -> PathBuf {
    if let Ok(p) = std::env::var("KVLAB_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cache = std::env::var("XDG_CACHE_HOME").unwrap_or_else(|_| format!("{home}/.cache"));
    let p = PathBuf::from(cache).join("kvlab/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "the test model is missing: run `make test` (it fetches it) or set KVLAB_TEST_MODEL"
    );
    p
}

/// The test model, loaded once.
pub fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        kvlab::engine::log::init(0);
        LoadedModel::load(&model_path(), &LoadOptions::default(), None, |_| {})
            .expect("the test model loads")
    })
}

/// Whether the test model's layers run on a GPU backend (a `vulkan`/`cuda`/`metal` build on a
/// machine with such a device): there batched and one-token evaluations use different kernels.
pub fn layers_on_gpu() -> bool {
    kvlab::engine::devices().iter().any(|d| d.is_gpu)
}

/// Asserts that two scores of the same thing, computed in differently shaped batches, agree:
/// bit-identical on the CPU, where llama.cpp's kernels do not depend on the batch; within
/// 0.05 + 1 % where the layers run on a GPU backend, which picks kernels by batch shape (Vulkan on
/// lavapipe: a preference of 4.947 in a sweep vs 4.911 in a grid).
pub fn assert_same_score(a: Option<f64>, b: Option<f64>, what: &str) {
    let (Some(x), Some(y)) = (a, b) else {
        assert_eq!(a, b, "{what}");
        return;
    };
    if layers_on_gpu() {
        let tolerance = 0.05 + 0.01 * x.abs().max(y.abs());
        assert!(
            (x - y).abs() <= tolerance,
            "{what}: {x} vs {y} (tolerance {tolerance} on a GPU backend)"
        );
    } else {
        assert_eq!(x, y, "{what}: bit-exact on the CPU");
    }
}

/// A shipped experiment.
pub fn asset_spec(name: &str) -> ExperimentSpec {
    let path = format!(
        "{}/assets/experiments/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    ExperimentSpec::from_json(&std::fs::read_to_string(&path).expect("asset exists"))
        .expect("asset parses")
}

/// Runs the `kvlab` binary as a user would (without a model from the environment).
pub fn kvlab(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kvlab"))
        .args(args)
        .env_remove("KVLAB_MODEL")
        .output()
        .expect("kvlab runs")
}

/// Steps a UI harness until `done` holds; the app's worker runs in the background meanwhile. A
/// guard against hangs (5 minutes), not a speed assertion.
pub fn wait_for(
    h: &mut egui_kittest::Harness<'_, kvlab::ui::KvlabApp>,
    what: &str,
    done: impl Fn(&kvlab::ui::KvlabApp) -> bool,
) {
    let start = std::time::Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.step();
    }
    h.step();
}

/// A tiny dataset cut from the shipped `cities.json` (for CI time): three needles, the first
/// two prompt templates, two listed pairs, none/zero/transplant, four tokens generated.
pub fn tiny_dataset_json() -> serde_json::Value {
    let path = format!(
        "{}/assets/experiments/cities.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("asset exists")).unwrap();
    v["name"] = "tiny-cities".into();
    v["generation"]["max_tokens"] = 4.into();
    let d = &mut v["dataset"];
    d["needles"].as_array_mut().unwrap().truncate(3);
    d["templates"].as_array_mut().unwrap().truncate(2);
    d["pairs"] = serde_json::json!({"listed": [["SF", "NY"], ["LA", "SF"]]});
    d["conditions"] = serde_json::json!([
        {"op": {"kind": "none"}},
        {"op": {"kind": "zero"}},
        {"op": {"kind": "transplant", "from": "{partner}"}}
    ]);
    v
}

/// Evaluates `tokens` at positions 0.. in sequence `seq` (no logits): a prompt's cache.
pub fn eval_tokens(lab: &mut kvlab::engine::Lab<'_>, seq: i32, tokens: &[i32]) {
    let items = kvlab::engine::lab::BatchItem::run(seq, 0, tokens);
    lab.eval(&items, |_, _| {}).unwrap();
}

/// Loads the test model in the app (as the model panel's Load does) and waits for the model and
/// its token strip.
pub fn load_test_model(h: &mut egui_kittest::Harness<'_, kvlab::ui::KvlabApp>) {
    h.state_mut()
        .queue(kvlab::ui::commands::Command::LoadModel(model_path()));
    h.step();
    wait_for(h, "the model", |a| {
        a.busy == kvlab::ui::app::Busy::Idle && a.model.is_some()
    });
    wait_for(h, "the token strip", |a| a.prepared.is_some());
}

/// A made-up complete sweep of zero on SF (tests about what the app keeps and draws, not about
/// numbers); callers fill in what their test is about with struct update syntax.
pub fn made_up_sweep(
    kind: kvlab::experiment::sweep::SweepKind,
    reference: kvlab::experiment::sweep::SweepPoint,
    points: Vec<kvlab::experiment::sweep::SweepPoint>,
) -> kvlab::experiment::sweep::SweepResults {
    use kvlab::experiment::sweep::{SweepResults, SweepSpec};
    SweepResults {
        sweep: SweepSpec {
            kind,
            variant: "SF".into(),
            op: kvlab::experiment::Op::Zero,
            layers: kvlab::experiment::LayerSet::All,
            part: kvlab::experiment::spec::KvPart::Both,
        },
        measure: "expected answers".into(),
        reference,
        points,
        complete: true,
        spec: None,
        tokens: Vec::new(),
        sliding_layers: Vec::new(),
        sliding_window: None,
        shared_cache: false,
    }
}
