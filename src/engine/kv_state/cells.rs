//! Finding a sequence state's cells and reading, zeroing and copying their rows. Every edit
//! keeps byte lengths and structure, so an edited state serializes to bytes llama.cpp accepts.

use super::values::{decode_values, encode_values, ggml_type_name};
use super::{
    CellMeta, CellRef, KvPart, KvStateError, RowBlock, SeqState, Stream, SwaPart, TransposedBlock,
    VBlock,
};

/// Where one model layer's rows of one cell are: which cache (base or sliding), that cache's
/// own layer index, and the cell's index in the stream.
#[derive(Debug, Clone, Copy)]
struct Site {
    sliding: bool,
    layer: usize,
    stream: usize,
    cell: usize,
}

impl SeqState {
    /// The number of model layers the state holds rows for.
    pub fn n_layer(&self) -> usize {
        if let Some(swa) = &self.swa {
            return swa.split.sliding.len();
        }
        self.streams
            .iter()
            .flatten()
            .map(|s| s.k.len())
            .next()
            .unwrap_or(0)
    }

    /// Every cell, with its position, in stream then cell order (for an iSWA state, the
    /// full-attention cache's cells: it holds every position).
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

    /// Whether model layer `layer` uses a sliding window (always false for a plain cache).
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.swa
            .as_ref()
            .and_then(|s| s.split.sliding.get(layer).copied())
            .unwrap_or(false)
    }

    /// Finds model layer `layer`'s rows of cell `r` (a cell of [`cells`](Self::cells)).
    fn site(&self, layer: usize, r: CellRef) -> Result<Site, KvStateError> {
        let n_layer = self.n_layer();
        if layer >= n_layer {
            return Err(KvStateError::LayerOutOfRange { layer, n_layer });
        }
        let base = match self.streams.get(r.stream) {
            Some(Some(s)) if r.cell < s.cells.len() => s,
            _ => return Err(KvStateError::NoSuchCell(r)),
        };
        let plain = Site {
            sliding: false,
            layer,
            stream: r.stream,
            cell: r.cell,
        };
        let Some(swa) = &self.swa else {
            return Ok(plain);
        };
        let Some((sliding, index)) = swa.split.locate(layer) else {
            return Err(KvStateError::LayerOutOfRange { layer, n_layer });
        };
        if !sliding {
            return Ok(Site {
                layer: index,
                ..plain
            });
        }
        let pos = base.cells[r.cell].pos;
        let cell = swa
            .streams
            .get(r.stream)
            .and_then(Option::as_ref)
            .and_then(|s| s.cells.iter().position(|c| c.pos == pos))
            .ok_or(KvStateError::OutsideWindow { pos, layer })?;
        Ok(Site {
            sliding: true,
            layer: index,
            stream: r.stream,
            cell,
        })
    }

    fn stream_at(&self, at: Site) -> &Stream {
        let streams = match (&self.swa, at.sliding) {
            (Some(swa), true) => &swa.streams,
            _ => &self.streams,
        };
        streams[at.stream]
            .as_ref()
            .expect("a site is in a non-empty stream")
    }

    fn stream_at_mut(&mut self, at: Site) -> &mut Stream {
        let streams = match (&mut self.swa, at.sliding) {
            (Some(swa), true) => &mut swa.streams,
            _ => &mut self.streams,
        };
        streams[at.stream]
            .as_mut()
            .expect("a site is in a non-empty stream")
    }

    /// The raw bytes of one cell's K row in one layer.
    pub fn k_row_bytes(&self, layer: usize, r: CellRef) -> Result<&[u8], KvStateError> {
        let at = self.site(layer, r)?;
        let b = &self.stream_at(at).k[at.layer];
        Ok(&b.data[at.cell * b.row_size..(at.cell + 1) * b.row_size])
    }

    /// The raw bytes of one cell's V values in one layer (gathered when V is transposed).
    pub fn v_row_bytes(&self, layer: usize, r: CellRef) -> Result<Vec<u8>, KvStateError> {
        let at = self.site(layer, r)?;
        let s = self.stream_at(at);
        let n_cells = s.cells.len();
        Ok(match &s.v[at.layer] {
            VBlock::Rows(b) => b.data[at.cell * b.row_size..(at.cell + 1) * b.row_size].to_vec(),
            VBlock::Transposed(b) => {
                let mut out = Vec::with_capacity(b.n_embd * b.el_size);
                for j in 0..b.n_embd {
                    let i = (j * n_cells + at.cell) * b.el_size;
                    out.extend_from_slice(&b.data[i..i + b.el_size]);
                }
                out
            }
        })
    }

    /// One cell's K row in one layer as numbers.
    pub fn k_row_f32(&self, layer: usize, r: CellRef) -> Result<Vec<f32>, KvStateError> {
        let at = self.site(layer, r)?;
        let t = self.stream_at(at).k[at.layer].ggml_type;
        let bytes = self.k_row_bytes(layer, r)?;
        let mut out = Vec::new();
        decode_values(t, bytes, &mut out)?;
        Ok(out)
    }

    /// One cell's V values in one layer as numbers.
    pub fn v_row_f32(&self, layer: usize, r: CellRef) -> Result<Vec<f32>, KvStateError> {
        let at = self.site(layer, r)?;
        let t = v_shape(&self.stream_at(at).v[at.layer]).0;
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
        let at = self.site(layer, r)?;
        let b = &mut self.stream_at_mut(at).k[at.layer];
        let row = &mut b.data[at.cell * b.row_size..(at.cell + 1) * b.row_size];
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
        let at = self.site(layer, r)?;
        let s = self.stream_at_mut(at);
        let n_cells = s.cells.len();
        match &mut s.v[at.layer] {
            VBlock::Rows(b) => {
                let row = &mut b.data[at.cell * b.row_size..(at.cell + 1) * b.row_size];
                encode_values(b.ggml_type, values, row)
            }
            VBlock::Transposed(b) => {
                let mut bytes = vec![0u8; b.n_embd * b.el_size];
                encode_values(b.ggml_type, values, &mut bytes)?;
                for j in 0..b.n_embd {
                    let i = (j * n_cells + at.cell) * b.el_size;
                    b.data[i..i + b.el_size]
                        .copy_from_slice(&bytes[j * b.el_size..(j + 1) * b.el_size]);
                }
                Ok(())
            }
        }
    }

    /// Sets one cell's rows to zero in one layer. All-zero bytes are exact zeros for the float
    /// types and for ggml's block quantizations (scale 0). A cell a sliding layer no longer
    /// sees (older than its window) is not in that layer's cache: nothing to do there.
    pub fn zero_cell(
        &mut self,
        layer: usize,
        r: CellRef,
        part: KvPart,
    ) -> Result<(), KvStateError> {
        let at = match self.site(layer, r) {
            Err(KvStateError::OutsideWindow { .. }) => return Ok(()),
            other => other?,
        };
        let s = self.stream_at_mut(at);
        let n_cells = s.cells.len();
        if part.has_k() {
            let b = &mut s.k[at.layer];
            b.data[at.cell * b.row_size..(at.cell + 1) * b.row_size].fill(0);
        }
        if part.has_v() {
            match &mut s.v[at.layer] {
                VBlock::Rows(b) => b.data[at.cell * b.row_size..(at.cell + 1) * b.row_size].fill(0),
                VBlock::Transposed(b) => {
                    for j in 0..b.n_embd {
                        let i = (j * n_cells + at.cell) * b.el_size;
                        b.data[i..i + b.el_size].fill(0);
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies one cell's rows in one layer from `donor` (same model, same cache types). As with
    /// [`zero_cell`](Self::zero_cell), a cell outside a sliding layer's window is left alone.
    pub fn copy_cell_from(
        &mut self,
        donor: &SeqState,
        layer: usize,
        dst: CellRef,
        src: CellRef,
        part: KvPart,
    ) -> Result<(), KvStateError> {
        let (to, from) = match (self.site(layer, dst), donor.site(layer, src)) {
            (Err(KvStateError::OutsideWindow { .. }), _) => return Ok(()),
            (to, from) => (to?, from?),
        };
        if part.has_k() {
            let src_k = &donor.stream_at(from).k[from.layer];
            let dst_k = &self.stream_at(to).k[to.layer];
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
            let b = &mut self.stream_at_mut(to).k[to.layer];
            b.data[to.cell * b.row_size..(to.cell + 1) * b.row_size].copy_from_slice(&row);
        }
        if part.has_v() {
            let (src_t, src_len) = v_shape(&donor.stream_at(from).v[from.layer]);
            let (dst_t, dst_len) = v_shape(&self.stream_at(to).v[to.layer]);
            if src_t != dst_t || src_len != dst_len {
                return Err(KvStateError::Mismatch(format!(
                    "layer {layer} V is {} in one and {} in the other",
                    ggml_type_name(dst_t),
                    ggml_type_name(src_t)
                )));
            }
            let row = donor.v_row_bytes(layer, src)?;
            let s = self.stream_at_mut(to);
            let n_cells = s.cells.len();
            match &mut s.v[to.layer] {
                VBlock::Rows(b) => {
                    b.data[to.cell * b.row_size..(to.cell + 1) * b.row_size].copy_from_slice(&row)
                }
                VBlock::Transposed(b) => {
                    for j in 0..b.n_embd {
                        let i = (j * n_cells + to.cell) * b.el_size;
                        b.data[i..i + b.el_size]
                            .copy_from_slice(&row[j * b.el_size..(j + 1) * b.el_size]);
                    }
                }
            }
        }
        Ok(())
    }
}

impl SeqState {
    /// Takes the cells holding positions `p0..p1` out of every stream of both caches, as
    /// llama.cpp's `seq_rm` takes them out of a sequence: the state then holds exactly what
    /// llama.cpp writes for the sequence after the removal, and restores to the same cache with
    /// its cells contiguous (no hole where the removed ones were, so later tokens are laid out
    /// as in any other restored cache).
    pub fn remove_positions(&mut self, p0: i32, p1: i32) {
        self.retain_positions(|pos| pos < p0 || pos >= p1);
    }

    /// Keeps only the cells whose position `keep` accepts, with their rows, in their order
    /// (a state of some of a sequence's cells, e.g. the edited ones a shared lab restores).
    pub fn retain_positions(&mut self, keep: impl Fn(i32) -> bool) {
        let swa = self.swa.iter_mut().flat_map(|w| w.streams.iter_mut());
        for slot in self.streams.iter_mut().chain(swa) {
            if let Some(stream) = slot {
                stream.retain_cells(|c| keep(c.pos));
                if stream.cells.is_empty() {
                    // llama.cpp writes an empty stream as its cell count alone.
                    *slot = None;
                }
            }
        }
    }
}

impl SeqState {
    /// A new state of the cells whose position `keep` accepts, with their rows, in their
    /// order: [`retain_positions`](Self::retain_positions) on a copy, except that only the kept
    /// rows are ever copied (a needle's cells are kilobytes of a 2k-token Llama 3.1 8B state's
    /// 254 MiB).
    pub fn with_positions(&self, keep: impl Fn(i32) -> bool) -> SeqState {
        let pick = |streams: &[Option<Stream>]| -> Vec<Option<Stream>> {
            (streams.iter())
                .map(|slot| {
                    let kept = slot.as_ref()?.with_cells(|c| keep(c.pos));
                    // llama.cpp writes an empty stream as its cell count alone.
                    (!kept.cells.is_empty()).then_some(kept)
                })
                .collect()
        };
        SeqState {
            seq_id: self.seq_id,
            streams: pick(&self.streams),
            swa: self.swa.as_ref().map(|w| SwaPart {
                streams: pick(&w.streams),
                split: w.split.clone(),
            }),
        }
    }

    /// Writes every row of `src`'s cells over this state's cells at the same positions, in
    /// every layer, K and V: `src` is a state of some of this one's positions (from
    /// [`with_positions`](Self::with_positions), edited or not). Cells at one position pair up
    /// in order. Only rows are written: cells, their order and their metadata stay as they are.
    pub fn overwrite_positions_from(&mut self, src: &SeqState) -> Result<(), KvStateError> {
        let n_layer = self.n_layer();
        if src.n_layer() != n_layer {
            return Err(KvStateError::Mismatch(format!(
                "{} layers here and {} in the source",
                n_layer,
                src.n_layer()
            )));
        }
        for pos in src.positions() {
            let (to, from) = (self.cells_at(pos), src.cells_at(pos));
            if to.len() != from.len() {
                return Err(KvStateError::Mismatch(format!(
                    "position {pos} has {} cells here and {} in the source",
                    to.len(),
                    from.len()
                )));
            }
            for (&dst, &cell) in to.iter().zip(&from) {
                for layer in 0..n_layer {
                    self.copy_cell_from(src, layer, dst, cell, KvPart::Both)?;
                }
            }
        }
        Ok(())
    }
}

impl Stream {
    /// A copy of the cells `keep` accepts, with their rows, in their order.
    fn with_cells(&self, keep: impl Fn(&CellMeta) -> bool) -> Stream {
        let n = self.cells.len();
        let kept: Vec<usize> = (0..n).filter(|&i| keep(&self.cells[i])).collect();
        let rows = |data: &[u8], size: usize| -> Vec<u8> {
            let mut out = Vec::with_capacity(kept.len() * size);
            for &i in &kept {
                out.extend_from_slice(&data[i * size..(i + 1) * size]);
            }
            out
        };
        let k = (self.k.iter())
            .map(|b| RowBlock {
                data: rows(&b.data, b.row_size),
                ..*b
            })
            .collect();
        let v = (self.v.iter())
            .map(|v| match v {
                VBlock::Rows(b) => VBlock::Rows(RowBlock {
                    data: rows(&b.data, b.row_size),
                    ..*b
                }),
                VBlock::Transposed(b) => {
                    let mut data = Vec::with_capacity(b.n_embd * kept.len() * b.el_size);
                    for j in 0..b.n_embd {
                        for &i in &kept {
                            let at = (j * n + i) * b.el_size;
                            data.extend_from_slice(&b.data[at..at + b.el_size]);
                        }
                    }
                    VBlock::Transposed(TransposedBlock { data, ..*b })
                }
            })
            .collect();
        Stream {
            cells: kept.iter().map(|&i| self.cells[i].clone()).collect(),
            v_trans: self.v_trans,
            n_rot_k: self.n_rot_k,
            n_rot_v: self.n_rot_v,
            k,
            v,
        }
    }

    /// Keeps the cells `keep` accepts, with their rows, in their order.
    fn retain_cells(&mut self, keep: impl Fn(&CellMeta) -> bool) {
        if !self.cells.iter().all(&keep) {
            *self = self.with_cells(keep);
        }
    }
}

/// (type, bytes per cell) of a V block.
fn v_shape(v: &VBlock) -> (i32, usize) {
    match v {
        VBlock::Rows(b) => (b.ggml_type, b.row_size),
        VBlock::Transposed(b) => (b.ggml_type, b.el_size * b.n_embd),
    }
}
