//! One inference context for an experiment: several sequences, one KV stream each, or one
//! stream they all share.
//!
//! With `kv_unified = false` (the default, [`Lab::new`]) every sequence gets its own stream, so a
//! sequence restored from state bytes has the same cell layout as the one it was copied from,
//! and an unmodified copy reproduces the original token for token (a unified cache changes the
//! floating-point reduction order and small models flip on near-ties; see
//! `docs/llama-cpp-state.md`). Copying a sequence then copies its whole stream.
//!
//! A shared lab ([`Lab::shared`], llama.cpp's unified cache) puts every sequence in one stream:
//! [`Lab::share`] makes a sequence see another's cells without copying anything (llama.cpp only
//! tags the cells), and restoring a small state into a sequence writes just its cells. That is
//! what lets a sweep item at Llama-8B scale cost its tokens and not its cache.

use std::num::NonZeroU32;

use llama_cpp_2::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use std::collections::HashMap;
use std::sync::Arc;

use super::attention::assemble::{self, Rows};
use super::attention::hook::{self, Hook};
use super::attention::{AttentionCapture, CaptureRequest};
use super::cache_type::CacheTypes;
use super::kv_state::{LayoutHints, SeqState, StateBytes};
use super::{EngineError, LoadedModel, backend, log};

/// The shape of a [`Lab`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabOptions {
    /// Sequences (one KV stream each).
    pub n_seq: u32,
    /// Cells per sequence (rounded up to 256 by llama.cpp).
    pub n_ctx_per_seq: u32,
    /// CPU threads.
    pub threads: i32,
    /// Most tokens evaluated per llama.cpp call.
    pub n_batch: u32,
    /// The K and V caches' number types.
    pub cache: CacheTypes,
}

/// A token to evaluate: which sequence, at which position, and whether its logits are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchItem {
    /// The sequence.
    pub seq: i32,
    /// The token id.
    pub token: i32,
    /// Its position.
    pub pos: i32,
    /// Whether to return the logits after this token.
    pub logits: bool,
}

impl BatchItem {
    /// `tokens` into sequence `seq` at consecutive positions from `first`, no logits wanted.
    pub fn run(seq: i32, first: i32, tokens: &[i32]) -> Vec<BatchItem> {
        (tokens.iter().zip(first..))
            .map(|(&token, pos)| BatchItem {
                seq,
                token,
                pos,
                logits: false,
            })
            .collect()
    }
}

/// An inference context over a loaded model.
pub struct Lab<'m> {
    model: &'m LoadedModel,
    ctx: LlamaContext<'m>,
    options: LabOptions,
    hints: LayoutHints,
    /// The attention-capture hook the context's graph callback points to; declared after `ctx`
    /// so the context is dropped first.
    hook: Option<Arc<Hook>>,
    /// Per sequence, the cell → position map of its last capture, while nothing else changed it.
    cell_maps: HashMap<i32, Vec<Option<i32>>>,
    /// Whether all sequences share one KV stream ([`Lab::shared`]).
    shared: bool,
}

impl<'m> Lab<'m> {
    /// Creates a context with `options.n_seq` independent sequences.
    pub fn new(model: &'m LoadedModel, options: LabOptions) -> Result<Lab<'m>, EngineError> {
        Self::open(model, options, false)
    }

    /// Creates a context whose `options.n_seq` sequences share one KV stream of
    /// `options.n_ctx_per_seq` cells in all (llama.cpp's unified cache; the name keeps its
    /// meaning per stream: here there is one). See [`Lab::share`].
    pub fn shared(model: &'m LoadedModel, options: LabOptions) -> Result<Lab<'m>, EngineError> {
        model.check_kv_surgery_supported()?;
        Self::open_layout(model, options, false, true)
    }

    /// Like [`Lab::new`], with attention capture ([`Lab::eval_capturing`]) available: flash
    /// attention is off and llama.cpp calls back for every graph node (see [`attention`]).
    pub fn with_attention_capture(
        model: &'m LoadedModel,
        options: LabOptions,
    ) -> Result<Lab<'m>, EngineError> {
        Self::open(model, options, true)
    }

    fn open(
        model: &'m LoadedModel,
        options: LabOptions,
        capture: bool,
    ) -> Result<Lab<'m>, EngineError> {
        model.check_kv_surgery_supported()?;
        if capture && options.cache.v.is_quantized() {
            return Err(EngineError::Capture(format!(
                "attention capture needs flash attention off, and llama.cpp stores a quantized \
                 V cache ({}) only with flash attention: use an f16 or f32 V cache",
                options.cache.v
            )));
        }
        Self::open_unchecked(model, options, capture)
    }

