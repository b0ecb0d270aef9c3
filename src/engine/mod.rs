//! The only module that touches llama.cpp (through `llama-cpp-2`).
//!
//! - [`model`]: loading a GGUF (progress, cancellation, validation), metadata, tokenization,
//!   prompt rendering.
//! - [`lab`]: one inference context with one KV stream per sequence, batched decoding, and
//!   access to sequence state bytes.
//! - [`kv_state`]: the codec for those bytes (pure Rust).
//! - [`attention`]: attention weights of chosen query tokens, read from llama.cpp's graph
//!   callback on labs opened with [`Lab::with_attention_capture`].
//! - [`log`]: llama.cpp's log routed into `tracing`, with its recent errors kept for messages.

pub mod attention;
pub mod cache_type;
pub mod ggml_types;
pub mod kv_state;
pub mod lab;
pub mod log;
pub mod model;
pub mod swa;

pub use attention::{AttentionCapture, CaptureRequest, CapturedRow};
pub use cache_type::{CacheType, CacheTypes};
pub use kv_state::{KvPart, KvStateError, SeqState};
pub use lab::{Lab, LabOptions};
pub use model::{LoadOptions, LoadedModel, ModelFingerprint, ModelInfo, TokenPiece};

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use thiserror::Error;

/// The llama-cpp-2 version kvlab is built against (pinned in Cargo.toml; a unit test keeps them equal).
pub const LLAMA_CPP_2_VERSION: &str = "0.1.160";

/// The llama-cpp-sys-2 version (it bundles the llama.cpp sources that are built).
pub const LLAMA_CPP_SYS_2_VERSION: &str = "0.1.161";

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
    /// Attention capture was asked of a lab that cannot give it, or failed.
    #[error("attention capture: {0}")]
    Capture(String),
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

/// A compute device llama.cpp sees (the CPU, a GPU, an accelerator).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    /// llama.cpp's name for it ("CPU", "Vulkan0", "CUDA0").
    pub name: String,
    /// What it is ("NVIDIA GeForce RTX 4070 Laptop GPU").
    pub description: String,
    /// The backend that drives it ("CPU", "Vulkan", "CUDA", "Metal").
    pub backend: String,
    /// Its memory in bytes (0 when the backend does not say).
    pub memory_total: u64,
    /// Its free memory in bytes (0 when the backend does not say).
    pub memory_free: u64,
    /// Whether model layers (and their KV cache) can be offloaded to it.
    pub is_gpu: bool,
}

impl Device {
    /// One line for the UI and `kvlab inspect`: "Vulkan0: llvmpipe (LLVM 15.0.6, 256 bits), 23.4 GiB".
    pub fn summary(&self) -> String {
        let mut s = format!("{}: {}", self.name, self.description);
        if self.memory_total > 0 {
            s.push_str(&format!(
                ", {:.1} GiB",
                self.memory_total as f64 / (1u64 << 30) as f64
            ));
        }
        s
    }
}

/// The compute devices llama.cpp sees (starts the backend if needed; empty if it cannot start).
pub fn devices() -> Vec<Device> {
    use llama_cpp_2::LlamaBackendDeviceType as T;
    if backend().is_err() {
        return Vec::new();
    }
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| Device {
            is_gpu: matches!(d.device_type, T::Gpu | T::IntegratedGpu | T::Accelerator)
                && d.backend != "CPU"
                && d.backend != "BLAS",
            name: d.name,
            description: d.description,
            backend: d.backend,
            memory_total: d.memory_total as u64,
            memory_free: d.memory_free as u64,
        })
        .collect()
}

/// The llama.cpp build kvlab links: ggml's version, and its commit when the build knows it
/// (crates.io sources carry no git history, so usually it does not).
pub fn llama_cpp_build() -> String {
    // SAFETY: both return pointers to static NUL-terminated strings compiled into ggml.
    let (version, commit) = unsafe {
        (
            std::ffi::CStr::from_ptr(llama_cpp_sys_2::ggml_version()),
            std::ffi::CStr::from_ptr(llama_cpp_sys_2::ggml_commit()),
        )
    };
    let version = version.to_string_lossy();
    let commit = commit.to_string_lossy();
    let mut s = format!("llama-cpp-sys-2 {LLAMA_CPP_SYS_2_VERSION}, ggml {version}");
    if !commit.is_empty() && commit != "unknown" {
        s.push_str(&format!(", commit {commit}"));
    }
    s
}

/// How many of a model's `n_layer` repeating layers keep their KV cache on a GPU when
/// `n_gpu_layers` layers are offloaded (`None`: llama.cpp's default, all). llama.cpp counts the
/// output layer too and offloads from the top: `n_layer + 1` means every layer.
pub fn kv_layers_on_gpu(devices: &[Device], n_gpu_layers: Option<u32>, n_layer: u32) -> u32 {
    if !devices.iter().any(|d| d.is_gpu) {
        return 0;
    }
    let offloaded = n_gpu_layers.unwrap_or(u32::MAX);
    let first_on_gpu = (n_layer + 1).saturating_sub(offloaded).min(n_layer);
    n_layer - first_on_gpu
}

