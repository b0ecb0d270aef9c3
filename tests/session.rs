//! Sessions end to end: `kvlab run --session`, `kvlab verify`, `kvlab report`, and the HTML report
//! rendered by headless Chromium.

mod common;

use std::path::Path;
use std::process::Command;

use common::{kvlab, model_path};
use kvlab::session::Session;

fn ok(args: &[&str]) -> String {
    let out = kvlab(args);
    assert!(
        out.status.success(),
        "kvlab {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A short seed run saved as a session.
fn make_session(dir: &Path) -> std::path::PathBuf {
    let spec_path = dir.join("spec.json");
    let mut spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/assets/experiments/seed-short.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    spec["generation"]["max_tokens"] = 12.into();
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let session = dir.join("seed.kvlab");
    ok(&[
        "run",
        spec_path.to_str().unwrap(),
        "--model",
        model_path().to_str().unwrap(),
        "--session",
        session.to_str().unwrap(),
        "--delta-layer",
        "2",
    ]);
    session
}

#[test]
fn a_saved_session_verifies_and_a_tampered_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_session(dir.path());
    let s = Session::load(&path).unwrap();
    assert_eq!(s.format, "kvlab-session");
    assert_eq!(
        s.model.as_ref().unwrap().fingerprint.file_name,
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    assert_eq!(s.results.as_ref().unwrap().conditions.len(), 8);

    let out = ok(&["verify", path.to_str().unwrap()]);
    assert!(out.contains("reproduces its results exactly"), "{out}");

    let mut tampered = s.clone();
    let c = &mut tampered.results.as_mut().unwrap().conditions[2];
    c.generation.tokens[3] += 1;
    let bad = dir.path().join("tampered.kvlab");
    tampered.save(&bad).unwrap();
    let out = kvlab(&["verify", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("conditions[2].generation.tokens[3]"),
        "{stdout}"
    );

    let out = kvlab(&[
        "verify",
        path.to_str().unwrap(),
        "--model",
        "/nonexistent.gguf",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("model file not found"));
}

#[test]
fn broken_session_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("empty.kvlab", "".to_string(), "truncated"),
        ("notjson.kvlab", "hello".to_string(), "not JSON"),
        (
            "other.kvlab",
            "{\"a\": 1}".to_string(),
            "not a kvlab session",
        ),
        (
            "newer.kvlab",
            "{\"format\": \"kvlab-session\", \"version\": 7}".to_string(),
            "newer kvlab",
        ),
    ];
    for (name, text, expect) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let out = kvlab(&["report", p.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expect),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("panicked"));
    }
}

#[test]
fn reports_in_three_formats_and_the_html_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_session(dir.path());
    let (html, md, csv) = (
        dir.path().join("r.html"),
        dir.path().join("r.md"),
        dir.path().join("r.csv"),
    );
    ok(&[
        "report",
        path.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("| condition | SF | NY |"), "{md}");
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.starts_with(
        "row,variant,step,token_id,token,logprob,gap,p( San),p( New),p( SF),p( NY)\n"
    ));
    // Records end at newlines outside quotes (a token may be a quoted newline).
    let mut in_quotes = false;
    let records = csv
        .chars()
        .filter(|&c| {
            if c == '"' {
                in_quotes = !in_quotes;
            }
            c == '\n' && !in_quotes
        })
        .count();
    assert_eq!(
        records - 1,
        (2 + 8) * 12,
        "one row per step of every baseline and condition"
    );
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("<table id=\"grid\">") && text.contains("class=\"tok needle\""));
    assert!(
        !text.contains("src=") && !text.contains("href="),
        "self-contained"
    );

    // Headless Chromium renders it: the grid is in the DOM and the page is not blank.
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("headless Chromium is needed for this test (make test installs it)");
    let profile = dir.path().join("profile");
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ];
    let url = format!("file://{}", html.display());
    let out = Command::new(chromium)
        .args(base)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("id=\"grid\"") && dom.contains("transplant (other city)"),
        "{dom:.300}"
    );
    let shot = dir.path().join("report.png");
    let out = Command::new(chromium)
        .args(base)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1600",
            &url,
        ])
        .output()
        .unwrap();
    assert!(shot.is_file(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.len() > 20_000,
        "a page with a grid is more than a blank PNG ({} bytes)",
        png.len()
    );
}
