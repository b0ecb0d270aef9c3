//! The `kvlab` command line end to end, as a user runs it: the seed experiment, and bad input
//! that must end in a clear message and a non-zero exit, never a panic.

mod common;

use std::path::Path;

use common::{kvlab, model_path};
use serde_json::Value;

/// Runs kvlab expecting failure; returns stderr after checking it is a message, not a panic.
fn fails(args: &[&str]) -> String {
    let out = kvlab(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "kvlab {args:?} should fail; stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("panicked"),
        "kvlab {args:?} panicked: {stderr}"
    );
    assert!(stderr.contains("error: "), "{stderr}");
    stderr
}

fn seed_path() -> String {
    format!(
        "{}/assets/experiments/seed-short.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The seed spec, edited, written to a temporary file.
fn edited_seed(dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(seed_path()).unwrap()).unwrap();
    edit(&mut v);
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    p.display().to_string()
}

#[test]
fn seed_experiment_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out_json = dir.path().join("results.json");
    let model = model_path();
    let out = kvlab(&[
        "run",
        &seed_path(),
        "--model",
        model.to_str().unwrap(),
        "--format",
        "markdown",
        "--out",
        out_json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| condition | SF | NY |"), "{stdout}");
    for row in [
        "| baseline |",
        "| none |",
        "| zero |",
        "| transplant (other city) |",
        "| remove |",
    ] {
        assert!(stdout.contains(row), "missing row {row}: {stdout}");
    }
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    assert_eq!(
        results["needle_span"],
        serde_json::json!({"start": 6, "end": 7})
    );
    let conditions = results["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 8);
    for c in conditions {
        assert_eq!(
            c["generation"]["tokens"].as_array().unwrap().len(),
            100,
            "100 tokens, as the seed"
        );
        assert_eq!(
            c["generation"]["steps"][0]["top"].as_array().unwrap().len(),
            10
        );
        assert_eq!(
            c["generation"]["steps"][0]["probes"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
    }
    let baseline_sf = &results["variants"][0]["baseline"]["tokens"];
    assert_eq!(
        &conditions[0]["generation"]["tokens"], baseline_sf,
        "control = baseline"
    );
}

#[test]
fn inspect_shows_metadata_and_tokens() {
    let model = model_path();
    let out = kvlab(&[
        "inspect",
        model.to_str().unwrap(),
        "--text",
        "I am flying to SF city",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("architecture   llama"), "{stdout}");
    assert!(stdout.contains("layers         30"), "{stdout}");
    assert!(stdout.contains("quantization   Q4_1"), "{stdout}");
    assert!(stdout.contains("\" SF\""), "{stdout}");
    // Devices and the KV cache's home; --gpu-layers 0 keeps it in host memory in any build.
    assert!(stdout.contains("devices        CPU: "), "{stdout}");
    let out = kvlab(&["--gpu-layers", "0", "inspect", model.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("KV cache       host memory ("), "{stdout}");
}

#[test]
fn version_names_the_llama_cpp_build_and_the_backends() {
    let out = kvlab(&["--version"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.starts_with(&format!("kvlab {}\n", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(
        stdout.contains("llama.cpp  llama-cpp-sys-2 0.1.161, ggml 0."),
        "{stdout}"
    );
    let backends = stdout
        .lines()
        .find_map(|l| l.strip_prefix("backends   "))
        .expect("a backends line");
    assert!(backends.starts_with("cpu"), "{stdout}");
    assert_eq!(
        backends.contains("vulkan"),
        cfg!(feature = "vulkan"),
        "{stdout}"
    );
}

#[test]
fn bad_model_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_path();

    let e = fails(&["run", &seed, "--model", "/nonexistent/model.gguf"]);
    assert!(e.contains("model file not found"), "{e}");

    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "these are my notes, not a model\n").unwrap();
    let e = fails(&["run", &seed, "--model", text.to_str().unwrap()]);
    assert!(e.contains("is not a GGUF model file"), "{e}");

    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(model_path()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&["inspect", truncated.to_str().unwrap()]);
    assert!(
        e.contains("it is truncated") && e.contains("incomplete"),
        "{e}"
    );
}

#[test]
fn bad_experiments_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_path();
    let model = model.to_str().unwrap();
    let run = |spec: &str| fails(&["run", spec, "--model", model]);

    let p = edited_seed(dir.path(), "no-needle.json", |v| {
        v["prompt"]["turns"][0]["content"] = "I am flying somewhere.".into();
    });
    assert!(run(&p).contains("no {needle} placeholder"));

    let p = dir.path().join("broken.json");
    std::fs::write(&p, "{ \"variants\": [").unwrap();
    assert!(run(p.to_str().unwrap()).contains("not valid"));

    let p = edited_seed(dir.path(), "lengths.json", |v| {
        v["variants"][1]["needle"] = "New York".into();
    });
    assert!(run(&p).contains("do not align"));

    let p = edited_seed(dir.path(), "layers.json", |v| {
        v["conditions"][2]["site"] = serde_json::json!({"layers": "0-99"});
    });
    let e = run(&p);
    assert!(e.contains("layer 99 is out of range"), "{e}");

    let p = edited_seed(dir.path(), "span.json", |v| {
        v["needle_span"] = serde_json::json!({"start": 900, "end": 901});
    });
    assert!(run(&p).contains("outside the prompt"));

    let p = edited_seed(dir.path(), "remove-layers.json", |v| {
        v["conditions"][6]["site"] = serde_json::json!({"layers": "0-3"});
    });
    assert!(run(&p).contains("all layers"));
}

#[test]
fn the_benchmark_runs_in_quick_mode_and_its_output_parses() {
    let model = model_path();
    let out = kvlab(&[
        "bench",
        "--quick",
        "--json",
        "--model",
        model.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: kvlab::bench::BenchReport =
        serde_json::from_slice(&out.stdout).expect("bench prints its report as JSON");
    assert!(r.quick);
    for (name, v) in [
        ("raw decode", r.raw_decode_tokens_per_s),
        ("grid speed-up", r.grid_speedup),
        ("intervention", r.intervention_s),
        ("decode step", r.decode_step_s),
        ("sweep", r.sweep_positions_per_s),
        ("grid positions", r.grid_positions_per_s),
        ("dataset batched", r.dataset_items_per_s),
        ("dataset one grid per item", r.dataset_separate_items_per_s),
        ("all-pairs dataset batched", r.all_pairs_items_per_s),
        (
            "all-pairs dataset one grid per item",
            r.all_pairs_separate_items_per_s,
        ),
        ("attention capture ratio", r.attention_ratio),
        ("grid scoring", r.grid_score_s),
        ("grid scoring from scratch", r.grid_score_scratch_s),
        ("grid prompt phase", r.grid_prompt_s),
        ("bare prompt loop", r.bare_prompt_s),
        ("grid generation phase", r.grid_generate_s),
        ("bare generation loop", r.bare_generate_s),
    ] {
        assert!(v.is_finite() && v > 0.0, "{name} = {v}");
    }
    assert!(r.generation_loop_overhead.is_finite());
    assert_eq!((r.dataset_items, r.all_pairs_items), (4, 6));
    // Reused scores are the scores from scratch (bit for bit on the CPU).
    assert_eq!(r.grid_score_max_difference, 0.0);
    assert!(
        0 < r.grid_score_tokens && r.grid_score_tokens < r.grid_score_scratch_tokens,
        "scoring evaluated {} tokens, from scratch {}",
        r.grid_score_tokens,
        r.grid_score_scratch_tokens
    );
}

/// `kvlab bench --scale` on a short prompt: it writes its random-weight model with Llama 3.1
/// 8B's cache shape next to the demo model (a link in a temporary folder here) and reports every
/// figure, the seed grid's phases included.
#[test]
fn the_scale_benchmark_runs_on_a_short_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo.gguf");
    std::os::unix::fs::symlink(model_path(), &demo).unwrap();
    let out = kvlab(&[
        "bench",
        "--scale",
        "--json",
        "--prompt-tokens",
        "128",
        "--items",
        "2",
        "--threads",
        "2",
        "--model",
        demo.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: kvlab::bench::scale::ScaleReport =
        serde_json::from_slice(&out.stdout).expect("the scale bench prints its report as JSON");
    assert!(
        dir.path()
            .join(kvlab::bench::scale::SCALE_MODEL_FILE)
            .is_file()
    );
    assert_eq!(
        r.kv_bytes_per_token,
        32 * 8 * 128 * 2 * 2,
        "Llama 3.1 8B's cache at f16"
    );
    assert!(
        (100..=160).contains(&r.prompt_tokens),
        "{}",
        r.prompt_tokens
    );
    assert_eq!(r.items, 3, "two items and the reference");
    assert_eq!((r.grid.conditions, r.grid.tokens), (8, 8));
    // Scoring reuses generation: it evaluates fewer tokens than scoring from scratch.
    assert!(
        r.grid.score_tokens < r.grid.scratch_tokens,
        "{} of {}",
        r.grid.score_tokens,
        r.grid.scratch_tokens
    );
    for (name, v) in [
        ("state", r.state_mib),
        ("sweep", r.sweep_items_per_s),
        ("bare loops", r.bare_items_per_s),
        ("grid prompts", r.grid.prompt_s),
        ("bare prompts", r.grid.bare_prompt_s),
        ("grid surgery", r.grid.surgery_s),
        ("grid generation", r.grid.generate_s),
        ("bare generation", r.grid.bare_generate_s),
        ("grid scoring", r.grid.score_s),
        ("scoring from scratch", r.grid.scratch_score_s),
        ("grid KV cache", r.grid.kv_mib),
    ] {
        assert!(v.is_finite() && v > 0.0, "{name} = {v}");
    }
    // The app's estimate before such a run counts at least the weights and the KV cache the
    // run allocated (its "will not fit" warning relies on it).
    assert!(
        r.grid.estimate_mib + 0.5 >= r.model_mib + r.grid.kv_mib,
        "estimate {} MiB, weights {} + KV {} MiB",
        r.grid.estimate_mib,
        r.model_mib,
        r.grid.kv_mib
    );
}

#[test]
fn a_small_dataset_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tiny.json");
    std::fs::write(&spec, common::tiny_dataset_json().to_string()).unwrap();
    let session = dir.path().join("tiny.kvlab");
    let model = model_path();
    let (spec, session) = (spec.to_str().unwrap(), session.to_str().unwrap());
    let m = model.to_str().unwrap();
    let out = kvlab(&["run", spec, "--model", m, "--session", session]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("tiny-cities — 4 of 4 items"), "{stdout}");
    for row in [
        "all items",
        "template trip",
        "needle LA",
        "transplant from partner",
    ] {
        assert!(stdout.contains(row), "missing {row}: {stdout}");
    }
    assert!(stderr.contains("4/4 items"), "{stderr}");
    // The session re-runs as CSV-able items and verifies exactly.
    let out = kvlab(&["verify", session, "--model", m]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reproduces its 4 dataset items exactly"),
        "{stdout}"
    );
    // A session whose waves the re-run packs otherwise (as sessions written before cells shared
    // runs are) verifies item by item, and a changed item is named.
    let mut s = kvlab::session::Session::load(std::path::Path::new(session)).unwrap();
    s.dataset.as_mut().unwrap().max_sequences = 5; // one item per wave
    s.save(std::path::Path::new(session)).unwrap();
    let out = kvlab(&["verify", session, "--model", m]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("comparing item by item"), "{stderr}");
    assert!(
        stdout.contains("reproduces its 4 dataset items exactly"),
        "{stdout}"
    );
    let d = s.dataset.as_mut().unwrap();
    let item = d.waves[0].items[1];
    d.waves[0].results.conditions[3]
        .generation
        .text
        .push_str(" (edited)");
    s.save(std::path::Path::new(session)).unwrap();
    let out = kvlab(&["verify", session, "--model", m]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("differs: item {item}: [0].generation.text")),
        "{stdout}"
    );
    // The HTML report shows the dataset (it used to say the session had no results).
    let html = dir.path().join("tiny.html");
    let out = kvlab(&["report", session, "--html", html.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<h2>Dataset</h2>"), "{page}");
    assert!(page.contains("tiny-cities — 4 of 4 items"), "{page}");
    assert!(
        page.contains("Template trip") && page.contains("Needle LA"),
        "{page}"
    );
    assert!(!page.contains("no results yet"), "{page}");
    let out = kvlab(&["run", spec, "--model", m, "--format", "csv"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().count(), 1 + 4 * 3, "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("0,seed,SF,NY,none,"),
        "{csv}"
    );
}

#[test]
fn a_run_with_attention_saves_it_reports_heatmaps_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let spec = edited_seed(dir.path(), "seed8.json", |v| {
        v["generation"]["max_tokens"] = 8.into();
    });
    let session = dir.path().join("att.kvlab");
    let (session, model) = (session.to_str().unwrap(), model_path());
    let m = model.to_str().unwrap();
    let out = kvlab(&[
        "run",
        &spec,
        "--model",
        m,
        "--threads",
        "1",
        "--attention",
        "--session",
        session,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(session).unwrap()).unwrap();
    let results = &saved["results"];
    assert_eq!(results["settings"]["attention"], true);
    let att = &results["attention"];
    assert_eq!(att["n_layer"], 30);
    assert_eq!(att["conditions"].as_array().unwrap().len(), 8);
    assert_eq!(att["baselines"][0]["needle"].as_array().unwrap().len(), 8);
    assert_eq!(
        att["baselines"][0]["needle"][0].as_array().unwrap().len(),
        30 * 9
    );
    // The report draws, per condition, its heatmap, its baseline's and the difference, with
    // labelled axes and a scale.
    let html = dir.path().join("att.html");
    let out = kvlab(&["report", session, "--html", html.to_str().unwrap()]);
    assert!(out.status.success());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<h2>Attention to the needle</h2>"), "{page}");
    assert_eq!(page.matches("condition − baseline</figcaption>").count(), 8);
    assert!(page.matches("<figcaption>baseline SF</figcaption>").count() >= 1);
    assert!(page.contains(">layer</text>") && page.contains("step: query token"));
    assert!(page.contains("<title>L29 s7: "));
    assert!(page.contains("attention captured (flash attention off)"));
    // Verify re-runs with capture and finds the same numbers.
    let out = kvlab(&["verify", session, "--model", m, "--threads", "1"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A dataset records no attention: refused with the reason.
    let tiny = dir.path().join("tiny.json");
    std::fs::write(&tiny, common::tiny_dataset_json().to_string()).unwrap();
    let e = fails(&["run", tiny.to_str().unwrap(), "--model", m, "--attention"]);
    assert!(e.contains("--attention is for grids"), "{e}");
}

/// `kvlab sweep --op`: a transplant sweep takes the other city's rows by default, says what it
/// swept, and a donor given to another intervention is refused before any work.
#[test]
fn sweeps_apply_the_chosen_intervention() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("sweep.json");
    let model = model_path();
    let (seed, m, o) = (
        seed_path(),
        model.to_str().unwrap().to_string(),
        out_path.to_str().unwrap().to_string(),
    );
    let out = kvlab(&[
        "sweep",
        &seed,
        "--model",
        &m,
        "--over",
        "span",
        "--max-extra",
        "1",
        "--op",
        "transplant",
        "--out",
        &o,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("span sweep of transplant from NY on SF"),
        "{stdout}"
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(saved["sweep"]["op"]["kind"], "transplant");
    assert_eq!(saved["sweep"]["op"]["from"], "NY");
    assert_eq!(saved["points"].as_array().unwrap().len(), 2);

    let e = fails(&[
        "sweep", &seed, "--model", &m, "--op", "mean", "--from", "NY",
    ]);
    assert!(
        e.contains("--from names the donor of a transplant sweep"),
        "{e}"
    );
    let e = fails(&[
        "sweep",
        &seed,
        "--model",
        &m,
        "--op",
        "transplant",
        "--from",
        "LA",
    ]);
    assert!(e.contains("LA"), "{e}");
}
