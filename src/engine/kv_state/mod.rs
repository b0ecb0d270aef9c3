//! A codec for llama.cpp's per-sequence state bytes (`llama_state_seq_get_data`).
//!
//! This is how kvlab reaches the K/V rows of single cells: llama.cpp has no API to edit one
//! cell's data, but it serializes a sequence's cache to host memory and reads it back. The
//! layout (documented in `docs/llama-cpp-state.md`) is not a stable llama.cpp API, so the
//! parser is strict: anything it does not recognize is refused, and every edit keeps the byte
//! length and the structure unchanged, so a state that parsed is never written back corrupted.
//!
//! This module is pure Rust (no llama.cpp calls) so it can be tested on synthetic bytes.
//!
//! - `codec`: parsing and serializing the bytes (strict, never panics on bad input).
//! - `bytes`: a state kept as its bytes, its rows edited where they lie.
//! - `cells`: finding cells by position and reading, zeroing and copying their rows.
//! - `values`: ggml type names and the float types whose values kvlab can read.

mod bytes;
mod cells;
mod codec;
#[cfg(test)]
mod synthetic;
#[cfg(test)]
mod tests;
mod values;

pub use bytes::StateBytes;
#[cfg(test)]
pub(crate) use synthetic::synthetic;
pub use values::ggml_type_name;

use thiserror::Error;

/// The magic number llama.cpp writes at the start of a sequence state.
pub const SEQ_STATE_MAGIC: u32 = 0xaf14_3cd8;

/// Why a sequence state was refused or an edit could not be made.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KvStateError {
    /// The bytes end before the structure they announce.
    #[error("the KV state is truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where reading stopped.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The first four bytes are not llama.cpp's sequence-state magic.
    #[error(
        "not a llama.cpp sequence state (magic {found:#010x}, expected {SEQ_STATE_MAGIC:#010x})"
    )]
    BadMagic {
        /// The magic that was found.
        found: u32,
    },
    /// Bytes remain after the last structure: another memory module (a second cache, a
    /// recurrent state) kvlab cannot place.
    #[error(
        "the KV state has {0} unexplained trailing bytes: this model's memory layout \
         (sliding-window, recurrent or hybrid cache) is not supported for KV surgery"
    )]
    TrailingBytes(usize),
    /// A count or size is implausible (a corrupt or foreign state).
    #[error("the KV state is malformed: {0}")]
    Malformed(String),
    /// A tensor type whose values kvlab cannot read as numbers.
    #[error(
        "the KV cache type {0} cannot be read as numbers (f32, f16, bf16, q8_0, q5_0, q5_1, \
         q4_0, q4_1 and iq4_nl can); zero and transplant still work on it"
    )]
    UnreadableType(String),
    /// A sliding-window layer's cache no longer holds the position (it is older than the
    /// window, so that layer does not read it).
    #[error(
        "position {pos} is outside layer {layer}'s sliding window: that layer no longer reads it"
    )]
    OutsideWindow {
        /// The position.
        pos: i32,
        /// The model layer.
        layer: usize,
    },
    /// No cell holds the given position.
    #[error("no cache cell holds position {0}")]
    NoSuchPosition(i32),
    /// A cell reference that does not belong to this state (e.g. taken from another one).
    #[error("no cell {} in stream {} of this state", .0.cell, .0.stream)]
    NoSuchCell(CellRef),
    /// A layer index beyond the state's layers.
    #[error("layer {layer} is out of range: the cache has {n_layer} layers (0..{n_layer})")]
    LayerOutOfRange {
        /// The layer asked for.
        layer: usize,
        /// How many layers the state has.
        n_layer: usize,
    },
    /// Two states whose rows cannot be exchanged.
    #[error("the two KV states do not match: {0}")]
    Mismatch(String),
}

/// Which half of the cache an edit or a read touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvPart {
    /// Keys only.
    K,
    /// Values only.
    V,
    /// Keys and values.
    #[serde(alias = "kv", alias = "both")]
    Both,
}

impl KvPart {
    /// Whether the keys are touched.
    pub fn has_k(self) -> bool {
        matches!(self, KvPart::K | KvPart::Both)
    }
    /// Whether the values are touched.
    pub fn has_v(self) -> bool {
        matches!(self, KvPart::V | KvPart::Both)
    }
}

/// Metadata of one cache cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellMeta {
    /// The token position the cell holds.
    pub pos: i32,
    /// The extension llama.cpp writes for M-RoPE / n-gram models (x, y, tok), when present.
    pub ext: Option<[i32; 3]>,
    /// The sequences the cell belongs to.
    pub seq_ids: Vec<i32>,
}

