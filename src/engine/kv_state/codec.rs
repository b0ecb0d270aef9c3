//! Parsing and serializing llama.cpp's sequence-state bytes. The parser refuses rather than
//! guesses: counts are checked against the bytes left before anything is allocated, and the
//! serializer writes exactly what was parsed, so `serialize(parse(b)) == b`.

use super::values::{element_size, ggml_type_name};
use super::{
    CellMeta, KvStateError, LayoutHints, RowBlock, SEQ_STATE_MAGIC, SeqState, Stream, SwaPart,
    SwaSplit, TransposedBlock, VBlock,
};

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

/// Largest ggml type id kvlab accepts (GGML_TYPE_COUNT in the pinned llama.cpp is below this).
const MAX_GGML_TYPE: i32 = 64;
impl SeqState {
    /// Parses the bytes of `llama_state_seq_get_data` for the plain `llama_kv_cache`, or for
    /// the iSWA cache (two caches, one after the other) when `hints.swa` says which layers
    /// slide.
    ///
    /// Refuses (never panics on) anything else: other magic, truncation, implausible counts,
    /// unknown types and trailing bytes from memory modules kvlab does not know.
    pub fn parse(bytes: &[u8], hints: LayoutHints) -> Result<SeqState, KvStateError> {
        Ok(Layout::scan(bytes, &hints)?.state(bytes, |_| true))
    }

    /// [`parse`](Self::parse) then [`with_positions`](Self::with_positions), copying only the
    /// kept cells' rows out of `bytes` (a needle's cells are kilobytes of a 2k-token Llama 3.1
    /// 8B state's 254 MiB, and the whole state is never parsed).
    pub fn parse_positions(
        bytes: &[u8],
        hints: LayoutHints,
        keep: impl Fn(i32) -> bool,
    ) -> Result<SeqState, KvStateError> {
        Ok(Layout::scan(bytes, &hints)?.state(bytes, keep))
    }

    /// Writes the state back in llama.cpp's layout. `parse(serialize(s)) == s`, and for bytes
    /// that parsed, `serialize(parse(b)) == b`.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len_hint());
        out.extend_from_slice(&SEQ_STATE_MAGIC.to_le_bytes());
        out.extend_from_slice(&self.seq_id.to_le_bytes());
        write_cache(&mut out, &self.streams);
        if let Some(swa) = &self.swa {
            write_cache(&mut out, &swa.streams);
        }
        out
    }

    fn byte_len_hint(&self) -> usize {
        let swa = self.swa.iter().flat_map(|p| p.streams.iter());
        self.streams
            .iter()
            .chain(swa)
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
}

/// An iSWA state's caches must hold as many layers as the split gives each (a wrong split
/// would edit the wrong layers).
fn check_layer_counts(
    base: &[StreamAt],
    swa: &[StreamAt],
    split: &SwaSplit,
) -> Result<(), KvStateError> {
    let count = |streams: &[StreamAt]| {
        (streams.iter())
            .find(|s| !s.cells.is_empty())
            .map(|s| s.k.len())
    };
    for (what, streams, expected) in [
        ("full-attention", base, split.base_layers().len()),
        ("sliding-window", swa, split.swa_layers().len()),
    ] {
        if let Some(n) = count(streams)
            && n != expected
        {
            return Err(KvStateError::Malformed(format!(
                "the {what} cache holds {n} layers where the model's layer pattern gives it {expected}"
            )));
        }
    }
    Ok(())
}

/// Writes one cache's part of a state, as [`parse_cache`] reads it.
fn write_cache(out: &mut Vec<u8>, streams: &[Option<Stream>]) {
    out.extend_from_slice(&(streams.len() as u32).to_le_bytes());
    for stream in streams {
        let Some(s) = stream else {
            out.extend_from_slice(&0u32.to_le_bytes());
            continue;
        };
        write_stream(out, s);
    }
}

/// One non-empty stream: cells, data header, K blocks, V blocks.
fn write_stream(out: &mut Vec<u8>, s: &Stream) {
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

fn check_type(t: i32) -> Result<(), KvStateError> {
    if !(0..MAX_GGML_TYPE).contains(&t) {
        return Err(KvStateError::Malformed(format!("unknown ggml type id {t}")));
    }
    Ok(())
}

/// One cell's metadata: position, sequence count, the M-RoPE extension if any, sequence ids.
fn parse_cell(r: &mut Reader<'_>, hints: &LayoutHints) -> Result<CellMeta, KvStateError> {
    let pos = r.i32()?;
    let n_seq_id = r.count("n_seq_id", 4)?;
    let ext = if hints.cell_ext {
        Some([r.i32()?, r.i32()?, r.i32()?])
    } else {
        None
    };
    let seq_ids = (0..n_seq_id)
        .map(|_| r.i32())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CellMeta { pos, ext, seq_ids })
}

