//! The only module that touches llama.cpp (through `llama-cpp-2`).
//!
//! - [`model`]: loading a GGUF (progress, cancellation, validation), metadata, tokenization,
//!   prompt rendering.
//! - [`lab`]: one inference context with one KV stream per sequence, batched decoding, and
//!   access to sequence state bytes.
//! - [`kv_state`]: the codec for those bytes (pure Rust).
//! - [`log`]: llama.cpp's log routed into `tracing`, with its recent errors kept for messages.

pub mod kv_state;
pub mod lab;
pub mod log;
pub mod model;

pub use kv_state::{KvPart, KvStateError, SeqState};
pub use lab::{Lab, LabOptions};
pub use model::{LoadOptions, LoadedModel, ModelFingerprint, ModelInfo, TokenPiece};

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use thiserror::Error;

/// The llama-cpp-2 version kvlab is built against (pinned in Cargo.toml; a unit test keeps them equal).
pub const LLAMA_CPP_2_VERSION: &str = "0.1.160";

/// Everything that can go wrong in the engine, in words a user can act on.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The model path does not exist.
    #[error("model file not found: {0}")]
    ModelNotFound(String),
    /// The file exists but is not a GGUF model.
    #[error("{path} is not a GGUF model file ({reason})")]
    NotGguf {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// llama.cpp refused to load the file.
    #[error("llama.cpp could not load {path}: {detail}")]
    LoadFailed {
        /// The file.
        path: String,
        /// llama.cpp's own last error lines, or a hint.
        detail: String,
    },
    /// The user (or the UI) cancelled the load.
    #[error("loading was cancelled")]
    LoadCancelled,
    /// The model's memory is not a plain KV cache (recurrent, hybrid, sliding-window…).
    #[error("{0}")]
    Unsupported(String),
    /// A context could not be created (usually: not enough memory for the requested size).
    #[error("could not create an inference context ({detail}); try fewer conditions or tokens")]
    ContextFailed {
        /// llama.cpp's error.
        detail: String,
    },
    /// A decode call failed.
    #[error("llama.cpp failed to evaluate tokens: {0}")]
    Decode(String),
    /// Tokenization or rendering failed.
    #[error("{0}")]
    Prompt(String),
    /// Reading or writing a sequence's KV state failed.
    #[error("KV state of sequence {seq}: {detail}")]
    State {
        /// The sequence.
        seq: i32,
        /// What went wrong.
        detail: String,
    },
    /// The KV state codec refused the bytes or the edit.
    #[error(transparent)]
    KvState(#[from] KvStateError),
    /// An I/O error reading the model file.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The process-wide llama.cpp backend (llama.cpp may be initialized once per process).
pub(crate) fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::LoadFailed {
            path: String::new(),
            detail: format!("llama.cpp backend failed to start: {e}"),
        })
}

/// The compute devices llama.cpp sees, as "backend: description" lines.
pub fn devices() -> Vec<String> {
    if backend().is_err() {
        return Vec::new();
    }
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| format!("{}: {} ({})", d.backend, d.description, d.name))
        .collect()
}

/// The backends compiled into this build.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = vec!["cpu"];
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "metal") {
        v.push("metal");
    }
    if cfg!(feature = "vulkan") {
        v.push("vulkan");
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinned_version_matches_cargo_toml() {
        let toml = include_str!("../../Cargo.toml");
        assert!(
            toml.contains(&format!("version = \"={}\"", super::LLAMA_CPP_2_VERSION)),
            "Cargo.toml pins a different llama-cpp-2 than engine::LLAMA_CPP_2_VERSION"
        );
    }
}
