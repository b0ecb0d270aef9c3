//! Finding a sequence state's cells and reading, zeroing and copying their rows. Every edit
//! keeps byte lengths and structure, so an edited state serializes to bytes llama.cpp accepts.

use super::values::{decode_values, encode_values, ggml_type_name};
use super::{CellMeta, CellRef, KvPart, KvStateError, SeqState, Stream, VBlock};

impl SeqState {
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

    /// Writes numbers into one cell's K row in one layer (float caches only).
    pub fn write_k_row_f32(
        &mut self,
        layer: usize,
        r: CellRef,
        values: &[f32],
    ) -> Result<(), KvStateError> {
        self.check_layer(layer)?;
        let b = &mut self.stream_mut(r)?.k[layer];
        let row = &mut b.data[r.cell * b.row_size..(r.cell + 1) * b.row_size];
        encode_values(b.ggml_type, values, row)
    }

    /// Writes numbers into one cell's V values in one layer (scattered when V is transposed;
    /// float caches only).
    pub fn write_v_row_f32(
        &mut self,
        layer: usize,
        r: CellRef,
        values: &[f32],
    ) -> Result<(), KvStateError> {
        self.check_layer(layer)?;
        let s = self.stream_mut(r)?;
        let n_cells = s.cells.len();
        match &mut s.v[layer] {
            VBlock::Rows(b) => {
                let row = &mut b.data[r.cell * b.row_size..(r.cell + 1) * b.row_size];
                encode_values(b.ggml_type, values, row)
            }
            VBlock::Transposed(b) => {
                let mut bytes = vec![0u8; b.n_embd * b.el_size];
                encode_values(b.ggml_type, values, &mut bytes)?;
                for j in 0..b.n_embd {
                    let at = (j * n_cells + r.cell) * b.el_size;
                    b.data[at..at + b.el_size]
                        .copy_from_slice(&bytes[j * b.el_size..(j + 1) * b.el_size]);
                }
                Ok(())
            }
        }
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
