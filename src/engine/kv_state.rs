//! A codec for llama.cpp's per-sequence state bytes (`llama_state_seq_get_data`).
//!
//! This is how kvlab reaches the K/V rows of single cells: llama.cpp has no API to edit one
//! cell's data, but it serializes a sequence's cache to host memory and reads it back. The
//! layout (documented in `docs/llama-cpp-state.md`) is not a stable llama.cpp API, so the
//! parser is strict: anything it does not recognize is refused, and every edit keeps the byte
//! length and the structure unchanged, so a state that parsed is never written back corrupted.
//!
//! This module is pure Rust (no llama.cpp calls) so it can be tested on synthetic bytes.

use half::{bf16, f16};
use thiserror::Error;

/// The magic number llama.cpp writes at the start of a sequence state.
pub const SEQ_STATE_MAGIC: u32 = 0xaf14_3cd8;

/// ggml type ids kvlab knows by name (`enum ggml_type` in ggml.h).
const GGML_TYPE_F32: i32 = 0;
const GGML_TYPE_F16: i32 = 1;
const GGML_TYPE_BF16: i32 = 30;

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
    /// Bytes remain after the last structure: another memory module (a sliding-window cache, a
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
        "the KV cache type {0} cannot be read as numbers (F32, F16 and BF16 can); \
         zero and transplant still work on it"
    )]
    UnreadableType(String),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqState {
    /// The sequence the state was taken from.
    pub seq_id: i32,
    /// Per stream: `None` for an empty stream (llama.cpp writes only its cell count, 0).
    pub streams: Vec<Option<Stream>>,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayoutHints {
    /// Whether cells carry llama.cpp's `llama_kv_cell_ext` (M-RoPE and n-gram models).
    pub cell_ext: bool,
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KvStateError> {
        let remaining = self.bytes.len() - self.offset;
        if n > remaining {
            return Err(KvStateError::Truncated {
                offset: self.offset,
                needed: n - remaining,
            });
        }
        let slice = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        Ok(slice)
    }
    fn u32(&mut self) -> Result<u32, KvStateError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, KvStateError> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> Result<u64, KvStateError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }
    /// A count that must fit in what is left, `unit` bytes at least per item: guards allocations
    /// against corrupt counts.
    fn count(&mut self, what: &str, unit: usize) -> Result<usize, KvStateError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(unit.max(1)) > self.remaining() {
            return Err(KvStateError::Malformed(format!(
                "{what} = {n} does not fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }
}

/// A short name for a ggml type id, for messages.
pub fn ggml_type_name(t: i32) -> String {
    match t {
        0 => "f32".into(),
        1 => "f16".into(),
        2 => "q4_0".into(),
        3 => "q4_1".into(),
        6 => "q5_0".into(),
        7 => "q5_1".into(),
        8 => "q8_0".into(),
        30 => "bf16".into(),
        other => format!("ggml type {other}"),
    }
}

fn element_size(t: i32) -> Option<usize> {
    match t {
        GGML_TYPE_F32 => Some(4),
        GGML_TYPE_F16 | GGML_TYPE_BF16 => Some(2),
        _ => None,
    }
}

/// Largest ggml type id kvlab accepts (GGML_TYPE_COUNT in the pinned llama.cpp is below this).
const MAX_GGML_TYPE: i32 = 64;

fn decode_values(t: i32, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), KvStateError> {
    match t {
        GGML_TYPE_F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        GGML_TYPE_F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        GGML_TYPE_BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        other => return Err(KvStateError::UnreadableType(ggml_type_name(other))),
    }
    Ok(())
}

impl SeqState {
    /// Parses the bytes of `llama_state_seq_get_data` for the plain `llama_kv_cache`.
    ///
    /// Refuses (never panics on) anything else: other magic, truncation, implausible counts,
    /// unknown types and trailing bytes from memory modules kvlab does not know.
    pub fn parse(bytes: &[u8], hints: LayoutHints) -> Result<SeqState, KvStateError> {
        let mut r = Reader { bytes, offset: 0 };
        let magic = r.u32()?;
        if magic != SEQ_STATE_MAGIC {
            return Err(KvStateError::BadMagic { found: magic });
        }
        let seq_id = r.i32()?;
        let n_stream = r.count("n_stream", 4)?;
        let mut streams = Vec::with_capacity(n_stream);
        for _ in 0..n_stream {
            let cell_count = r.count("cell_count", 8)?;
            if cell_count == 0 {
                streams.push(None);
                continue;
            }
            streams.push(Some(parse_stream(&mut r, cell_count, hints)?));
        }
        if r.remaining() != 0 {
            return Err(KvStateError::TrailingBytes(r.remaining()));
        }
        Ok(SeqState { seq_id, streams })
    }

    /// Writes the state back in llama.cpp's layout. `parse(serialize(s)) == s`, and for bytes
    /// that parsed, `serialize(parse(b)) == b`.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len_hint());
        out.extend_from_slice(&SEQ_STATE_MAGIC.to_le_bytes());
        out.extend_from_slice(&self.seq_id.to_le_bytes());
        out.extend_from_slice(&(self.streams.len() as u32).to_le_bytes());
        for stream in &self.streams {
            let Some(s) = stream else {
                out.extend_from_slice(&0u32.to_le_bytes());
                continue;
            };
            out.extend_from_slice(&(s.cells.len() as u32).to_le_bytes());
            for c in &s.cells {
                out.extend_from_slice(&c.pos.to_le_bytes());
                out.extend_from_slice(&(c.seq_ids.len() as u32).to_le_bytes());
                if let Some(ext) = c.ext {
                    for x in ext {
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                }
                for id in &c.seq_ids {
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
            out.extend_from_slice(&u32::from(s.v_trans).to_le_bytes());
            out.extend_from_slice(&(s.k.len() as u32).to_le_bytes());
            out.extend_from_slice(&s.n_rot_k.to_le_bytes());
            out.extend_from_slice(&s.n_rot_v.to_le_bytes());
            for k in &s.k {
                out.extend_from_slice(&k.ggml_type.to_le_bytes());
                out.extend_from_slice(&(k.row_size as u64).to_le_bytes());
                out.extend_from_slice(&k.data);
            }
            for v in &s.v {
                match v {
                    VBlock::Rows(b) => {
                        out.extend_from_slice(&b.ggml_type.to_le_bytes());
                        out.extend_from_slice(&(b.row_size as u64).to_le_bytes());
                        out.extend_from_slice(&b.data);
                    }
                    VBlock::Transposed(b) => {
                        out.extend_from_slice(&b.ggml_type.to_le_bytes());
                        out.extend_from_slice(&(b.el_size as u32).to_le_bytes());
                        out.extend_from_slice(&(b.n_embd as u32).to_le_bytes());
                        out.extend_from_slice(&b.data);
                    }
                }
            }
        }
        out
    }

    fn byte_len_hint(&self) -> usize {
        self.streams
            .iter()
            .flatten()
            .map(|s| {
                s.k.iter().map(|b| b.data.len() + 12).sum::<usize>()
                    + s.v
                        .iter()
                        .map(|v| match v {
                            VBlock::Rows(b) => b.data.len() + 12,
                            VBlock::Transposed(b) => b.data.len() + 12,
                        })
                        .sum::<usize>()
                    + s.cells.len() * 12
            })
            .sum::<usize>()
            + 64
    }

    /// The number of KV layers (the same in every non-empty stream).
    pub fn n_layer(&self) -> usize {
        self.streams
            .iter()
            .flatten()
            .map(|s| s.k.len())
            .next()
            .unwrap_or(0)
    }

    /// Every cell, with its position, in stream then cell order.
    pub fn cells(&self) -> impl Iterator<Item = (CellRef, &CellMeta)> {
        self.streams.iter().enumerate().flat_map(|(si, s)| {
            s.iter().flat_map(move |s| {
                s.cells.iter().enumerate().map(move |(ci, c)| {
                    (
                        CellRef {
                            stream: si,
                            cell: ci,
                        },
                        c,
                    )
                })
            })
        })
    }

    /// The cells holding position `pos` (one per stream that has it; usually exactly one).
    pub fn cells_at(&self, pos: i32) -> Vec<CellRef> {
        self.cells()
            .filter(|(_, c)| c.pos == pos)
            .map(|(r, _)| r)
            .collect()
    }

    /// The positions held, sorted, without repeats.
    pub fn positions(&self) -> Vec<i32> {
        let mut p: Vec<i32> = self.cells().map(|(_, c)| c.pos).collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    fn stream(&self, r: CellRef) -> Result<&Stream, KvStateError> {
        match self.streams.get(r.stream) {
            Some(Some(s)) if r.cell < s.cells.len() => Ok(s),
            _ => Err(KvStateError::NoSuchCell(r)),
        }
    }

    fn stream_mut(&mut self, r: CellRef) -> Result<&mut Stream, KvStateError> {
        match self.streams.get_mut(r.stream) {
            Some(Some(s)) if r.cell < s.cells.len() => Ok(s),
            _ => Err(KvStateError::NoSuchCell(r)),
        }
    }

    fn check_layer(&self, layer: usize) -> Result<(), KvStateError> {
        let n_layer = self.n_layer();
        if layer >= n_layer {
            return Err(KvStateError::LayerOutOfRange { layer, n_layer });
        }
        Ok(())
    }

    /// The raw bytes of one cell's K row in one layer.
    pub fn k_row_bytes(&self, layer: usize, r: CellRef) -> Result<&[u8], KvStateError> {
        self.check_layer(layer)?;
        let b = &self.stream(r)?.k[layer];
        Ok(&b.data[r.cell * b.row_size..(r.cell + 1) * b.row_size])
    }

    /// The raw bytes of one cell's V values in one layer (gathered when V is transposed).
    pub fn v_row_bytes(&self, layer: usize, r: CellRef) -> Result<Vec<u8>, KvStateError> {
        self.check_layer(layer)?;
        let s = self.stream(r)?;
        let n_cells = s.cells.len();
        Ok(match &s.v[layer] {
            VBlock::Rows(b) => b.data[r.cell * b.row_size..(r.cell + 1) * b.row_size].to_vec(),
            VBlock::Transposed(b) => {
                let mut out = Vec::with_capacity(b.n_embd * b.el_size);
                for j in 0..b.n_embd {
                    let at = (j * n_cells + r.cell) * b.el_size;
                    out.extend_from_slice(&b.data[at..at + b.el_size]);
                }
                out
            }
        })
    }

    /// One cell's K row in one layer as numbers.
    pub fn k_row_f32(&self, layer: usize, r: CellRef) -> Result<Vec<f32>, KvStateError> {
        let t = self.stream(r)?.k.get(layer).map(|b| b.ggml_type);
        let bytes = self.k_row_bytes(layer, r)?;
        let mut out = Vec::new();
        decode_values(t.unwrap_or(-1), bytes, &mut out)?;
        Ok(out)
    }

    /// One cell's V values in one layer as numbers.
    pub fn v_row_f32(&self, layer: usize, r: CellRef) -> Result<Vec<f32>, KvStateError> {
        self.check_layer(layer)?;
        let t = match &self.stream(r)?.v[layer] {
            VBlock::Rows(b) => b.ggml_type,
            VBlock::Transposed(b) => b.ggml_type,
        };
        let bytes = self.v_row_bytes(layer, r)?;
        let mut out = Vec::new();
        decode_values(t, &bytes, &mut out)?;
        Ok(out)
    }

    /// Sets one cell's rows to zero in one layer. All-zero bytes are exact zeros for the float
    /// types and for ggml's block quantizations (scale 0).
    pub fn zero_cell(
        &mut self,
        layer: usize,
        r: CellRef,
        part: KvPart,
    ) -> Result<(), KvStateError> {
        self.check_layer(layer)?;
        let s = self.stream_mut(r)?;
        let n_cells = s.cells.len();
        if part.has_k() {
            let b = &mut s.k[layer];
            b.data[r.cell * b.row_size..(r.cell + 1) * b.row_size].fill(0);
        }
        if part.has_v() {
            match &mut s.v[layer] {
                VBlock::Rows(b) => b.data[r.cell * b.row_size..(r.cell + 1) * b.row_size].fill(0),
                VBlock::Transposed(b) => {
                    for j in 0..b.n_embd {
                        let at = (j * n_cells + r.cell) * b.el_size;
                        b.data[at..at + b.el_size].fill(0);
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies one cell's rows in one layer from `donor` (same model, same cache types).
    pub fn copy_cell_from(
        &mut self,
        donor: &SeqState,
        layer: usize,
        dst: CellRef,
        src: CellRef,
        part: KvPart,
    ) -> Result<(), KvStateError> {
        self.check_layer(layer)?;
        donor.check_layer(layer)?;
        if part.has_k() {
            let src_k = &donor.stream(src)?.k[layer];
            let dst_k = &self.stream(dst)?.k[layer];
            if src_k.ggml_type != dst_k.ggml_type || src_k.row_size != dst_k.row_size {
                return Err(KvStateError::Mismatch(format!(
                    "layer {layer} K is {} ({} B/row) in one and {} ({} B/row) in the other",
                    ggml_type_name(dst_k.ggml_type),
                    dst_k.row_size,
                    ggml_type_name(src_k.ggml_type),
                    src_k.row_size
                )));
            }
            let row = donor.k_row_bytes(layer, src)?.to_vec();
            let b = &mut self.stream_mut(dst)?.k[layer];
            b.data[dst.cell * b.row_size..(dst.cell + 1) * b.row_size].copy_from_slice(&row);
        }
        if part.has_v() {
            let (src_t, src_len) = v_shape(&donor.stream(src)?.v[layer]);
            let (dst_t, dst_len) = v_shape(&self.stream(dst)?.v[layer]);
            if src_t != dst_t || src_len != dst_len {
                return Err(KvStateError::Mismatch(format!(
                    "layer {layer} V is {} in one and {} in the other",
                    ggml_type_name(dst_t),
                    ggml_type_name(src_t)
                )));
            }
            let row = donor.v_row_bytes(layer, src)?;
            let s = self.stream_mut(dst)?;
            let n_cells = s.cells.len();
            match &mut s.v[layer] {
                VBlock::Rows(b) => {
                    b.data[dst.cell * b.row_size..(dst.cell + 1) * b.row_size].copy_from_slice(&row)
                }
                VBlock::Transposed(b) => {
                    for j in 0..b.n_embd {
                        let at = (j * n_cells + dst.cell) * b.el_size;
                        b.data[at..at + b.el_size]
                            .copy_from_slice(&row[j * b.el_size..(j + 1) * b.el_size]);
                    }
                }
            }
        }
        Ok(())
    }
}

/// (type, bytes per cell) of a V block.
fn v_shape(v: &VBlock) -> (i32, usize) {
    match v {
        VBlock::Rows(b) => (b.ggml_type, b.row_size),
        VBlock::Transposed(b) => (b.ggml_type, b.el_size * b.n_embd),
    }
}

fn check_type(t: i32) -> Result<(), KvStateError> {
    if !(0..MAX_GGML_TYPE).contains(&t) {
        return Err(KvStateError::Malformed(format!("unknown ggml type id {t}")));
    }
    Ok(())
}

fn parse_stream(
    r: &mut Reader<'_>,
    cell_count: usize,
    hints: LayoutHints,
) -> Result<Stream, KvStateError> {
    let mut cells = Vec::with_capacity(cell_count);
    for _ in 0..cell_count {
        let pos = r.i32()?;
        let n_seq_id = r.count("n_seq_id", 4)?;
        let ext = if hints.cell_ext {
            Some([r.i32()?, r.i32()?, r.i32()?])
        } else {
            None
        };
        let mut seq_ids = Vec::with_capacity(n_seq_id);
        for _ in 0..n_seq_id {
            seq_ids.push(r.i32()?);
        }
        cells.push(CellMeta { pos, ext, seq_ids });
    }
    let v_trans = match r.u32()? {
        0 => false,
        1 => true,
        other => return Err(KvStateError::Malformed(format!("v_trans = {other}"))),
    };
    let n_layer = r.count("n_layer", 12)?;
    let n_rot_k = r.u32()?;
    let n_rot_v = r.u32()?;
    let mut k = Vec::with_capacity(n_layer);
    for _ in 0..n_layer {
        let ggml_type = r.i32()?;
        check_type(ggml_type)?;
        let row_size = usize::try_from(r.u64()?)
            .map_err(|_| KvStateError::Malformed("K row size overflows".into()))?;
        if row_size == 0 {
            return Err(KvStateError::Malformed("K row size is 0".into()));
        }
        let len = row_size
            .checked_mul(cell_count)
            .ok_or_else(|| KvStateError::Malformed("K block size overflows".into()))?;
        let data = r.take(len)?.to_vec();
        k.push(RowBlock {
            ggml_type,
            row_size,
            data,
        });
    }
    let mut v = Vec::with_capacity(n_layer);
    for _ in 0..n_layer {
        let ggml_type = r.i32()?;
        check_type(ggml_type)?;
        if v_trans {
            let el_size = r.u32()? as usize;
            let n_embd = r.u32()? as usize;
            if el_size == 0 || n_embd == 0 {
                return Err(KvStateError::Malformed("empty transposed V block".into()));
            }
            if let Some(expected) = element_size(ggml_type)
                && expected != el_size
            {
                return Err(KvStateError::Malformed(format!(
                    "V element size {el_size} for type {}",
                    ggml_type_name(ggml_type)
                )));
            }
            let len = el_size
                .checked_mul(n_embd)
                .and_then(|x| x.checked_mul(cell_count))
                .ok_or_else(|| KvStateError::Malformed("V block size overflows".into()))?;
            let data = r.take(len)?.to_vec();
            v.push(VBlock::Transposed(TransposedBlock {
                ggml_type,
                el_size,
                n_embd,
                data,
            }));
        } else {
            let row_size = usize::try_from(r.u64()?)
                .map_err(|_| KvStateError::Malformed("V row size overflows".into()))?;
            if row_size == 0 {
                return Err(KvStateError::Malformed("V row size is 0".into()));
            }
            let len = row_size
                .checked_mul(cell_count)
                .ok_or_else(|| KvStateError::Malformed("V block size overflows".into()))?;
            let data = r.take(len)?.to_vec();
            v.push(VBlock::Rows(RowBlock {
                ggml_type,
                row_size,
                data,
            }));
        }
    }
    Ok(Stream {
        cells,
        v_trans,
        n_rot_k,
        n_rot_v,
        k,
        v,
    })
}

/// A synthetic state for tests (here and in the runner's surgery): two streams, the first with
/// `positions` cells; F16 K rows of `n_embd` values, V transposed or not; values encode
/// (layer, cell, channel).
#[cfg(test)]
pub(crate) fn synthetic(
    positions: &[i32],
    n_layer: usize,
    n_embd: usize,
    v_trans: bool,
) -> Vec<u8> {
    let n = positions.len();
    let mut st = SeqState {
        seq_id: 0,
        streams: vec![None, None],
    };
    let cells = positions
        .iter()
        .map(|&pos| CellMeta {
            pos,
            ext: None,
            seq_ids: vec![0],
        })
        .collect();
    let val = |l: usize, c: usize, j: usize, v: bool| {
        f16::from_f32((l * 1000 + c * 10 + j) as f32 * if v { -1.0 } else { 1.0 } / 64.0)
    };
    let k = (0..n_layer)
        .map(|l| RowBlock {
            ggml_type: GGML_TYPE_F16,
            row_size: n_embd * 2,
            data: (0..n)
                .flat_map(|c| (0..n_embd).flat_map(move |j| val(l, c, j, false).to_le_bytes()))
                .collect(),
        })
        .collect();
    let v = (0..n_layer)
        .map(|l| {
            if v_trans {
                VBlock::Transposed(TransposedBlock {
                    ggml_type: GGML_TYPE_F16,
                    el_size: 2,
                    n_embd,
                    data: (0..n_embd)
                        .flat_map(|j| (0..n).flat_map(move |c| val(l, c, j, true).to_le_bytes()))
                        .collect(),
                })
            } else {
                VBlock::Rows(RowBlock {
                    ggml_type: GGML_TYPE_F16,
                    row_size: n_embd * 2,
                    data: (0..n)
                        .flat_map(|c| {
                            (0..n_embd).flat_map(move |j| val(l, c, j, true).to_le_bytes())
                        })
                        .collect(),
                })
            }
        })
        .collect();
    st.streams[0] = Some(Stream {
        cells,
        v_trans,
        n_rot_k: 0,
        n_rot_v: 0,
        k,
        v,
    });
    st.serialize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_both_v_layouts() {
        for v_trans in [false, true] {
            let bytes = synthetic(&[0, 1, 2, 3], 3, 4, v_trans);
            let st = SeqState::parse(&bytes, LayoutHints::default()).unwrap();
            assert_eq!(st.serialize(), bytes);
            assert_eq!(st.n_layer(), 3);
            assert_eq!(st.positions(), vec![0, 1, 2, 3]);
        }
    }

    #[test]
    fn reads_rows_in_both_layouts_identically() {
        let a =
            SeqState::parse(&synthetic(&[5, 6, 7], 2, 4, false), LayoutHints::default()).unwrap();
        let b =
            SeqState::parse(&synthetic(&[5, 6, 7], 2, 4, true), LayoutHints::default()).unwrap();
        let r = a.cells_at(6)[0];
        assert_eq!(r, CellRef { stream: 0, cell: 1 });
        let expect: Vec<f32> = (0..4).map(|j| -((1000 + 10 + j) as f32) / 64.0).collect();
        assert_eq!(a.v_row_f32(1, r).unwrap(), expect);
        assert_eq!(b.v_row_f32(1, r).unwrap(), expect);
        let k: Vec<f32> = (0..4).map(|j| ((1000 + 10 + j) as f32) / 64.0).collect();
        assert_eq!(a.k_row_f32(1, r).unwrap(), k);
    }

    #[test]
    fn zero_touches_only_the_chosen_cell_layer_and_part() {
        for v_trans in [false, true] {
            let orig = SeqState::parse(
                &synthetic(&[0, 1, 2], 2, 4, v_trans),
                LayoutHints::default(),
            )
            .unwrap();
            let mut st = orig.clone();
            let r = st.cells_at(1)[0];
            st.zero_cell(1, r, KvPart::V).unwrap();
            for layer in 0..2 {
                for (cr, _) in orig.cells() {
                    let zeroed = layer == 1 && cr == r;
                    assert_eq!(
                        st.k_row_f32(layer, cr).unwrap(),
                        orig.k_row_f32(layer, cr).unwrap()
                    );
                    let v = st.v_row_f32(layer, cr).unwrap();
                    if zeroed {
                        assert!(v.iter().all(|&x| x == 0.0));
                    } else {
                        assert_eq!(v, orig.v_row_f32(layer, cr).unwrap());
                    }
                }
            }
        }
    }

    #[test]
    fn copy_takes_the_donor_rows() {
        let donor =
            SeqState::parse(&synthetic(&[0, 1, 2], 2, 4, true), LayoutHints::default()).unwrap();
        let mut st = donor.clone();
        // Make the recipient differ everywhere, then copy one cell back.
        for (cr, _) in donor.cells() {
            for l in 0..2 {
                st.zero_cell(l, cr, KvPart::Both).unwrap();
            }
        }
        let src = donor.cells_at(2)[0];
        let dst = st.cells_at(0)[0];
        st.copy_cell_from(&donor, 0, dst, src, KvPart::Both)
            .unwrap();
        assert_eq!(
            st.k_row_f32(0, dst).unwrap(),
            donor.k_row_f32(0, src).unwrap()
        );
        assert_eq!(
            st.v_row_f32(0, dst).unwrap(),
            donor.v_row_f32(0, src).unwrap()
        );
        assert!(st.k_row_f32(1, dst).unwrap().iter().all(|&x| x == 0.0));
    }

    #[test]
    fn refuses_foreign_and_damaged_states_with_reasons() {
        let bytes = synthetic(&[0, 1], 2, 4, true);
        let mut bad = bytes.clone();
        bad[0] ^= 0xff;
        assert!(matches!(
            SeqState::parse(&bad, LayoutHints::default()),
            Err(KvStateError::BadMagic { .. })
        ));
        assert!(matches!(
            SeqState::parse(&bytes[..bytes.len() - 1], LayoutHints::default()),
            Err(KvStateError::Truncated { .. })
        ));
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 8]);
        assert_eq!(
            SeqState::parse(&longer, LayoutHints::default()),
            Err(KvStateError::TrailingBytes(8))
        );
        let msg = SeqState::parse(&longer, LayoutHints::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not supported"), "{msg}");
    }

    #[test]
    fn quantized_rows_can_be_zeroed_but_not_read() {
        let mut st =
            SeqState::parse(&synthetic(&[0, 1], 1, 4, false), LayoutHints::default()).unwrap();
        st.streams[0].as_mut().unwrap().k[0].ggml_type = 8; // q8_0
        let r = st.cells_at(0)[0];
        let err = st.k_row_f32(0, r).unwrap_err();
        assert!(err.to_string().contains("q8_0"), "{err}");
        st.zero_cell(0, r, KvPart::K).unwrap();
        assert!(st.k_row_bytes(0, r).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn layer_out_of_range_is_an_error() {
        let st = SeqState::parse(&synthetic(&[0], 2, 4, false), LayoutHints::default()).unwrap();
        let r = st.cells_at(0)[0];
        assert_eq!(
            st.k_row_f32(2, r),
            Err(KvStateError::LayerOutOfRange {
                layer: 2,
                n_layer: 2
            })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Random corruption is either refused or parsed into something that serializes back to
        /// the same bytes; it never panics.
        #[test]
        fn corruption_never_panics(flips in proptest::collection::vec((0usize..10_000, any::<u8>()), 1..6),
                                   cut in 0usize..10_000, v_trans in any::<bool>()) {
            let mut bytes = synthetic(&[0, 1, 2], 2, 4, v_trans);
            for (at, x) in flips {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
            let n = bytes.len();
            bytes.truncate(n - cut % 8);
            if let Ok(st) = SeqState::parse(&bytes, LayoutHints::default()) {
                prop_assert_eq!(st.serialize(), bytes);
            }
        }
    }
}
