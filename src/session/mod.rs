//! Session files (`.kvlab`): the experiment, the model it ran on, its results and notes, in one
//! JSON document with a `format` name and a `version`. This module owns files on disk: atomic
//! writes with a backup, validation with clear messages, migration of older versions.

pub mod report;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::{ModelFingerprint, ModelInfo};
use crate::experiment::{ExperimentSpec, RunResults};

/// The `format` field of every session file.
pub const FORMAT: &str = "kvlab-session";
/// The version this build writes; it reads this one and older ones.
pub const VERSION: u32 = 1;
/// The file extension.
pub const EXTENSION: &str = "kvlab";
/// The largest session file read (a long run's session is a few MiB).
pub const MAX_SESSION_BYTES: u64 = 1 << 30;

/// Why a session could not be read or written, in words a user can act on.
#[derive(Debug, Error)]
pub enum SessionError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty or ends in the middle of the document.
    #[error(
        "{0} is truncated (the file ends before the session does); its backup, if any, is {0}.bak"
    )]
    Truncated(String),
    /// The file is not JSON.
    #[error("{path} is not a kvlab session (not JSON: {detail})")]
    NotJson {
        /// The file.
        path: String,
        /// Where parsing failed.
        detail: String,
    },
    /// JSON, but not a kvlab session.
    #[error("{0} is not a kvlab session (it has no \"format\": \"kvlab-session\")")]
    NotSession(String),
    /// Written by a newer kvlab.
    #[error(
        "{path} was written by a newer kvlab (session version {found}); this kvlab reads versions up to {VERSION}: please update kvlab"
    )]
    TooNew {
        /// The file.
        path: String,
        /// Its version.
        found: u64,
    },
    /// Not a file kvlab reads or writes: a folder, a FIFO, a device, or far too large.
    #[error("{0}")]
    NotAFile(String),
    /// A required part is missing or has the wrong shape.
    #[error("{path} is damaged: {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// serde's description (names the field).
        detail: String,
    },
}

/// The model a session's results came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Where the file was.
    pub path: PathBuf,
    /// Name, size and hash.
    pub fingerprint: ModelFingerprint,
    /// Its metadata.
    pub info: ModelInfo,
}

/// A saved experiment with everything needed to show, share and reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Always [`FORMAT`].
    pub format: String,
    /// The file format version.
    pub version: u32,
    /// The experiment.
    pub spec: ExperimentSpec,
    /// The model used, when one was loaded.
    #[serde(default)]
    pub model: Option<ModelRef>,
    /// The last run's results.
    #[serde(default)]
    pub results: Option<RunResults>,
    /// The last sweep's results.
    #[serde(default)]
    pub sweep: Option<crate::experiment::sweep::SweepResults>,
    /// The user's notes.
    #[serde(default)]
    pub notes: String,
    /// kvlab's version at the last save.
    #[serde(default)]
    pub app_version: String,
    /// llama-cpp-2's version at the last save.
    #[serde(default)]
    pub llama_cpp_2_version: String,
    /// When the session was first saved (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// When it was last saved (RFC 3339).
    #[serde(default)]
    pub modified: String,
}

