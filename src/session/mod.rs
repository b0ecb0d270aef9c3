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
        found: u32,
    },
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
        let version = value
            .get("version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| SessionError::Invalid {
                path: path.into(),
                detail: "the \"version\" field is missing".into(),
            })? as u32;
        if version > VERSION {
            return Err(SessionError::TooNew {
                path: path.into(),
                found: version,
            });
        }
        migrate(&mut value, version);
        serde_json::from_value(value).map_err(|e| SessionError::Invalid {
            path: path.into(),
            detail: e.to_string(),
        })
    }

    /// Reads a session file.
    pub fn load(path: &Path) -> Result<Session, SessionError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| SessionError::Io {
            path: shown.clone(),
            source: e,
        })?;
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
            step["gap"] = gap.into();
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
    /// Stop after writing the temporary file, before it replaces the target (a crash).
    BeforeRename,
}

/// Writes `bytes` to `path` so that a crash never leaves a half-written file: a temporary file in
/// the same folder is written and synced, the previous file is kept as `path.bak`, then the
/// temporary file is renamed over `path` and the folder synced.
pub fn write_atomic(path: &Path, bytes: &[u8], fault: Fault) -> Result<(), SessionError> {
    let io = |e: std::io::Error| SessionError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "session".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    if fault == Fault::BeforeRename {
        return Err(io(std::io::Error::other("simulated crash before rename")));
    }
    if path.exists() {
        std::fs::copy(path, backup_path(path)).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
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
