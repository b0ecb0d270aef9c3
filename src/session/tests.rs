//! Unit tests of session files: round trips, messages for malformed files, migration of each
//! older version, saves interrupted at every point.

use super::*;

fn session() -> Session {
    let mut s = Session::new(ExperimentSpec::seed());
    s.notes = "zeroing keeps the city".into();
    s
}

#[test]
fn round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.kvlab");
    let mut s = session();
    s.save(&path).unwrap();
    assert_eq!(Session::load(&path).unwrap(), s);
}

#[test]
fn every_malformed_file_gets_its_own_message() {
    let msg = |text: &str| Session::from_json(text, "x.kvlab").unwrap_err().to_string();
    let good = session().to_json();
    assert!(msg("").contains("truncated"));
    assert!(msg(&good[..good.len() / 2]).contains("truncated"));
    assert!(msg("hello").contains("not JSON"));
    assert!(msg("{\"name\": 1}").contains("not a kvlab session"));
    let newer = good.replacen(&format!("\"version\": {VERSION}"), "\"version\": 99", 1);
    let m = msg(&newer);
    assert!(m.contains("newer kvlab") && m.contains("99"), "{m}");
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v.as_object_mut().unwrap().remove("spec");
    let m = msg(&v.to_string());
    assert!(m.contains("damaged") && m.contains("spec"), "{m}");
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v.as_object_mut().unwrap().remove("version");
    assert!(msg(&v.to_string()).contains("\"version\" field is missing"));
}

#[test]
fn a_version_0_results_file_is_migrated() {
    // What `kvlab run --out` wrote before sessions existed (no format, no gaps, no warnings).
    let text = include_str!("../../tests/data/results-v0.json");
    assert!(!text.contains("\"format\"") && !text.contains("\"gap\""));
    let s = Session::from_json(text, "results-v0.json").unwrap();
    assert_eq!(s.version, VERSION);
    let r = s.results.as_ref().unwrap();
    assert_eq!(r.conditions.len(), 4);
    let step = &r.conditions[1].generation.steps[0];
    assert_eq!(step.gap, step.top[0].logprob - step.top[1].logprob);
    let m = s.model.as_ref().unwrap();
    assert_eq!(m.fingerprint, r.model);
    assert_eq!(m.info.n_layer, 30);
    assert_eq!(s.spec, r.spec);
    // Migrated sessions save as the current version.
    let again = Session::from_json(&s.to_json(), "x").unwrap();
    assert_eq!(again, s);
}

#[test]
fn an_interrupted_save_leaves_the_old_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.kvlab");
    let mut s = session();
    s.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    s.notes = "changed".into();
    let err = write_atomic(&path, s.to_json().as_bytes(), Fault::BeforeRename).unwrap_err();
    assert!(err.to_string().contains("simulated crash"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        Session::load(&path).unwrap().notes,
        "zeroing keeps the city"
    );
}

/// The names of the files in a folder, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failed_save_keeps_the_file_and_its_backup_and_leaves_no_temp_file() {
    for fault in [Fault::WriteFails, Fault::BackupFails, Fault::BeforeRename] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.kvlab");
        let mut s = session();
        s.notes = "first".into();
        s.save(&path).unwrap();
        s.notes = "second".into();
        s.save(&path).unwrap();
        let (file, bak) = (
            std::fs::read(&path).unwrap(),
            std::fs::read(backup_path(&path)).unwrap(),
        );
        s.notes = "third".into();
        let e = write_atomic(&path, s.to_json().as_bytes(), fault).unwrap_err();
        assert!(e.to_string().contains("simulated"), "{fault:?}: {e}");
        assert_eq!(std::fs::read(&path).unwrap(), file, "{fault:?}");
        if fault == Fault::BeforeRename {
            // The backup was rotated (to the still current file): both open.
            assert_eq!(std::fs::read(backup_path(&path)).unwrap(), file);
        } else {
            assert_eq!(std::fs::read(backup_path(&path)).unwrap(), bak, "{fault:?}");
        }
        assert_eq!(
            files_in(dir.path()),
            ["a.kvlab", "a.kvlab.bak"],
            "{fault:?}"
        );
        Session::load(&path).unwrap();
        Session::load(&backup_path(&path)).unwrap();
    }
}

