//! Reading a GGUF file's metadata without llama.cpp: enough to describe a model and estimate the
//! memory it needs before anyone waits for it to load. Pure Rust, bounded reads; never panics on
//! bad input (a property test feeds it garbage).
//!
//! - `reader`: bounded little-endian reads of GGUF values; lengths are checked against the file
//!   size before anything is allocated.
//! - `header`: the header walk (magic, version, metadata) and the summary made from it.
//! - `limits`: the values on which llama.cpp aborts the process instead of returning an error,
//!   refused here first.
//! - `tensors`: the tensor infos, and whether the file holds all the tensor data they describe
//!   (a cut-off download has a complete header).

mod header;
mod limits;
mod reader;
mod tensors;
#[cfg(test)]
mod tests;
pub mod writer;

use crate::engine::CacheTypes;
use std::io::BufReader;
use std::path::Path;

use thiserror::Error;

pub use limits::{LLAMA_MAX_EXPERTS, LLAMA_MAX_LAYERS};
use reader::{ParseError, Reader};
pub use tensors::{GGUF_DEFAULT_ALIGNMENT, ggml_type_block};

/// Why a file's metadata could not be read.
#[derive(Debug, Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not GGUF metadata llama.cpp would read.
    #[error("{path} is not a GGUF model file ({reason})")]
    NotGguf {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a GGUF file says about its model, read from the header alone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GgufSummary {
    /// File size in bytes (about the memory the weights take).
    pub file_size: u64,
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// Number of tensors.
    pub tensor_count: u64,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// `general.architecture` ("llama", "qwen2", …).
    pub architecture: String,
    /// `general.file_type` as a name ("Q4_1"), when present.
    pub quantization: Option<String>,
    /// Repeating layers (`<arch>.block_count`).
    pub n_layer: u32,
    /// Embedding size (`<arch>.embedding_length`).
    pub n_embd: u32,
    /// Attention heads (`<arch>.attention.head_count`; the largest, if per layer).
    pub n_head: u32,
    /// KV heads per layer (`<arch>.attention.head_count_kv`; = `n_head` when absent).
    pub n_head_kv: Vec<u32>,
    /// K head size (`<arch>.attention.key_length`, else `n_embd / n_head`).
    pub head_dim_k: u32,
    /// V head size (`<arch>.attention.value_length`, else `n_embd / n_head`).
    pub head_dim_v: u32,
    /// Trained context (`<arch>.context_length`).
    pub n_ctx_train: u32,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
    /// Where the tensor data starts (after the tensor infos, aligned to `general.alignment`).
    pub data_offset: u64,
    /// The file size the tensor data needs: the end of the last tensor's bytes. A file shorter
    /// than this is refused as truncated.
    pub data_end: u64,
    /// `<arch>.attention.sliding_window`, when present.
    pub sliding_window: Option<u32>,
    /// The metadata has keys of a recurrent state (`<arch>.ssm.*`, `.wkv.*`, `.shortconv.*`:
    /// Mamba, RWKV and the hybrids built on them). llama.cpp's own flag decides once loaded.
    pub recurrent: bool,
}

impl GgufSummary {
    /// Whether kvlab can edit this model's cache, as far as the header tells: a recurrent state
    /// cannot be edited ([`crate::engine::model::kv_surgery_support`]). Whether a sliding window
    /// means a second cache kvlab cannot map is known only once llama.cpp has loaded the model.
    pub fn kv_surgery_support(&self) -> Result<(), String> {
        crate::engine::model::kv_surgery_support(&self.architecture, self.recurrent)
    }

    /// Bytes one KV-cache cell takes across all layers, K and V in F16 (llama.cpp's default).
    pub fn kv_bytes_per_cell(&self) -> u64 {
        self.kv_bytes_per_cell_as(CacheTypes::default())
    }

    /// Bytes one KV-cache cell takes across all layers with caches of the given types.
    pub fn kv_bytes_per_cell_as(&self, cache: CacheTypes) -> u64 {
        kv_bytes_per_cell_as(
            (0..self.n_layer).map(|il| self.n_head_kv_at(il)),
            self.head_dim_k,
            self.head_dim_v,
            cache,
        )
    }

    /// KV heads of layer `il`.
    pub fn n_head_kv_at(&self, il: u32) -> u32 {
        match self.n_head_kv.as_slice() {
            [] => self.n_head,
            [one] => *one,
            per_layer => per_layer.get(il as usize).copied().unwrap_or(0),
        }
    }
}

/// Bytes one KV-cell takes: per layer, K and V of `n_head_kv` heads, two bytes (F16) per channel.
/// Saturates at `u64::MAX` instead of overflowing (a forged header can ask for anything).
pub fn kv_bytes_per_cell(n_head_kv_per_layer: impl Iterator<Item = u32>, dk: u32, dv: u32) -> u64 {
    kv_bytes_per_cell_as(n_head_kv_per_layer, dk, dv, CacheTypes::default())
}

/// [`kv_bytes_per_cell`] for caches of the given types: llama.cpp stores a layer's K (and V)
/// row of a cell as one row of `n_head_kv × head_dim` values of that type.
pub fn kv_bytes_per_cell_as(
    n_head_kv_per_layer: impl Iterator<Item = u32>,
    dk: u32,
    dv: u32,
    cache: CacheTypes,
) -> u64 {
    n_head_kv_per_layer
        .map(|h| {
            let k = cache.k.row_bytes((h as u64).saturating_mul(dk as u64));
            let v = cache.v.row_bytes((h as u64).saturating_mul(dv as u64));
            k.saturating_add(v)
        })
        .fold(0u64, u64::saturating_add)
}

/// KV cells a run allocates: one stream per sequence, each rounded up to 256 cells as the
/// engine's `Lab` does, long enough for the prompt, the generation and a small margin.
/// Saturates at `u64::MAX` instead of overflowing.
pub fn kv_cells_for_run(n_seq: u64, prompt_tokens: u64, max_tokens: u64) -> u64 {
    let per_seq = prompt_tokens
        .saturating_add(max_tokens)
        .saturating_add(8)
        .div_ceil(256)
        .saturating_mul(256);
    n_seq.saturating_mul(per_seq)
}

/// llama.cpp's `llama_ftype` as the names people use.
pub fn file_type_name(ftype: u32) -> String {
    let name = match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        other => return format!("file type {other}"),
    };
    name.to_string()
}

