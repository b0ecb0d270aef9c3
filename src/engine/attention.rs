//! Attention capture: the softmax weights that chosen query tokens give to the KV cache's cells,
//! per layer and query head, read out of llama.cpp's compute graph while a batch is evaluated.
//!
//! # Why this reaches past `llama-cpp-2`
//!
//! llama.cpp has no API for attention weights. Its scheduler can call a function for every graph
//! node (`cb_eval` / `cb_eval_user_data` in `llama_context_params`, a
//! `ggml_backend_sched_eval_callback`): asked first whether a node is wanted (`ask == true`), then
//! called again once that node has been computed (`ask == false`), when its data can be read with
//! `ggml_backend_tensor_get`, on whatever device holds it. `llama-cpp-2` 0.1.160 does not expose
//! these two fields (its `LlamaContextParams` keeps the raw struct in a private field and sets no
//! pointer fields), and gives no raw model or context pointer to create a context ourselves. So
//! [`capture_params`] reinterprets `LlamaContextParams` as the `llama_cpp_sys_2::llama_context_params`
//! it wraps, sets the callback, and hands it back: sound because the pinned `llama-cpp-2` defines
//! `LlamaContextParams` as a struct with that one field (a `transmute` checks the sizes at compile
//! time, and a one-field struct of its field's size has the field at offset 0); a unit test
//! checks that values set through `llama-cpp-2` read back through the raw struct and vice versa.
//! Bumping `llama-cpp-2` means re-checking its definition.
//!
//! # What is read
//!
//! With flash attention off, llama.cpp's `build_attn_mha` (llama-graph.cpp) computes
//! `kq = soft_max_ext(k·q, kq_mask, scale)` and names it `kq_soft_max-<layer>`: an F32 tensor of
//! shape `[n_kv, n_tokens, n_head, n_stream]`, one row of `n_kv` weights per query token and query
//! head (grouped-query heads are broadcast). Column `j` is cell `j` of the sequence's KV stream, for
//! the first `n_kv` cells (llama.cpp pads the view to a multiple of 256 cells). Masked cells
//! (empty, another sequence, or later positions) are exactly 0: the mask adds -inf before the
//! exponential. The mask itself is the softmax node's second source; its row for the last query
//! token tells which cells the sequence holds, and the sequence's state (whose cells llama.cpp
//! writes in cell order, with their positions) names the position each of them holds: that is the
//! explicit cell → position map of [`AttentionCapture::cell_pos`].
//!
//! Only the rows asked for are copied (`n_kv` floats per row, head and layer), with
//! `ggml_backend_tensor_get`, so tensors on a GPU are read the same way as on the CPU.
//!
//! # Limits
//!
//! - A capturing [`Lab`](super::Lab) runs with flash attention off (the fused kernel never
//!   materializes the weights), so its V cache is transposed and it may be a little slower.
//! - One capture is one llama.cpp ubatch: the tokens of one sequence, at most `n_batch` of them.
//! - Models whose attention is not `build_attn_mha` with a plain KV cache (sliding-window,
//!   recurrent, MLA…) are refused by the lab anyway.
//! - Copying rows costs `rows × n_head × n_layer × n_kv × 4` bytes and reading the sequence's
//!   state once per capture.

use std::ffi::{CStr, c_void};
use std::sync::Mutex;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_sys_2 as sys;

/// What to capture during one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptureRequest {
    /// Indices into the evaluated items whose attention rows are kept (the query tokens).
    pub rows: Vec<usize>,
    /// Positions whose weights are reported one by one (e.g. the needle span), and in total.
    pub focus: Vec<i32>,
    /// Whether to keep each captured row over all `n_kv` cells as well.
    pub full_rows: bool,
}

/// The attention of the captured query tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionCapture {
    /// Layers captured (all of the model's).
    pub n_layer: usize,
    /// Query heads per layer.
    pub n_head: usize,
    /// Cells in the evaluated view (softmax columns).
    pub n_kv: usize,
    /// Per cell (softmax column): the position it holds for the evaluated sequence, `None` for a
    /// cell the sequence does not hold (empty, or holding a later position than any query).
    pub cell_pos: Vec<Option<i32>>,
    /// The positions of [`CaptureRequest::focus`], in its order.
    pub focus: Vec<i32>,
    /// One entry per requested row, in request order.
    pub rows: Vec<CapturedRow>,
}

/// The attention one query token paid, per layer and head.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedRow {
    /// Index of the item in the evaluated batch.
    pub item: usize,
    /// Its position.
    pub pos: i32,
    /// Per cell: whether this token could attend to it (not masked).
    pub visible: Vec<bool>,
    n_head: usize,
    n_focus: usize,
    n_kv: usize,
    focus: Vec<f32>,
    full: Option<Vec<f32>>,
}