/// One layer's row-per-cell block (K, or V when not transposed): type, row size, rows.
fn scan_rows(r: &mut Reader<'_>, what: &str, cell_count: usize) -> Result<BlockAt, KvStateError> {
    let header_at = r.offset;
    let ggml_type = r.i32()?;
    check_type(ggml_type)?;
    let row_size = usize::try_from(r.u64()?)
        .map_err(|_| KvStateError::Malformed(format!("{what} row size overflows")))?;
    if row_size == 0 {
        return Err(KvStateError::Malformed(format!("{what} row size is 0")));
    }
    let len = row_size
        .checked_mul(cell_count)
        .ok_or_else(|| KvStateError::Malformed(format!("{what} block size overflows")))?;
    let data_at = r.offset;
    r.take(len)?;
    Ok(BlockAt {
        header_at,
        data_at,
        ggml_type,
        shape: BlockShape::Rows { row_size },
    })
}

/// One layer's transposed V block: type, element size, channels, then element-major values.
fn scan_transposed(r: &mut Reader<'_>, cell_count: usize) -> Result<BlockAt, KvStateError> {
    let header_at = r.offset;
    let ggml_type = r.i32()?;
    check_type(ggml_type)?;
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
    let data_at = r.offset;
    r.take(len)?;
    Ok(BlockAt {
        header_at,
        data_at,
        ggml_type,
        shape: BlockShape::Transposed { el_size, n_embd },
    })
}

/// Where each part of a state lies in its bytes: what [`SeqState::parse`] reads, found and
/// checked exactly as it checks it, without copying any row. [`StateBytes`](super::StateBytes)
/// edits rows where they lie through it.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub seq_id: i32,
    /// The plain (or iSWA base) cache, then an iSWA state's sliding-window cache.
    pub caches: Vec<CacheAt>,
    /// Which layers slide, for an iSWA state.
    pub split: Option<SwaSplit>,
}

/// One cache of a [`Layout`].
#[derive(Debug, Clone)]
pub(super) struct CacheAt {
    /// Offset of its stream count.
    pub at: usize,
    pub streams: Vec<StreamAt>,
}

/// One stream of a [`Layout`]; an empty stream (cell count 0) has no cells and no blocks.
#[derive(Debug, Clone)]
pub(super) struct StreamAt {
    /// Its last byte's offset plus one.
    pub end: usize,
    /// Each cell's metadata and the byte range it was read from.
    pub cells: Vec<(CellMeta, std::ops::Range<usize>)>,
    /// Offset of the data header (v_trans, layer count, n_rot_k, n_rot_v: 16 bytes).
    pub header_at: usize,
    pub v_trans: bool,
    pub n_rot_k: u32,
    pub n_rot_v: u32,
    /// K per layer.
    pub k: Vec<BlockAt>,
    /// V per layer.
    pub v: Vec<BlockAt>,
}

/// One layer's block of a [`StreamAt`]: its header's offset and its data's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockAt {
    pub header_at: usize,
    pub data_at: usize,
    pub ggml_type: i32,
    pub shape: BlockShape,
}

/// How a block holds one cell's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockShape {
    /// One row of `row_size` bytes per cell.
    Rows { row_size: usize },
    /// Element-major: element j of cell i at `(j * cell_count + i) * el_size`.
    Transposed { el_size: usize, n_embd: usize },
}

/// The length of a data header: v_trans, layer count, n_rot_k, n_rot_v.
pub(super) const DATA_HEADER_LEN: usize = 16;
/// The length of a block's header (type then a u64 row size, or a u32 element size and a
/// u32 channel count).
pub(super) const BLOCK_HEADER_LEN: usize = 12;

impl Layout {
    /// Finds every part of `bytes`, refusing what [`SeqState::parse`] refuses.
    pub fn scan(bytes: &[u8], hints: &LayoutHints) -> Result<Layout, KvStateError> {
        let mut r = Reader { bytes, offset: 0 };
        let magic = r.u32()?;
        if magic != SEQ_STATE_MAGIC {
            return Err(KvStateError::BadMagic { found: magic });
        }
        let seq_id = r.i32()?;
        let mut caches = vec![scan_cache(&mut r, hints)?];
        if let Some(split) = &hints.swa {
            caches.push(scan_cache(&mut r, hints)?);
            check_layer_counts(&caches[0].streams, &caches[1].streams, split)?;
        }
        if r.remaining() != 0 {
            return Err(KvStateError::TrailingBytes(r.remaining()));
        }
        Ok(Layout {
            seq_id,
            caches,
            split: hints.swa.clone(),
        })
    }