    fn open_unchecked(
        model: &'m LoadedModel,
        options: LabOptions,
        capture: bool,
    ) -> Result<Lab<'m>, EngineError> {
        Self::open_layout(model, options, capture, false)
    }

    /// Evaluates one token in a small context of `model` and reads the state llama.cpp writes
    /// for it: an error when it does not parse as the cache layout kvlab expects for the model
    /// (see `LoadedModel::judge_kv_surgery`).
    pub(crate) fn probe_layout(model: &LoadedModel) -> Result<(), EngineError> {
        let options = LabOptions {
            n_seq: 1,
            n_ctx_per_seq: 256,
            threads: 1,
            n_batch: 8,
            cache: Default::default(),
        };
        let mut lab = Lab::open_unchecked(model, options, false)?;
        let item = BatchItem {
            seq: 0,
            token: 0,
            pos: 0,
            logits: false,
        };
        lab.eval(&[item], |_, _| {})?;
        lab.state(0).map(|_| ())
    }

    fn open_layout(
        model: &'m LoadedModel,
        options: LabOptions,
        capture: bool,
        shared: bool,
    ) -> Result<Lab<'m>, EngineError> {
        let n_ctx_per_seq = options.n_ctx_per_seq.div_ceil(256) * 256;
        let n_ctx = n_ctx_per_seq
            .checked_mul(if shared { 1 } else { options.n_seq })
            .ok_or_else(|| EngineError::ContextFailed {
                detail: "context size overflows".into(),
            })?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(options.n_batch)
            .with_n_ubatch(options.n_batch)
            .with_n_seq_max(options.n_seq)
            .with_kv_unified(shared)
            // A sliding-window cache of full size keeps every prompt cell until the window
            // passes it (a smaller one may reuse cells still needed for surgery).
            .with_swa_full(true)
            .with_type_k(options.cache.k.to_llama())
            .with_type_v(options.cache.v.to_llama())
            .with_n_threads(options.threads)
            .with_n_threads_batch(options.threads);
        // llama.cpp stores a quantized V cache only with flash attention.
        let params = if options.cache.v.is_quantized() {
            params.with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED)
        } else {
            params
        };
        let hook = capture.then(|| Arc::new(Hook::default()));
        let params = match &hook {
            Some(h) => hook::capture_params(params, h),
            None => params,
        };
        log::clear_recent();
        let ctx = model.model.new_context(backend()?, params).map_err(|e| {
            EngineError::ContextFailed {
                detail: {
                    let recent = log::recent();
                    if recent.is_empty() {
                        e.to_string()
                    } else {
                        recent.join("; ")
                    }
                },
            }
        })?;
        Ok(Lab {
            model,
            ctx,
            options: LabOptions {
                n_ctx_per_seq,
                ..options
            },
            hints: LayoutHints {
                cell_ext: model.cells_have_ext(),
                swa: model.sliding_layers().map_err(EngineError::Unsupported)?,
            },
            hook,
            cell_maps: HashMap::new(),
            shared,
        })
    }

    /// The options in force (cells per sequence after rounding).
    pub fn options(&self) -> LabOptions {
        self.options
    }

    /// The model this lab runs.
    pub fn model(&self) -> &'m LoadedModel {
        self.model
    }

    /// Evaluates tokens, `n_batch` at a time, handing the logits of every item that asked for
    /// them to `on_logits(item_index, logits)`. Items of one sequence must come in position order.
    pub fn eval(
        &mut self,
        items: &[BatchItem],
        on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<(), EngineError> {
        if !self.cell_maps.is_empty() {
            for it in items {
                self.cell_maps.remove(&it.seq);
            }
        }
        self.decode(items, on_logits)
    }

    /// [`Lab::eval`] without forgetting cell maps.
    fn decode(
        &mut self,
        items: &[BatchItem],
        mut on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<(), EngineError> {
        let n_batch = self.options.n_batch.max(1) as usize;
        let mut batch = LlamaBatch::new(n_batch, 1);
        for (c, chunk) in items.chunks(n_batch).enumerate() {
            batch.clear();
            for it in chunk {
                batch
                    .add(LlamaToken(it.token), it.pos, &[it.seq], it.logits)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
            }
            self.ctx
                .decode(&mut batch)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
            for (i, it) in chunk.iter().enumerate() {
                if it.logits {
                    on_logits(c * n_batch + i, self.ctx.get_logits_ith(i as i32));
                }
            }
        }
        Ok(())
    }

    /// Evaluates `items` like [`Lab::eval`] and returns the attention the items `request.rows`
    /// paid to the cache's cells, per layer and query head. The items must belong to one sequence
    /// and fit in one batch (`n_batch`); the lab must come from [`Lab::with_attention_capture`].
    pub fn eval_capturing(
        &mut self,
        items: &[BatchItem],
        request: &CaptureRequest,
        on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<AttentionCapture, EngineError> {
        if items.iter().any(|i| i.seq != items[0].seq) {
            return Err(EngineError::Capture(
                "eval_capturing takes one sequence; use eval_capturing_seqs for several".into(),
            ));
        }
        let mut caps = self.eval_capturing_seqs(items, request, on_logits)?;
        Ok(caps.remove(0))
    }

    /// Like [`Lab::eval_capturing`] for a batch of several sequences that llama.cpp evaluates as
    /// one ubatch: items grouped by sequence, sequence ids consecutive and ascending, the same
    /// number of items for each, at most `n_batch` in all (see [`super::attention`]). Returns one
    /// capture per sequence, in the batch's order, each with its rows of `request.rows`.
    pub fn eval_capturing_seqs(
        &mut self,
        items: &[BatchItem],
        request: &CaptureRequest,
        on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<Vec<AttentionCapture>, EngineError> {
        let hook = self.hook.clone().ok_or_else(|| {
            EngineError::Capture("this lab was not opened with Lab::with_attention_capture".into())
        })?;
        let groups =
            one_ubatch(items, self.options.n_batch as usize).map_err(EngineError::Capture)?;
        if let Some(&r) = request.rows.iter().find(|&&r| r >= items.len()) {
            return Err(EngineError::Capture(format!(
                "row {r} is not one of the {} evaluated items",
                items.len()
            )));
        }
        let per = items.len() / groups.len();
        // Each sequence's last item is always copied: its mask maps cells to positions.
        let mut armed: Vec<usize> = request.rows.clone();
        armed.extend(groups.iter().map(|&(_, start)| start + per - 1));
        armed.sort_unstable();
        armed.dedup();
        let ubatch_rows = armed.iter().map(|&i| (i / per, i % per)).collect();
        hook.arm(
            ubatch_rows,
            groups.len(),
            per,
            self.n_kv_layer(),
            request.focus_scores,
        );
        let evaluated = self.decode(items, on_logits);
        let raw = hook.disarm();
        evaluated?;
        let rows = Rows::new(raw.map_err(EngineError::Capture)?).map_err(EngineError::Capture)?;
        let pos: Vec<i32> = items.iter().map(|i| i.pos).collect();
        let mut out = Vec::with_capacity(groups.len());
        for &(seq, start) in &groups {
            let last = start + per - 1;
            let seen = rows.visible(armed.iter().position(|&a| a == last).expect("armed"));
            let known = (per == 1)
                .then(|| self.cell_maps.get(&seq))
                .flatten()
                .and_then(|prev| assemble::extend_map(prev, &seen, pos[last]));
            let cell_pos = match known {
                Some(map) => map,
                None => {
                    let cells: Vec<i32> = self.state(seq)?.cells().map(|(_, c)| c.pos).collect();
                    assemble::map_cells(&seen, pos[last], &cells).map_err(EngineError::Capture)?
                }
            };
            self.cell_maps.insert(seq, cell_pos.clone());
            let mine: Vec<(usize, usize)> = request
                .rows
                .iter()
                .filter(|&&r| (start..start + per).contains(&r))
                .map(|&r| (r, armed.iter().position(|&a| a == r).expect("armed")))
                .collect();
            out.push(rows.capture(seq, request, &mine, &pos, cell_pos));
        }
        Ok(out)
    }

    /// The raw state bytes of a sequence (host memory, whatever device holds the cache).
    pub fn state_bytes(&self, seq: i32) -> Result<Vec<u8>, EngineError> {
        let flags = LlamaStateSeqFlags::empty();
        let size = self.ctx.state_seq_get_size_ext(seq, flags);
        let mut buf = vec![0u8; size];
        // SAFETY: the buffer has the size llama.cpp asked for.
        let n = unsafe {
            self.ctx
                .state_seq_get_data_ext(buf.as_mut_ptr(), seq, flags)
        };
        if n != size || size == 0 {
            return Err(EngineError::State {
                seq,
                detail: format!("llama.cpp wrote {n} of {size} bytes"),
            });
        }
        Ok(buf)
    }

    /// The parsed state of a sequence.
    pub fn state(&self, seq: i32) -> Result<SeqState, EngineError> {
        Ok(SeqState::parse(
            &self.state_bytes(seq)?,
            self.hints.clone(),
        )?)
    }

    /// The state of a sequence as llama.cpp wrote it, scanned but not parsed: its rows can be
    /// read out and written over where they lie (see [`StateBytes`]), with no second copy of
    /// the whole state in host memory.
    pub fn scanned_state(&self, seq: i32) -> Result<StateBytes, EngineError> {
        Ok(StateBytes::new(self.state_bytes(seq)?, self.hints.clone())?)
    }

    /// Replaces everything `seq` holds with `state` (well-formed by construction: not parsed
    /// again).
    pub fn set_scanned_state(&mut self, seq: i32, state: &StateBytes) -> Result<(), EngineError> {
        self.write_state(seq, state.as_bytes())
    }

    /// Replaces everything `seq` holds with `state`. The codec writes a well-formed state, so
    /// the bytes are not parsed again (a second copy of a whole state in host memory: 254 MiB
    /// at 2k tokens of Llama 3.1 8B's cache).
    pub fn set_state(&mut self, seq: i32, state: &SeqState) -> Result<(), EngineError> {
        self.write_state(seq, &state.serialize())
    }

    /// Replaces everything `seq` holds with raw state bytes (which must parse).
    pub fn set_state_bytes(&mut self, seq: i32, bytes: &[u8]) -> Result<(), EngineError> {
        SeqState::parse(bytes, self.hints.clone())?;
        self.write_state(seq, bytes)
    }

    /// Hands well-formed state bytes to llama.cpp, which checks them against its own layout
    /// (layers, types, row sizes) and reads within the buffer.
    fn write_state(&mut self, seq: i32, bytes: &[u8]) -> Result<(), EngineError> {
        self.cell_maps.remove(&seq);
        if seq < 0 || seq as u32 >= self.options.n_seq {
            return Err(EngineError::State {
                seq,
                detail: format!("only {} sequences exist", self.options.n_seq),
            });
        }
        log::clear_recent();
        // SAFETY: the bytes are a well-formed state (parsed, or written by the codec);
        // llama.cpp refuses a layout other than its own and reads within the slice.
        let ok = unsafe {
            self.ctx
                .state_seq_set_data_ext(bytes, seq, LlamaStateSeqFlags::empty())
        };
        if !ok {
            return Err(EngineError::State {
                seq,
                detail: format!("llama.cpp refused the state: {}", log::recent().join("; ")),
            });
        }
        Ok(())
    }

    /// Removes the cells of positions `p0..p1` from `seq` (later cells keep their positions).
    pub fn remove(&mut self, seq: i32, p0: i32, p1: i32) -> Result<(), EngineError> {
        self.seq_rm(seq, p0, Some(p1), || {
            format!("llama.cpp could not remove positions {p0}..{p1}")
        })
    }

    /// Takes every position from `from` on out of `seq` (a sequence cut back to its first
    /// `from` positions).
    pub fn truncate(&mut self, seq: i32, from: i32) -> Result<(), EngineError> {
        self.seq_rm(seq, from, None, || {
            format!("llama.cpp could not cut the sequence back to position {from}")
        })
    }

    /// llama.cpp's `seq_rm` of positions `p0..p1` (`None`: to the end) from `seq`.
    fn seq_rm(
        &mut self,
        seq: i32,
        p0: i32,
        p1: Option<i32>,
        refused: impl FnOnce() -> String,
    ) -> Result<(), EngineError> {
        self.cell_maps.remove(&seq);
        let at = |p: i32| p.max(0) as u32;
        let ok = self
            .ctx
            .clear_kv_cache_seq(Some(seq as u32), Some(at(p0)), p1.map(at))
            .map_err(|e| EngineError::State {
                seq,
                detail: e.to_string(),
            })?;
        if !ok {
            return Err(EngineError::State {
                seq,
                detail: refused(),
            });
        }
        Ok(())
    }

    /// Makes `dst` hold what `src` holds, with llama.cpp's own sequence copy (the cache never
    /// leaves its device; with a stream per sequence llama.cpp copies the whole stream).
    pub fn copy_seq(&mut self, src: i32, dst: i32) {
        self.clear(dst);
        let _ = self.ctx.copy_kv_cache_seq(src, dst, None, None);
    }

    /// Whether all sequences share one KV stream ([`Lab::shared`]).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Makes `dst` also see `src`'s cells at positions `p0..p1` (`None`: to the end), in a
    /// shared lab: llama.cpp adds `dst` to those cells' sequences, nothing is copied, and the
    /// cells stay where they are (so `dst`'s cells are ordered as they lie in the stream, which
    /// can change results in the last bits: see `docs/llama-cpp-state.md`). An edit to `dst`
    /// must come first: restoring a state into `dst` empties it.
    pub fn share(
        &mut self,
        src: i32,
        dst: i32,
        p0: i32,
        p1: Option<i32>,
    ) -> Result<(), EngineError> {
        if !self.shared {
            return Err(EngineError::State {
                seq: dst,
                detail: "sharing cells needs a lab whose sequences share one stream".into(),
            });
        }
        let n_seq = self.options.n_seq as i32;
        if !(0..n_seq).contains(&src) || !(0..n_seq).contains(&dst) {
            return Err(EngineError::State {
                seq: dst,
                detail: format!("only {n_seq} sequences exist"),
            });
        }
        self.cell_maps.remove(&dst);
        let at = |p: i32| p.max(0) as u32;
        self.ctx
            .copy_kv_cache_seq(src, dst, Some(at(p0)), p1.map(at))
            .map_err(|e| EngineError::State {
                seq: dst,
                detail: e.to_string(),
            })
    }

    /// The state of `seq`'s cells at positions `p0..p1` alone, read through `scratch` (a
    /// sequence otherwise unused, left empty): in a shared lab this costs those cells' bytes,
    /// not the sequence's.
    pub fn state_of_positions(
        &mut self,
        seq: i32,
        scratch: i32,
        p0: i32,
        p1: i32,
    ) -> Result<SeqState, EngineError> {
        self.clear(scratch);
        self.share(seq, scratch, p0, Some(p1))?;
        let state = self.state(scratch);
        self.clear(scratch);
        state
    }

    /// Empties a sequence.
    pub fn clear(&mut self, seq: i32) {
        self.cell_maps.remove(&seq);
        let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
    }

    /// The number of KV layers the states of this model have (= transformer layers for llama).
    pub fn n_kv_layer(&self) -> usize {
        self.model.info().n_layer as usize
    }
}

/// The sequences of a batch llama.cpp evaluates as one ubatch (`split_equal` with one stream per
/// sequence): `(seq, first item)` per group of items, or why the batch is not one.
fn one_ubatch(items: &[BatchItem], n_batch: usize) -> Result<Vec<(i32, usize)>, String> {
    if items.is_empty() {
        return Err("nothing to evaluate".into());
    }
    if items.len() > n_batch {
        return Err(format!(
            "a capture evaluates at most one batch ({n_batch} items), got {}",
            items.len()
        ));
    }
    let mut groups: Vec<(i32, usize)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        match groups.last() {
            Some(&(seq, _)) if seq == it.seq => {}
            Some(&(seq, _)) if it.seq != seq + 1 => {
                return Err(format!(
                    "a capture's sequences must come grouped, with consecutive ascending ids \
                     (llama.cpp splits other batches): sequence {} after {seq}",
                    it.seq
                ));
            }
            _ => groups.push((it.seq, i)),
        }
    }
    let per = items.len() / groups.len();
    if groups
        .iter()
        .enumerate()
        .any(|(g, &(_, start))| start != g * per)
        || !items.len().is_multiple_of(groups.len())
    {
        return Err("a capture evaluates the same number of tokens of every sequence".into());
    }
    Ok(groups)
}