impl CapturedRow {
    /// The weight on each focus position (in [`AttentionCapture::focus`] order) in one layer and
    /// head: the weight of the cell holding it, 0 when no cell holds it.
    pub fn focus(&self, layer: usize, head: usize) -> &[f32] {
        let at = (layer * self.n_head + head) * self.n_focus;
        &self.focus[at..at + self.n_focus]
    }

    /// The total weight on the focus positions in one layer and head.
    pub fn focus_total(&self, layer: usize, head: usize) -> f32 {
        self.focus(layer, head).iter().sum()
    }

    /// The mean over heads of [`Self::focus_total`] in one layer.
    pub fn focus_total_mean(&self, layer: usize) -> f32 {
        (0..self.n_head)
            .map(|h| self.focus_total(layer, h))
            .sum::<f32>()
            / self.n_head.max(1) as f32
    }

    /// The whole row (one weight per cell) in one layer and head, when full rows were asked for.
    pub fn full(&self, layer: usize, head: usize) -> Option<&[f32]> {
        let at = (layer * self.n_head + head) * self.n_kv;
        self.full.as_ref().map(|f| &f[at..at + self.n_kv])
    }
}

/// The softmax rows of one evaluation as copied by the callback, before cells are mapped.
#[derive(Debug, Default)]
pub(crate) struct RawCapture {
    pub n_head: usize,
    pub n_kv: usize,
    /// Per layer: `[row][head][cell]`, `None` when the layer was never seen.
    pub layers: Vec<Option<Vec<f32>>>,
    /// `[row][cell]`: the mask's rows (`-inf`: masked).
    pub mask: Option<Vec<f32>>,
}

#[derive(Debug, Default)]
struct Armed {
    /// Ubatch rows to copy (the captured items, and the last item for the cell map).
    rows: Vec<usize>,
    n_tokens: usize,
    raw: RawCapture,
    error: Option<String>,
}

/// What the callback shares with the lab: armed for one evaluation, idle otherwise.
#[derive(Debug, Default)]
pub(crate) struct Hook {
    state: Mutex<Option<Armed>>,
}

impl Hook {
    /// Arms the hook for one evaluation of `n_tokens` tokens in one ubatch.
    pub(crate) fn arm(&self, rows: Vec<usize>, n_tokens: usize, n_layer: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = Some(Armed {
            rows,
            n_tokens,
            raw: RawCapture {
                layers: vec![None; n_layer],
                ..RawCapture::default()
            },
            error: None,
        });
    }

    /// Disarms the hook and returns what was captured.
    pub(crate) fn disarm(&self) -> Result<RawCapture, String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.take() {
            Some(Armed { error: Some(e), .. }) => Err(e),
            Some(a) => Ok(a.raw),
            None => Err("the capture was not armed".into()),
        }
    }

    /// The callback's work: `ask` is whether node `t` is wanted; otherwise `t` was computed.
    ///
    /// # Safety
    /// `t` is a graph node handed over by ggml's scheduler, valid for this call.
    unsafe fn on_tensor(&self, t: *mut sys::ggml_tensor, ask: bool) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(armed) = s.as_mut() else {
            return !ask;
        };
        // SAFETY: `name` is a NUL-terminated array inside the node.
        let name = unsafe { CStr::from_ptr((*t).name.as_ptr()) };
        let Some(layer) = softmax_layer(name.to_bytes()) else {
            return !ask;
        };
        if layer >= armed.raw.layers.len() {
            return !ask;
        }
        if ask {
            return true;
        }
        if armed.error.is_none() {
            // SAFETY: `t` is the computed node (ask == false).
            if let Err(e) = unsafe { copy_rows(t, layer, armed) } {
                armed.error = Some(e);
            }
        }
        true
    }
}

/// The layer of a `kq_soft_max-<layer>` node.
fn softmax_layer(name: &[u8]) -> Option<usize> {
    let rest = name.strip_prefix(b"kq_soft_max-")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Copies the armed rows of one layer's softmax node (and, once, the mask's rows).