/// Reads the metadata of the GGUF file at `path`.
pub fn read_summary(path: &Path) -> Result<GgufSummary, GgufError> {
    let shown = path.display().to_string();
    let io = |source| GgufError::Io {
        path: shown.clone(),
        source,
    };
    // Looked at before opening: opening a FIFO blocks until someone writes to it.
    let kind = std::fs::metadata(path).map_err(io)?;
    if let Some(what) = not_a_regular_file(&kind) {
        return Err(GgufError::NotGguf {
            path: shown,
            reason: format!("it is {what}, not a regular file"),
        });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(what) = not_a_regular_file(&meta) {
        return Err(GgufError::NotGguf {
            path: shown,
            reason: format!("it is {what}, not a regular file"),
        });
    }
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        size: meta.len(),
        pos: 0,
    };
    header::parse(&mut r).map_err(|e| match e {
        ParseError::Io(source) if source.kind() != std::io::ErrorKind::UnexpectedEof => {
            GgufError::Io {
                path: shown.clone(),
                source,
            }
        }
        ParseError::Io(_) => GgufError::NotGguf {
            path: shown.clone(),
            reason: cut_off(meta.len()).to_string(),
        },
        ParseError::Bad(reason) => GgufError::NotGguf {
            path: shown.clone(),
            reason,
        },
    })
}

/// What a file that is not a regular file is, in words ("a folder", "a named pipe (FIFO)"), or
/// `None` for a regular file. Reading such a file can block forever (a FIFO) or never end
/// (`/dev/zero`), so model, experiment and session paths must be regular files.
pub fn not_a_regular_file(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a named pipe (FIFO)");
        }
        if t.is_char_device() || t.is_block_device() {
            return Some("a device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

/// Reads the metadata from bytes in memory (tests, and files already read).
pub fn summary_from_bytes(bytes: &[u8]) -> Result<GgufSummary, String> {
    let mut r = Reader {
        inner: std::io::Cursor::new(bytes),
        size: bytes.len() as u64,
        pos: 0,
    };
    header::parse(&mut r).map_err(|e| match e {
        ParseError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            cut_off(bytes.len() as u64)
        }
        ParseError::Io(e) => e.to_string(),
        ParseError::Bad(reason) => reason,
    })
}

/// The reason given for a header that ends before its structure does.
fn cut_off(size: u64) -> String {
    format!("its header is cut off after {size} bytes; the file may be truncated")
}
