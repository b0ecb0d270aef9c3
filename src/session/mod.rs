//! Session files (`.kvlab`): the experiment, the model it ran on, its results and notes, in one
//! JSON document with a `format` name and a `version`. This module owns files on disk: atomic
//! writes with a backup, validation with clear messages, migration of older versions.

mod attention_report;
mod migrate;
pub mod report;
mod save;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::{ModelFingerprint, ModelInfo};
use crate::experiment::{ExperimentSpec, RunResults};
pub use save::{Fault, write_atomic};

/// The `format` field of every session file.
pub const FORMAT: &str = "kvlab-session";
/// The version this build writes; it reads this one and older ones.
pub const VERSION: u32 = 3;
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
    /// The last dataset run's results (every finished wave's grid, its items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<crate::experiment::dataset::DatasetResults>,
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
            dataset: None,
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
        if value.get("format").is_none() && migrate::is_bare_results(&value) {
            // Version 0: what `kvlab run --out` wrote before sessions existed.
            value = migrate::wrap_bare_results(value);
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
        migrate::migrate(&mut value, version as u32).map_err(invalid)?;
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
        if let Some(d) = &self.dataset {
            d.validate()?;
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
