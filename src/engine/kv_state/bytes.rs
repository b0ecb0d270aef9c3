//! A sequence state kept as the bytes llama.cpp wrote, edited where its rows lie.
//!
//! A [`SeqState`] copies every row out of the bytes; at Llama 3.1 8B's cache shape that is
//! 254 MiB per 2k-token sequence, held beside the bytes it came from and the bytes it
//! serializes to. Making a grid condition needs none of that: its starting cache is its
//! prompt's bytes with a few cells' rows replaced (or a few cells taken out), so
//! [`StateBytes`] scans the bytes once ([`Layout`]: offsets only, checked as
//! [`SeqState::parse`] checks) and writes the replacement rows straight into them. The only
//! copy of the state in host memory is then the one llama.cpp reads back.

use std::collections::HashMap;

use super::codec::{BLOCK_HEADER_LEN, BlockAt, BlockShape, DATA_HEADER_LEN, Layout, StreamAt};
use super::{KvStateError, LayoutHints, SeqState, Stream, VBlock};

/// A sequence state's bytes, scanned: well-formed by construction (they parsed, and every
/// edit here keeps them so), so they can go back to llama.cpp without being parsed again.
#[derive(Debug, Clone)]
pub struct StateBytes {
    bytes: Vec<u8>,
    layout: Layout,
    hints: LayoutHints,
}

impl StateBytes {
    /// Scans `bytes`, refusing what [`SeqState::parse`] refuses.
    pub fn new(bytes: Vec<u8>, hints: LayoutHints) -> Result<StateBytes, KvStateError> {
        let layout = Layout::scan(&bytes, &hints)?;
        Ok(StateBytes {
            bytes,
            layout,
            hints,
        })
    }

    /// The bytes, as llama.cpp reads them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The positions held (the plain or full-attention cache's cells), sorted, without
    /// repeats: [`SeqState::positions`] without parsing.
    pub fn positions(&self) -> Vec<i32> {
        let mut p: Vec<i32> = (self.layout.caches[0].streams.iter())
            .flat_map(|s| s.cells.iter().map(|(c, _)| c.pos))
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// The whole state, parsed.
    pub fn to_state(&self) -> SeqState {
        self.layout.state(&self.bytes, |_| true)
    }

    /// The state of the cells whose position `keep` accepts: `to_state().with_positions(keep)`,
    /// copying only the kept rows.
    pub fn part(&self, keep: impl Fn(i32) -> bool) -> SeqState {
        self.layout.state(&self.bytes, keep)
    }

    /// Writes every row of `part`'s cells over the cells at the same positions, in every
    /// layer, K and V: `part` is a [`part`](Self::part) of these bytes, edited or not (its
    /// streams are these streams, its cells some of theirs). Equal to
    /// `to_state().overwrite_positions_from(part)` serialized. Everything is checked before
    /// the first byte is written, so a refused part leaves the bytes as they were.
    pub fn write_part(&mut self, part: &SeqState) -> Result<(), KvStateError> {
        let empty = Vec::new();
        let part_caches = [
            &part.streams,
            part.swa.as_ref().map_or(&empty, |w| &w.streams),
        ];
        if part.swa.is_some() != self.layout.split.is_some() {
            return Err(KvStateError::Mismatch(
                "one state has a sliding-window cache and the other not".into(),
            ));
        }
        let mut writes = Vec::new();
        for (cache, streams) in self.layout.caches.iter().zip(part_caches) {
            for (si, slot) in streams.iter().enumerate() {
                let Some(src) = slot else { continue };
                let dst = cache.streams.get(si).filter(|s| !s.cells.is_empty());
                let Some(dst) = dst else {
                    return Err(KvStateError::Mismatch(format!(
                        "stream {si} holds cells in the part but none here"
                    )));
                };
                writes.push((dst, src, pair_cells(dst, src, si)?));
            }
        }
        for (dst, src, pairs) in writes {
            write_rows(&mut self.bytes, dst, src, &pairs);
        }
        Ok(())
    }

    /// Takes the cells holding positions `p0..p1` out, in place: the bytes become those of
    /// `to_state()` after [`SeqState::remove_positions`], serialized (what llama.cpp writes for
    /// the sequence after `seq_rm`, with the remaining cells contiguous).
    pub fn remove_positions(&mut self, p0: i32, p1: i32) -> Result<(), KvStateError> {
        let keep = |pos: i32| pos < p0 || pos >= p1;
        let mut w = Compactor {
            bytes: &mut self.bytes,
            w: 0,
        };
        // Magic and sequence id.
        w.keep(0..8);
        for cache in &self.layout.caches {
            w.keep(cache.at..cache.at + 4);
            for s in &cache.streams {
                let kept: Vec<usize> = (0..s.cells.len())
                    .filter(|&i| keep(s.cells[i].0.pos))
                    .collect();
                if kept.is_empty() {
                    // llama.cpp writes an empty stream as its cell count alone.
                    w.put_u32(0);
                    continue;
                }
                w.put_u32(kept.len() as u32);
                for &i in &kept {
                    w.keep(s.cells[i].1.clone());
                }
                w.keep(s.header_at..s.header_at + DATA_HEADER_LEN);
                let runs = runs(&kept);
                let n = s.cells.len();
                for b in s.k.iter().chain(&s.v) {
                    w.keep(b.header_at..b.header_at + BLOCK_HEADER_LEN);
                    match b.shape {
                        BlockShape::Rows { row_size } => {
                            for &(i0, i1) in &runs {
                                w.keep(b.data_at + i0 * row_size..b.data_at + i1 * row_size);
                            }
                        }
                        BlockShape::Transposed { el_size, n_embd } => {
                            for j in 0..n_embd {
                                for &(i0, i1) in &runs {
                                    let row = b.data_at + j * n * el_size;
                                    w.keep(row + i0 * el_size..row + i1 * el_size);
                                }
                            }
                        }
                    }
                }
                debug_assert!(s.end >= w.w);
            }
        }
        let len = w.w;
        self.bytes.truncate(len);
        self.layout = Layout::scan(&self.bytes, &self.hints).map_err(|e| {
            KvStateError::Malformed(format!("removing cells made an unreadable state: {e}"))
        })?;
        Ok(())
    }
}

/// Rewrites a buffer front to back, keeping some of its ranges: every kept range starts at or
/// after the write position, so nothing is overwritten before it is read.
struct Compactor<'a> {
    bytes: &'a mut Vec<u8>,
    w: usize,
}