/// The current time in RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Session {
    /// A new session for an experiment.
    pub fn new(spec: ExperimentSpec) -> Session {
        let now = now_rfc3339();
        Session {
            format: FORMAT.into(),
            version: VERSION,
            spec,
            model: None,
            results: None,
            sweep: None,
            notes: String::new(),
            app_version: env!("CARGO_PKG_VERSION").into(),
            llama_cpp_2_version: crate::engine::LLAMA_CPP_2_VERSION.into(),
            created: now.clone(),
            modified: now,
        }
    }

    /// The session's display name: the experiment's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Serializes the session (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("sessions serialize")
    }

    /// Reads a session from JSON text; `path` names it in messages.
    pub fn from_json(text: &str, path: &str) -> Result<Session, SessionError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Err(SessionError::Truncated(path.into()));
        }
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            if e.is_eof() {
                SessionError::Truncated(path.into())
            } else {
                SessionError::NotJson {
                    path: path.into(),
                    detail: e.to_string(),
                }
            }
        })?;
        if value.get("format").is_none() && is_bare_results(&value) {
            // Version 0: what `kvlab run --out` wrote before sessions existed.
            value = wrap_bare_results(value);
        }
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(SessionError::NotSession(path.into()));
        }
        let invalid = |detail: String| SessionError::Invalid {
            path: path.into(),
            detail,
        };
        let version = match value.get("version") {
            None => return Err(invalid("the \"version\" field is missing".into())),
            Some(v) => v.as_u64().ok_or_else(|| {
                invalid(format!(
                    "the \"version\" field is {v}, not a whole number from 0 to {VERSION}"
                ))
            })?,
        };
        if version > VERSION as u64 {
            return Err(SessionError::TooNew {
                path: path.into(),
                found: version,
            });
        }
        migrate(&mut value, version as u32);
        let session: Session = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        session.validate().map_err(invalid)?;
        Ok(session)
    }

    /// Checks what serde cannot: the experiment is valid, and the results agree with their spec
    /// and hold settings a re-run can use (a session's numbers are read like user input).
    pub fn validate(&self) -> Result<(), String> {
        self.spec.validate().map_err(|e| format!("spec: {e}"))?;
        if let Some(r) = &self.results {
            r.validate()?;
        }
        Ok(())
    }

    /// Reads a session file.
    /// Refuses what is not a regular file (a FIFO would block, `/dev/zero` never ends) and
    /// files over [`MAX_SESSION_BYTES`].
    pub fn load(path: &Path) -> Result<Session, SessionError> {
        use std::io::Read;
        let shown = path.display().to_string();
        let io = |e| SessionError::Io {
            path: shown.clone(),
            source: e,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if let Some(kind) = crate::gguf::not_a_regular_file(&meta) {
            return Err(SessionError::NotAFile(format!(
                "{shown} is {kind}, not a session file"
            )));
        }
        let too_big = || {
            SessionError::NotAFile(format!(
                "{shown} is larger than {} MiB, too large for a session file",
                MAX_SESSION_BYTES >> 20
            ))
        };
        if meta.len() > MAX_SESSION_BYTES {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_SESSION_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_SESSION_BYTES {
            return Err(too_big());
        }
        let text = String::from_utf8(bytes).map_err(|_| SessionError::NotJson {
            path: shown.clone(),
            detail: "the file is not UTF-8 text".into(),
        })?;
        Session::from_json(&text, &shown)
    }

    /// Writes the session atomically: see [`write_atomic`]. Updates `modified`.
    pub fn save(&mut self, path: &Path) -> Result<(), SessionError> {
        self.modified = now_rfc3339();
        self.app_version = env!("CARGO_PKG_VERSION").into();
        self.llama_cpp_2_version = crate::engine::LLAMA_CPP_2_VERSION.into();
        write_atomic(path, self.to_json().as_bytes(), Fault::None)
    }

    /// Whether the session's results came from the model with this fingerprint.
    pub fn matches_model(&self, fingerprint: &ModelFingerprint) -> bool {
        self.model
            .as_ref()
            .is_some_and(|m| &m.fingerprint == fingerprint)
    }
}

/// Whether a JSON document is a bare results file (`kvlab run --out`, session version 0).
fn is_bare_results(value: &serde_json::Value) -> bool {
    ["kvlab_version", "spec", "model", "model_info", "conditions"]
        .iter()
        .all(|k| value.get(k).is_some())
}

/// Turns a bare results file into a version-0 session document: the experiment and the model
/// reference come from the results themselves (the model's path was not recorded then).
fn wrap_bare_results(results: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "format": FORMAT,
        "version": 0,
        "spec": results["spec"].clone(),
        "model": {
            "path": results["model"]["file_name"].clone(),
            "fingerprint": results["model"].clone(),
            "info": results["model_info"].clone(),
        },
        "app_version": results["kvlab_version"].clone(),
        "llama_cpp_2_version": results["llama_cpp_2_version"].clone(),
        "results": results,
    })
}

/// Adds the top-1/top-2 `gap` to every step of a generation that lacks it.
fn fill_gaps(generation: &mut serde_json::Value) {
    for step in generation["steps"].as_array_mut().into_iter().flatten() {
        if step.get("gap").is_none() {
            let lp = |i: usize| step["top"][i]["logprob"].as_f64();
            let gap = match (lp(0), lp(1)) {
                (Some(a), Some(b)) => a - b,
                _ => f64::INFINITY,
            };
            step["gap"] = crate::experiment::floats::to_json(gap);
        }
    }
}

/// Brings an older session document up to [`VERSION`], in place, one version at a time.
#[allow(clippy::single_match)] // a ladder: each future version adds an arm
fn migrate(value: &mut serde_json::Value, from: u32) {
    let mut version = from;
    while version < VERSION {
        match version {
            // 0 → 1: bare results wrapped above. Results of that time had no top-1/top-2 `gap`
            // per step (it is derived from the step's top list) and no `warnings`.
            0 => {
                if let Some(r) = value.get_mut("results") {
                    if let Some(o) = r.as_object_mut() {
                        o.entry("complete").or_insert(true.into());
                        o.entry("warnings").or_insert(serde_json::json!([]));
                    }
                    for (list, field) in [("variants", "baseline"), ("conditions", "generation")] {
                        for item in r[list].as_array_mut().into_iter().flatten() {
                            fill_gaps(&mut item[field]);
                        }
                    }
                }
            }
            _ => {}
        }
        version += 1;
    }
    value["version"] = VERSION.into();
}