    /// The state of the cells `keep` accepts (all: the whole state), rows copied out of
    /// `bytes` (the bytes this layout was scanned from).
    pub fn state(&self, bytes: &[u8], keep: impl Fn(i32) -> bool) -> SeqState {
        let streams = |all: &[StreamAt]| -> Vec<Option<Stream>> {
            all.iter().map(|s| s.stream(bytes, &keep)).collect()
        };
        SeqState {
            seq_id: self.seq_id,
            streams: streams(&self.caches[0].streams),
            swa: (self.split.as_ref()).map(|split| SwaPart {
                streams: streams(&self.caches[1].streams),
                split: split.clone(),
            }),
        }
    }
}

impl StreamAt {
    /// The stream of the cells `keep` accepts, `None` when it keeps none (llama.cpp writes an
    /// empty stream as its cell count alone).
    fn stream(&self, bytes: &[u8], keep: impl Fn(i32) -> bool) -> Option<Stream> {
        let n = self.cells.len();
        let kept: Vec<usize> = (0..n).filter(|&i| keep(self.cells[i].0.pos)).collect();
        if kept.is_empty() {
            return None;
        }
        let all = kept.len() == n;
        let data = |b: &BlockAt, per_cell: usize| -> Vec<u8> {
            if all {
                return bytes[b.data_at..b.data_at + n * per_cell].to_vec();
            }
            let mut out = Vec::with_capacity(kept.len() * per_cell);
            match b.shape {
                BlockShape::Rows { row_size } => {
                    for &i in &kept {
                        let at = b.data_at + i * row_size;
                        out.extend_from_slice(&bytes[at..at + row_size]);
                    }
                }
                BlockShape::Transposed { el_size, n_embd } => {
                    for j in 0..n_embd {
                        for &i in &kept {
                            let at = b.data_at + (j * n + i) * el_size;
                            out.extend_from_slice(&bytes[at..at + el_size]);
                        }
                    }
                }
            }
            out
        };
        let block = |b: &BlockAt| match b.shape {
            BlockShape::Rows { row_size } => VBlock::Rows(RowBlock {
                ggml_type: b.ggml_type,
                row_size,
                data: data(b, row_size),
            }),
            BlockShape::Transposed { el_size, n_embd } => VBlock::Transposed(TransposedBlock {
                ggml_type: b.ggml_type,
                el_size,
                n_embd,
                data: data(b, el_size * n_embd),
            }),
        };
        let k = (self.k.iter())
            .map(|b| match block(b) {
                VBlock::Rows(rows) => rows,
                VBlock::Transposed(_) => unreachable!("K blocks are scanned as rows"),
            })
            .collect();
        Some(Stream {
            cells: kept.iter().map(|&i| self.cells[i].0.clone()).collect(),
            v_trans: self.v_trans,
            n_rot_k: self.n_rot_k,
            n_rot_v: self.n_rot_v,
            k,
            v: self.v.iter().map(block).collect(),
        })
    }
}

/// One cache's part of a state: its stream count, then each stream.
fn scan_cache(r: &mut Reader<'_>, hints: &LayoutHints) -> Result<CacheAt, KvStateError> {
    let at = r.offset;
    let n_stream = r.count("n_stream", 4)?;
    let mut streams = Vec::with_capacity(n_stream);
    for _ in 0..n_stream {
        let cell_count = r.count("cell_count", 8)?;
        if cell_count == 0 {
            streams.push(StreamAt {
                end: r.offset,
                cells: Vec::new(),
                header_at: r.offset,
                v_trans: false,
                n_rot_k: 0,
                n_rot_v: 0,
                k: Vec::new(),
                v: Vec::new(),
            });
            continue;
        }
        let cells = (0..cell_count)
            .map(|_| {
                let at = r.offset;
                parse_cell(r, hints).map(|c| (c, at..r.offset))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let header_at = r.offset;
        let v_trans = match r.u32()? {
            0 => false,
            1 => true,
            other => return Err(KvStateError::Malformed(format!("v_trans = {other}"))),
        };
        let n_layer = r.count("n_layer", 12)?;
        let n_rot_k = r.u32()?;
        let n_rot_v = r.u32()?;
        let k = (0..n_layer)
            .map(|_| scan_rows(r, "K", cell_count))
            .collect::<Result<Vec<_>, _>>()?;
        let v = (0..n_layer)
            .map(|_| {
                if v_trans {
                    scan_transposed(r, cell_count)
                } else {
                    scan_rows(r, "V", cell_count)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        streams.push(StreamAt {
            end: r.offset,
            cells,
            header_at,
            v_trans,
            n_rot_k,
            n_rot_v,
            k,
            v,
        });
    }
    Ok(CacheAt { at, streams })
}