impl Compactor<'_> {
    fn keep(&mut self, range: std::ops::Range<usize>) {
        debug_assert!(range.start >= self.w);
        let len = range.len();
        self.bytes.copy_within(range, self.w);
        self.w += len;
    }

    /// Writes a count where a count (or more) was read.
    fn put_u32(&mut self, x: u32) {
        self.bytes[self.w..self.w + 4].copy_from_slice(&x.to_le_bytes());
        self.w += 4;
    }
}

/// Sorted indices as half-open runs of consecutive ones.
fn runs(indices: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &i in indices {
        match out.last_mut() {
            Some((_, end)) if *end == i => *end += 1,
            _ => out.push((i, i + 1)),
        }
    }
    out
}

/// For each cell of `src` (in order), the cell of `dst` it is written over: the k-th cell at
/// a position pairs with the k-th there. Refuses blocks of another shape.
fn pair_cells(dst: &StreamAt, src: &Stream, si: usize) -> Result<Vec<usize>, KvStateError> {
    if dst.k.len() != src.k.len() || dst.v_trans != src.v_trans {
        return Err(KvStateError::Mismatch(format!(
            "stream {si} has {} layers (V transposed: {}) here and {} ({}) in the part",
            dst.k.len(),
            dst.v_trans,
            src.k.len(),
            src.v_trans
        )));
    }
    for (layer, (d, s)) in dst.k.iter().zip(&src.k).enumerate() {
        let shape = BlockShape::Rows {
            row_size: s.row_size,
        };
        if d.ggml_type != s.ggml_type || d.shape != shape {
            return Err(shape_mismatch("K", layer));
        }
    }
    for (layer, (d, s)) in dst.v.iter().zip(&src.v).enumerate() {
        let (t, shape) = match s {
            VBlock::Rows(b) => (
                b.ggml_type,
                BlockShape::Rows {
                    row_size: b.row_size,
                },
            ),
            VBlock::Transposed(b) => (
                b.ggml_type,
                BlockShape::Transposed {
                    el_size: b.el_size,
                    n_embd: b.n_embd,
                },
            ),
        };
        if d.ggml_type != t || d.shape != shape {
            return Err(shape_mismatch("V", layer));
        }
    }
    let mut at: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, (c, _)) in dst.cells.iter().enumerate() {
        at.entry(c.pos).or_default().push(i);
    }
    let mut used: HashMap<i32, usize> = HashMap::new();
    (src.cells.iter())
        .map(|c| {
            let k = used.entry(c.pos).or_default();
            let cell = at.get(&c.pos).and_then(|cells| cells.get(*k)).copied();
            *k += 1;
            cell.ok_or_else(|| {
                KvStateError::Mismatch(format!(
                    "position {} has more cells in the part than in stream {si} here",
                    c.pos
                ))
            })
        })
        .collect()
}

fn shape_mismatch(half: &str, layer: usize) -> KvStateError {
    KvStateError::Mismatch(format!(
        "cache layer {layer} {half} has another type or row size in the part"
    ))
}

/// Writes `src`'s rows over `dst`'s cells `pairs` (checked by [`pair_cells`]).
fn write_rows(bytes: &mut [u8], dst: &StreamAt, src: &Stream, pairs: &[usize]) {
    let n_dst = dst.cells.len();
    let n_src = src.cells.len();
    let rows = |bytes: &mut [u8], b: &BlockAt, data: &[u8]| match b.shape {
        BlockShape::Rows { row_size } => {
            for (i, &to) in pairs.iter().enumerate() {
                let at = b.data_at + to * row_size;
                bytes[at..at + row_size].copy_from_slice(&data[i * row_size..(i + 1) * row_size]);
            }
        }
        BlockShape::Transposed { el_size, n_embd } => {
            for j in 0..n_embd {
                for (i, &to) in pairs.iter().enumerate() {
                    let at = b.data_at + (j * n_dst + to) * el_size;
                    let from = (j * n_src + i) * el_size;
                    bytes[at..at + el_size].copy_from_slice(&data[from..from + el_size]);
                }
            }
        }
    };
    for (b, k) in dst.k.iter().zip(&src.k) {
        rows(bytes, b, &k.data);
    }
    for (b, v) in dst.v.iter().zip(&src.v) {
        match v {
            VBlock::Rows(r) => rows(bytes, b, &r.data),
            VBlock::Transposed(t) => rows(bytes, b, &t.data),
        }
    }
}