/// A simulated failure, for testing that interrupted saves lose nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No failure.
    None,
    /// Writing the new contents fails halfway (a full disk).
    WriteFails,
    /// Copying the previous file to its backup fails halfway (a full disk).
    BackupFails,
    /// Stop after writing the temporary file and rotating the backup, before the new file
    /// replaces the target (a crash).
    BeforeRename,
}

/// Removes the temporary files of a save when it ends, however it ends (on success they have
/// been renamed away and there is nothing left to remove).
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The file a path names after following symbolic links (saving through a link writes its
/// target, which may not exist yet).
fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// Whether a process with this id is running (Linux; elsewhere every process counts as running,
/// so nothing is removed).
fn process_running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Removes temporary files that earlier saves of `name` in `dir` left when they were killed
/// (`.NAME.PID.tmp`, `.NAME.bak.PID.tmp` of processes no longer running).
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(middle) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".tmp"))
        else {
            continue;
        };
        let pid = middle.strip_prefix("bak.").unwrap_or(middle);
        if let Ok(pid) = pid.parse::<u32>()
            && pid != std::process::id()
            && !process_running(pid)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes`, then syncs; `fault` makes the write fail halfway.
fn write_synced(path: &Path, bytes: &[u8], fail: bool) -> std::io::Result<std::fs::File> {
    let mut f = std::fs::File::create(path)?;
    if fail {
        f.write_all(&bytes[..bytes.len() / 2])?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "simulated: no space left on device",
        ));
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(f)
}

/// Writes `bytes` to `path` so that no failure (a crash, a kill, a full disk) leaves a
/// half-written file or a damaged backup:
///
/// 1. symbolic links are followed: their target is written, the link stays;
/// 2. a temporary file beside the target gets the bytes (and the target's permissions), synced;
/// 3. the previous file is copied to a second temporary file, synced, and renamed to `path.bak`
///    (so the backup is replaced in one step, never truncated);
/// 4. the first temporary file is renamed over the target and the folder synced.
///
/// Temporary files are removed on every error; those of a killed save are removed by the next
/// save of the same file. A folder (or a FIFO, a device) as the target is refused before
/// anything is written.
pub fn write_atomic(path: &Path, bytes: &[u8], fault: Fault) -> Result<(), SessionError> {
    let io = |e: std::io::Error| SessionError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let target = resolve_links(path).map_err(io)?;
    let existing = match std::fs::metadata(&target) {
        Ok(m) => {
            if let Some(kind) = crate::gguf::not_a_regular_file(&m) {
                return Err(SessionError::NotAFile(format!(
                    "cannot save to {}: it is {kind}; give a file name",
                    path.display()
                )));
            }
            Some(m)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "session".into());
    remove_stale_temps(dir, &name);
    let pid = std::process::id();
    let tmp = dir.join(format!(".{name}.{pid}.tmp"));
    let bak_tmp = dir.join(format!(".{name}.bak.{pid}.tmp"));
    let _cleanup = TempFiles(vec![tmp.clone(), bak_tmp.clone()]);

    let f = write_synced(&tmp, bytes, fault == Fault::WriteFails).map_err(io)?;
    if let Some(m) = &existing {
        f.set_permissions(m.permissions()).map_err(io)?;
    }
    drop(f);
    if existing.is_some() {
        if fault == Fault::BackupFails {
            let old = std::fs::read(&target).map_err(io)?;
            write_synced(&bak_tmp, &old, true).map_err(io)?;
        }
        std::fs::copy(&target, &bak_tmp).map_err(io)?;
        std::fs::File::open(&bak_tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&bak_tmp, backup_path(&target)).map_err(io)?;
    }
    if fault == Fault::BeforeRename {
        return Err(io(std::io::Error::other("simulated crash before rename")));
    }
    std::fs::rename(&tmp, &target).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Where the previous version of a file is kept.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".bak");
    PathBuf::from(s)
}

/// The folder for kvlab's own files (autosave), from the platform's conventions.
pub fn data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("org", "kvlab", "kvlab").map(|d| d.data_dir().to_path_buf())
}

/// Where the current session is autosaved.
pub fn autosave_path() -> Option<PathBuf> {
    data_dir().map(|d| d.join(format!("autosave.{EXTENSION}")))
}

#[cfg(test)]
mod tests {
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
        let newer = good.replacen("\"version\": 1", "\"version\": 99", 1);
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
            let m = msg(&good.replacen("\"version\": 1", &format!("\"version\": {v}"), 1));
            assert!(
                m.contains(&format!("\"version\" field is {shown}, not a whole number")),
                "{m}"
            );
        }
        let m = msg(&good.replacen("\"version\": 1", "\"version\": 4294967298", 1));
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
}