#[test]
fn temp_files_of_a_killed_save_are_removed_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.kvlab");
    // Process ids above the kernel's limit (4194304) never run.
    std::fs::write(dir.path().join(".a.kvlab.999999999.tmp"), "half").unwrap();
    std::fs::write(dir.path().join(".a.kvlab.bak.999999999.tmp"), "half").unwrap();
    std::fs::write(dir.path().join(".other.kvlab.999999999.tmp"), "kept").unwrap();
    session().save(&path).unwrap();
    let expected: &[&str] = if cfg!(target_os = "linux") {
        &[".other.kvlab.999999999.tmp", "a.kvlab"]
    } else {
        &[
            ".a.kvlab.999999999.tmp",
            ".a.kvlab.bak.999999999.tmp",
            ".other.kvlab.999999999.tmp",
            "a.kvlab",
        ]
    };
    assert_eq!(files_in(dir.path()), expected);
}

#[cfg(unix)]
#[test]
fn saving_writes_through_links_keeps_permissions_and_refuses_folders() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.kvlab");
    let link = dir.path().join("link.kvlab");
    let mut s = session();
    s.save(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("real.kvlab", &link).unwrap();
    s.notes = "through the link".into();
    s.save(&link).unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(Session::load(&real).unwrap().notes, "through the link");
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        Session::load(&backup_path(&real)).unwrap().notes,
        "zeroing keeps the city"
    );
    // A dangling link: its target is created.
    let dangling = dir.path().join("dangling.kvlab");
    std::os::unix::fs::symlink("new.kvlab", &dangling).unwrap();
    s.save(&dangling).unwrap();
    assert!(dir.path().join("new.kvlab").is_file());
    // A folder is refused, and nothing is left behind.
    let folder = dir.path().join("folder.kvlab");
    std::fs::create_dir(&folder).unwrap();
    let before = files_in(dir.path());
    let e = s.save(&folder).unwrap_err().to_string();
    assert!(e.contains("is a folder"), "{e}");
    assert_eq!(files_in(dir.path()), before);
    assert!(files_in(&folder).is_empty());
}

#[test]
fn non_finite_numbers_round_trip() {
    let text = include_str!("../../tests/data/results-v0.json");
    let mut s = Session::from_json(text, "v0").unwrap();
    let r = s.results.as_mut().unwrap();
    let step = &mut r.conditions[0].generation.steps[0];
    step.probes[0] = f32::NAN;
    step.gap = f32::INFINITY;
    step.top[0].logprob = f32::NEG_INFINITY;
    let json = s.to_json();
    assert!(json.contains("\"NaN\"") && json.contains("\"Infinity\""));
    let back = Session::from_json(&json, "x").unwrap();
    let step = &back.results.as_ref().unwrap().conditions[0]
        .generation
        .steps[0];
    assert!(step.probes[0].is_nan());
    assert_eq!(step.gap, f32::INFINITY);
    assert_eq!(step.top[0].logprob, f32::NEG_INFINITY);
    // What older kvlab wrote for NaN: null.
    let old = json.replacen("\"NaN\"", "null", 1);
    let step = &Session::from_json(&old, "x")
        .unwrap()
        .results
        .unwrap()
        .conditions[0]
        .generation
        .steps[0]
        .clone();
    assert!(step.probes[0].is_nan());
}