/// Where the KV cache lives, in words ("host memory", "Vulkan0", "22 of 30 layers on CUDA0, …").
/// Surgery works either way: llama.cpp copies a sequence's state through host memory.
pub fn kv_cache_home(devices: &[Device], n_gpu_layers: Option<u32>, n_layer: u32) -> String {
    let gpus: Vec<&str> = devices
        .iter()
        .filter(|d| d.is_gpu)
        .map(|d| d.name.as_str())
        .collect();
    if gpus.is_empty() {
        return "host memory (no GPU device)".into();
    }
    let on_gpu = kv_layers_on_gpu(devices, n_gpu_layers, n_layer);
    let gpus = gpus.join(" + ");
    if on_gpu == 0 {
        "host memory (no layers offloaded)".into()
    } else if on_gpu == n_layer {
        format!("{gpus} memory (all {n_layer} layers)")
    } else {
        format!("{on_gpu} of {n_layer} layers on {gpus}, the rest in host memory")
    }
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
    use super::*;

    fn device(name: &str, is_gpu: bool) -> Device {
        Device {
            name: name.into(),
            description: String::new(),
            backend: String::new(),
            memory_total: 0,
            memory_free: 0,
            is_gpu,
        }
    }

    #[test]
    fn kv_cache_follows_offloaded_layers() {
        let cpu = [device("CPU", false)];
        let gpu = [device("CPU", false), device("Vulkan0", true)];
        assert_eq!(kv_layers_on_gpu(&cpu, None, 30), 0);
        assert_eq!(kv_cache_home(&cpu, None, 30), "host memory (no GPU device)");
        // llama.cpp's default (-1) and n_layer + 1 offload everything, the output layer included.
        assert_eq!(kv_layers_on_gpu(&gpu, None, 30), 30);
        assert_eq!(kv_layers_on_gpu(&gpu, Some(31), 30), 30);
        assert_eq!(kv_layers_on_gpu(&gpu, Some(999), 30), 30);
        // n_layer offloads all but the first repeating layer; 1 only the output layer.
        assert_eq!(kv_layers_on_gpu(&gpu, Some(30), 30), 29);
        assert_eq!(kv_layers_on_gpu(&gpu, Some(1), 30), 0);
        assert_eq!(kv_layers_on_gpu(&gpu, Some(0), 30), 0);
        assert_eq!(
            kv_cache_home(&gpu, None, 30),
            "Vulkan0 memory (all 30 layers)"
        );
        assert_eq!(
            kv_cache_home(&gpu, Some(11), 30),
            "10 of 30 layers on Vulkan0, the rest in host memory"
        );
        assert_eq!(
            kv_cache_home(&gpu, Some(0), 30),
            "host memory (no layers offloaded)"
        );
    }

    #[test]
    fn gguf_block_sizes_match_the_linked_ggml() {
        for t in 0..sys_type_count() {
            // SAFETY: plain lookups in ggml's type table for ids below GGML_TYPE_COUNT.
            let (blck, size) = unsafe {
                (
                    llama_cpp_sys_2::ggml_blck_size(t as _),
                    llama_cpp_sys_2::ggml_type_size(t as _),
                )
            };
            let ours = crate::gguf::ggml_type_block(t);
            if blck == 0 {
                assert_eq!(ours, None, "ggml type {t} is removed in ggml");
            } else {
                assert_eq!(ours, Some((blck as u64, size as u64)), "ggml type {t}");
            }
        }
    }

    /// The cache types' block sizes (the memory estimate's) are ggml's own.
    #[test]
    fn cache_type_blocks_match_the_linked_ggml() {
        for t in super::CacheType::ALL {
            let id: llama_cpp_sys_2::ggml_type = t.to_llama().into();
            // SAFETY: plain lookups in ggml's type table for a type llama.cpp takes.
            let (blck, size) = unsafe {
                (
                    llama_cpp_sys_2::ggml_blck_size(id as _),
                    llama_cpp_sys_2::ggml_type_size(id as _),
                )
            };
            assert_eq!(t.block(), (size as u64, blck as u64), "{t}");
        }
    }

    fn sys_type_count() -> u32 {
        llama_cpp_sys_2::GGML_TYPE_COUNT
    }

    #[test]
    fn llama_cpp_build_names_ggml() {
        let build = llama_cpp_build();
        assert!(
            build.starts_with(&format!(
                "llama-cpp-sys-2 {LLAMA_CPP_SYS_2_VERSION}, ggml 0."
            )),
            "{build}"
        );
    }
    #[test]
    fn pinned_version_matches_cargo_toml() {
        let toml = include_str!("../../Cargo.toml");
        assert!(
            toml.contains(&format!("version = \"={}\"", LLAMA_CPP_2_VERSION)),
            "Cargo.toml pins a different llama-cpp-2 than engine::LLAMA_CPP_2_VERSION"
        );
        assert!(
            toml.contains(&format!("version = \"={}\"", LLAMA_CPP_SYS_2_VERSION)),
            "Cargo.toml pins a different llama-cpp-sys-2 than engine::LLAMA_CPP_SYS_2_VERSION"
        );
    }
}