///
/// # Safety
/// `t` is a computed graph node.
unsafe fn copy_rows(
    t: *mut sys::ggml_tensor,
    layer: usize,
    armed: &mut Armed,
) -> Result<(), String> {
    // SAFETY: the node is valid for the callback's duration.
    let tr = unsafe { &*t };
    let [n_kv, n_tokens, n_head, n_stream] = tr.ne.map(|n| n.max(0) as usize);
    if tr.type_ != sys::GGML_TYPE_F32 || tr.nb[0] != 4 || tr.buffer.is_null() {
        return Err("the attention weights are not a plain F32 tensor in this build".into());
    }
    if n_tokens != armed.n_tokens || n_stream != 1 {
        return Err(format!(
            "llama.cpp evaluated {n_tokens} tokens in {n_stream} streams where one ubatch of {} \
             tokens of one sequence was expected",
            armed.n_tokens
        ));
    }
    if armed.raw.n_kv != 0 && (armed.raw.n_kv != n_kv || armed.raw.n_head != n_head) {
        return Err("the layers' attention shapes differ".into());
    }
    armed.raw.n_kv = n_kv;
    armed.raw.n_head = n_head;
    let mut out = vec![0f32; armed.rows.len() * n_head * n_kv];
    for (i, &row) in armed.rows.iter().enumerate() {
        for h in 0..n_head {
            let dst = &mut out[(i * n_head + h) * n_kv..][..n_kv];
            let offset = row * tr.nb[1] + h * tr.nb[2];
            // SAFETY: row < n_tokens and h < n_head, so `offset + n_kv * 4` lies inside the
            // tensor (nb[0] == 4); `dst` holds n_kv floats.
            unsafe {
                sys::ggml_backend_tensor_get(t, dst.as_mut_ptr().cast::<c_void>(), offset, n_kv * 4)
            };
        }
    }
    armed.raw.layers[layer] = Some(out);
    if armed.raw.mask.is_none() {
        // SAFETY: src[1] is null or a tensor of the same graph.
        armed.raw.mask = Some(unsafe { copy_mask(tr.src[1], n_kv, armed)? });
    }
    Ok(())
}

/// The mask rows of the armed rows (F32 or F16, converted to F32).
///
/// # Safety
/// `m` is null or a valid tensor of the graph being computed.
unsafe fn copy_mask(
    m: *mut sys::ggml_tensor,
    n_kv: usize,
    armed: &Armed,
) -> Result<Vec<f32>, String> {
    if m.is_null() {
        return Err("the attention has no mask in this build".into());
    }
    // SAFETY: non-null graph tensor.
    let mr = unsafe { &*m };
    let el = match mr.type_ {
        sys::GGML_TYPE_F32 => 4,
        sys::GGML_TYPE_F16 => 2,
        _ => return Err("the attention mask has an unexpected type".into()),
    };
    if mr.buffer.is_null()
        || mr.ne[0] as usize != n_kv
        || (mr.ne[1].max(0) as usize) < armed.n_tokens
        || mr.nb[0] != el
    {
        return Err("the attention mask has an unexpected shape".into());
    }
    let mut out = Vec::with_capacity(armed.rows.len() * n_kv);
    let mut buf = vec![0u8; n_kv * el];
    for &row in &armed.rows {
        // SAFETY: row < n_tokens <= ne[1], so the row's n_kv elements lie inside the tensor.
        unsafe {
            sys::ggml_backend_tensor_get(
                m,
                buf.as_mut_ptr().cast::<c_void>(),
                row * mr.nb[1],
                buf.len(),
            )
        };
        if el == 4 {
            out.extend(
                buf.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        } else {
            out.extend(
                buf.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            );
        }
    }
    Ok(out)
}

/// The function ggml's scheduler calls; `user_data` is the lab's [`Hook`].
unsafe extern "C" fn eval_callback(
    t: *mut sys::ggml_tensor,
    ask: bool,
    user_data: *mut c_void,
) -> bool {
    if t.is_null() || user_data.is_null() {
        return !ask;
    }
    // SAFETY: `user_data` is the `Hook` the lab owns; the lab drops its context (which holds the
    // pointer) before the hook.
    let hook = unsafe { &*user_data.cast::<Hook>() };
    // A panic must not unwind into C: it is caught and the node is neither observed nor stopped.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        hook.on_tensor(t, ask)
    }))
    .unwrap_or(!ask)
}

/// Context parameters with the capture callback installed and flash attention off.
pub(crate) fn capture_params(params: LlamaContextParams, hook: &Hook) -> LlamaContextParams {
    let params = params.with_flash_attention_policy(sys::LLAMA_FLASH_ATTN_TYPE_DISABLED);
    // SAFETY: see the module docs: `LlamaContextParams` (llama-cpp-2 =0.1.160) is a struct whose
    // only field is a `llama_context_params`; `transmute` checks the sizes match.
    let mut raw: sys::llama_context_params = unsafe { std::mem::transmute(params) };
    raw.cb_eval = Some(eval_callback);
    raw.cb_eval_user_data = (hook as *const Hook).cast_mut().cast::<c_void>();
    // SAFETY: as above, in the other direction.
    unsafe { std::mem::transmute(raw) }
}

const _: () = assert!(
    std::mem::align_of::<LlamaContextParams>() == std::mem::align_of::<sys::llama_context_params>()
);