#[test]
fn versions_boms_and_inconsistent_results_are_named() {
    let msg = |text: &str| Session::from_json(text, "x.kvlab").unwrap_err().to_string();
    let good = session().to_json();
    for (v, shown) in [("-1", "-1"), ("\"1\"", "\"1\""), ("1.5", "1.5")] {
        let m = msg(&good.replacen(
            &format!("\"version\": {VERSION}"),
            &format!("\"version\": {v}"),
            1,
        ));
        assert!(
            m.contains(&format!("\"version\" field is {shown}, not a whole number")),
            "{m}"
        );
    }
    let m = msg(&good.replacen(
        &format!("\"version\": {VERSION}"),
        "\"version\": 4294967298",
        1,
    ));
    assert!(m.contains("newer kvlab") && m.contains("4294967298"), "{m}");
    assert!(Session::from_json(&format!("\u{feff}{good}"), "bom").is_ok());

    let text = include_str!("../../tests/data/results-v0.json");
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["variants"] = serde_json::json!([]);
    let m = msg(&v.to_string());
    assert!(
        m.contains("damaged") && m.contains("results.variants"),
        "{m}"
    );
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["settings"]["n_batch"] = 2.into();
    let m = msg(&v.to_string());
    assert!(m.contains("settings.n_batch is 2"), "{m}");
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["settings"]["n_batch"] = 4294967295u32.into();
    assert!(msg(&v.to_string()).contains("settings.n_batch is 4294967295"));
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["settings"]["threads"] = 2147483647.into();
    assert!(msg(&v.to_string()).contains("settings.threads is 2147483647"));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_reader(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let _ = Session::from_json(&String::from_utf8_lossy(&bytes), "x");
    }

    #[test]
    fn corrupted_sessions_never_panic_the_reader(pos in 0usize..1_000_000, byte in 0x20u8..0x7f) {
        let text = include_str!("../../tests/data/results-v0.json");
        let mut b = text.as_bytes().to_vec();
        let i = pos % b.len();
        b[i] = byte;
        let _ = Session::from_json(&String::from_utf8_lossy(&b), "x");
    }
}

#[test]
fn a_save_keeps_the_previous_version_as_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.kvlab");
    let mut s = session();
    s.save(&path).unwrap();
    s.notes = "second".into();
    s.save(&path).unwrap();
    assert_eq!(
        Session::load(&backup_path(&path)).unwrap().notes,
        "zeroing keeps the city"
    );
    assert_eq!(Session::load(&path).unwrap().notes, "second");
}

#[test]
fn a_version_1_session_is_migrated_to_ops_sites_and_typed_verdicts() {
    use crate::experiment::results::Verdict;
    use crate::experiment::spec::{KvPart, LayerSet, Op, Site};
    // Written by kvlab with session format 1 (`run --session`, the sweep from `sweep --out`).
    let text = include_str!("../../tests/data/session-v1.kvlab");
    let old: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(old["version"], 1);
    let s = Session::from_json(text, "session-v1.kvlab").unwrap();
    assert_eq!(s.version, VERSION);
    let zero_k = Site::layers(LayerSet::parse("0-9").unwrap(), KvPart::K);
    assert_eq!(s.spec.conditions[2].op, Op::Zero);
    assert_eq!(s.spec.conditions[2].site, zero_k);
    assert_eq!(
        s.spec.conditions[3].op,
        Op::Transplant { from: "NY".into() }
    );
    let r = s.results.as_ref().unwrap();
    assert_eq!(r.spec, s.spec);
    for (i, c) in r.conditions.iter().enumerate() {
        let old_c = &old["results"]["conditions"][i];
        // Same condition as the spec's, typed; the verdict reads as it did.
        assert_eq!(c.op, r.spec.conditions[i].op);
        assert_eq!(c.site, r.spec.conditions[i].site);
        assert_eq!(c.op.short(), old_c["intervention"].as_str().unwrap());
        let v = c.verdict.as_ref().unwrap();
        assert_eq!(v.to_string(), old_c["verdict"].as_str().unwrap());
        let other = if c.variant == "SF" { "NY" } else { "SF" };
        assert_eq!(*v, Verdict::new(&c.variant, c.preference.unwrap(), other));
    }
    assert_eq!(r.conditions[2].site, zero_k);
    let sweep = s.sweep.as_ref().unwrap();
    assert_eq!(sweep.sweep.op, Op::Zero);
    assert_eq!(
        sweep.spec, None,
        "format 1 did not record a sweep's experiment"
    );
    assert_eq!(sweep.points.len(), 3);
    // Saved again, it is a current-version file that reads back the same.
    let again = Session::from_json(&s.to_json(), "x").unwrap();
    assert_eq!(again, s);
    assert!(!s.to_json().contains("\"intervention\""));
}

#[test]
fn unreadable_version_1_values_are_named() {
    let text = include_str!("../../tests/data/session-v1.kvlab");
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["results"]["conditions"][2]["intervention"] = "shuffle".into();
    let e = Session::from_json(&v.to_string(), "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("results.conditions[2].intervention"), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["results"]["conditions"][2]["verdict"] = "maybe".into();
    let e = Session::from_json(&v.to_string(), "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("results.conditions[2].verdict"), "{e}");
}