/// One layer's rows, one per cell (K always; V when not transposed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowBlock {
    /// ggml type id.
    pub ggml_type: i32,
    /// Bytes per row.
    pub row_size: usize,
    /// `cell_count * row_size` bytes, row i belonging to cell i.
    pub data: Vec<u8>,
}

/// One layer's V values when llama.cpp stores V transposed (flash attention off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransposedBlock {
    /// ggml type id.
    pub ggml_type: i32,
    /// Bytes per element.
    pub el_size: usize,
    /// Elements per cell (the V embedding size of the layer).
    pub n_embd: usize,
    /// `n_embd * cell_count * el_size` bytes: element j of cell i at `(j * cell_count + i) * el_size`.
    pub data: Vec<u8>,
}

/// The V half of a layer, in one of llama.cpp's two layouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VBlock {
    /// One row per cell.
    Rows(RowBlock),
    /// Element-major.
    Transposed(TransposedBlock),
}

/// The cells of one KV stream and their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Cell metadata in llama.cpp's order.
    pub cells: Vec<CellMeta>,
    /// Whether V is stored transposed (llama.cpp does so when flash attention is off).
    pub v_trans: bool,
    /// The data header's `n_rot_k`, kept verbatim.
    pub n_rot_k: u32,
    /// The data header's `n_rot_v`, kept verbatim.
    pub n_rot_v: u32,
    /// K per KV layer.
    pub k: Vec<RowBlock>,
    /// V per KV layer.
    pub v: Vec<VBlock>,
}

/// A parsed sequence state: what `llama_state_seq_get_data` wrote for one sequence.
///
/// Layer indices in every accessor are the *model's* layer numbers. For a plain cache they are
/// the cache's own; for a sliding-window model (llama.cpp's iSWA cache: the full-attention
/// layers in one cache, the sliding ones in another, see [`SwaSplit`]) the state maps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqState {
    /// The sequence the state was taken from.
    pub seq_id: i32,
    /// Per stream: `None` for an empty stream (llama.cpp writes only its cell count, 0). For an
    /// iSWA state: the full-attention (base) cache's streams.
    pub streams: Vec<Option<Stream>>,
    /// The sliding-window cache's part of an iSWA state.
    pub swa: Option<SwaPart>,
}

/// The second half of an iSWA state: the sliding-window cache's streams, and which model
/// layers each cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwaPart {
    /// Per stream, as in [`SeqState::streams`]. Cells older than the window (as of the
    /// sequence's last position) are not written by llama.cpp: no sliding layer reads them.
    pub streams: Vec<Option<Stream>>,
    /// Which model layers slide.
    pub split: SwaSplit,
}

/// Which model layers use sliding-window attention, as llama.cpp decided it for the model
/// (`hparams.is_swa(il)`): an iSWA cache keeps the others in its base cache and these in its
/// sliding-window cache, each in increasing layer order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SwaSplit {
    /// Per model layer: whether it slides.
    pub sliding: Vec<bool>,
}

impl SwaSplit {
    /// The model layers the base (full-attention) cache holds, in its order.
    pub fn base_layers(&self) -> Vec<usize> {
        (0..self.sliding.len())
            .filter(|&l| !self.sliding[l])
            .collect()
    }

    /// The model layers the sliding-window cache holds, in its order.
    pub fn swa_layers(&self) -> Vec<usize> {
        (0..self.sliding.len())
            .filter(|&l| self.sliding[l])
            .collect()
    }

    /// Where model layer `layer` lives: `(in the sliding cache, index among that cache's
    /// layers)`; `None` beyond the model's layers.
    pub fn locate(&self, layer: usize) -> Option<(bool, usize)> {
        let sliding = *self.sliding.get(layer)?;
        let index = self.sliding[..layer]
            .iter()
            .filter(|&&s| s == sliding)
            .count();
        Some((sliding, index))
    }
}

/// Where a cell lives inside a [`SeqState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CellRef {
    /// Stream index.
    pub stream: usize,
    /// Cell index within the stream.
    pub cell: usize,
}

/// What the parser must know about the model that the bytes do not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayoutHints {
    /// Whether cells carry llama.cpp's `llama_kv_cell_ext` (M-RoPE and n-gram models).
    pub cell_ext: bool,
    /// For a model with llama.cpp's iSWA cache: which layers slide. The state then holds two
    /// caches, the base one first.
    pub swa: Option<SwaSplit>,
}