/// Builds the user-facing capture from the raw rows: maps cells to positions with the mask row of
/// the last evaluated item and the sequence's cells in cell order (`seq_cells`: positions).
pub(crate) fn assemble(
    raw: RawCapture,
    request: &CaptureRequest,
    row_items: &[usize],
    item_pos: &[i32],
    seq_cells: &[i32],
) -> Result<AttentionCapture, String> {
    let n_layer = raw.layers.len();
    let (n_head, n_kv) = (raw.n_head, raw.n_kv);
    let layers: Vec<Vec<f32>> = raw
        .layers
        .into_iter()
        .enumerate()
        .map(|(l, d)| {
            d.ok_or_else(|| {
                format!("layer {l}'s attention weights were not seen (is flash attention on?)")
            })
        })
        .collect::<Result<_, _>>()?;
    let mask = raw.mask.ok_or("the attention mask was not seen")?;
    let visible = |i: usize| -> Vec<bool> {
        mask[i * n_kv..(i + 1) * n_kv]
            .iter()
            .map(|&m| m != f32::NEG_INFINITY)
            .collect()
    };
    // The last armed row is the last item: it sees every cell of the sequence up to its position.
    let last = row_items.len() - 1;
    let cell_pos = map_cells(&visible(last), item_pos[row_items[last]], seq_cells)?;
    let rows = request
        .rows
        .iter()
        .map(|&item| {
            let i = row_items.iter().position(|&r| r == item).expect("armed");
            let mut focus = Vec::with_capacity(n_layer * n_head * request.focus.len());
            let mut full = request
                .full_rows
                .then(|| Vec::with_capacity(n_layer * n_head * n_kv));
            for data in &layers {
                for h in 0..n_head {
                    let w = &data[(i * n_head + h) * n_kv..][..n_kv];
                    for &p in &request.focus {
                        focus.push(
                            (0..n_kv)
                                .filter(|&c| cell_pos[c] == Some(p))
                                .map(|c| w[c])
                                .sum(),
                        );
                    }
                    if let Some(f) = full.as_mut() {
                        f.extend_from_slice(w);
                    }
                }
            }
            CapturedRow {
                item,
                pos: item_pos[item],
                visible: visible(i),
                n_head,
                n_focus: request.focus.len(),
                n_kv,
                focus,
                full,
            }
        })
        .collect();
    Ok(AttentionCapture {
        n_layer,
        n_head,
        n_kv,
        cell_pos,
        focus: request.focus.clone(),
        rows,
    })
}

/// The position each cell holds: the cells `seen` by a token at `last_pos`, in cell order, are
/// the sequence's cells (`seq_cells`, in cell order) with a position up to `last_pos`.
fn map_cells(seen: &[bool], last_pos: i32, seq_cells: &[i32]) -> Result<Vec<Option<i32>>, String> {
    let visible: Vec<usize> = (0..seen.len()).filter(|&c| seen[c]).collect();
    let held: Vec<i32> = seq_cells
        .iter()
        .copied()
        .filter(|&p| p <= last_pos)
        .collect();
    if visible.len() != held.len() {
        return Err(format!(
            "the last token sees {} cells but the sequence holds {} up to its position",
            visible.len(),
            held.len()
        ));
    }
    let mut cell_pos = vec![None; seen.len()];
    for (&c, &p) in visible.iter().zip(&held) {
        cell_pos[c] = Some(p);
    }
    Ok(cell_pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_is_set_and_other_parameters_survive() {
        let hook = Hook::default();
        let params = LlamaContextParams::default()
            .with_n_ctx(std::num::NonZeroU32::new(1234))
            .with_n_batch(77)
            .with_kv_unified(false);
        let params = capture_params(params, &hook);
        assert_eq!(params.n_ctx(), std::num::NonZeroU32::new(1234));
        assert_eq!(params.n_batch(), 77);
        assert!(!params.kv_unified());
        assert_eq!(
            params.flash_attention_policy(),
            sys::LLAMA_FLASH_ATTN_TYPE_DISABLED
        );
        // SAFETY: as in `capture_params`.
        let raw: sys::llama_context_params = unsafe { std::mem::transmute(params) };
        assert!(raw.cb_eval.is_some());
        assert_eq!(
            raw.cb_eval_user_data.cast_const(),
            (&hook as *const Hook).cast()
        );
        assert_eq!(raw.n_ctx, 1234);
        assert_eq!(raw.n_batch, 77);
    }

    #[test]
    fn only_softmax_nodes_are_wanted() {
        assert_eq!(softmax_layer(b"kq_soft_max-0"), Some(0));
        assert_eq!(softmax_layer(b"kq_soft_max-29"), Some(29));
        assert_eq!(softmax_layer(b"kq_soft_max"), None);
        assert_eq!(softmax_layer(b"kq-3"), None);
        assert_eq!(softmax_layer(b"kq_soft_max-x"), None);
    }
}
