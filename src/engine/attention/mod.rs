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
//! [`hook::capture_params`] reinterprets `LlamaContextParams` as the
//! `llama_cpp_sys_2::llama_context_params` it wraps, sets the callback, and hands it back: sound
//! because the pinned `llama-cpp-2` defines `LlamaContextParams` as a struct with that one field
//! (a `transmute` checks the sizes at compile time, and a one-field struct of its field's size has
//! the field at offset 0); a unit test checks that values set through `llama-cpp-2` read back
//! through the raw struct and vice versa. Bumping `llama-cpp-2` means re-checking its definition.
//!
//! # What is read
//!
//! With flash attention off, llama.cpp's `build_attn_mha` (llama-graph.cpp) computes
//! `kq = soft_max_ext(k·q, kq_mask, scale)` and names it `kq_soft_max-<layer>`: an F32 tensor of
//! shape `[n_kv, n_tokens / n_stream, n_head, n_stream]`, one row of `n_kv` weights per query
//! token and query head (grouped-query heads are broadcast). Column `j` is cell `j` of the
//! sequence's KV stream, for the first `n_kv` cells (llama.cpp pads the view to a multiple of 256
//! cells). Masked cells (empty, another sequence, or later positions) are exactly 0: the mask adds
//! -inf before the exponential. The mask itself is the softmax node's second source; its row for
//! a sequence's last query token tells which cells the sequence holds, and the sequence's state
//! (whose cells llama.cpp writes in cell order, with their positions) names the position each of
//! them holds: that is the explicit cell → position map of [`AttentionCapture::cell_pos`]. The
//! unscaled scores `k·q` before the softmax are the node `kq-<layer>`; they are read on request
//! ([`CaptureRequest::focus_scores`]) for the focus positions.
//!
//! # Several sequences in one batch
//!
//! With one KV stream per sequence (`kv_unified = false`) llama.cpp splits a batch with
//! `llama_batch_allocr::split_equal(n_ubatch, sequential = true)` (llama-batch.cpp): a ubatch
//! takes sequences with consecutive ids, in the batch's order, the same number of tokens from
//! each, and lays them out sequence after sequence; the graph views the queries as
//! `[.., n_tokens / n_stream, n_stream]`, so stream `s` of the softmax node is the ubatch's
//! `s`-th sequence and its token `t` the sequence's `t`-th token of the batch. [`Lab::eval_capturing_seqs`](super::Lab::eval_capturing_seqs)
//! accepts exactly the batches that become one ubatch this way (items grouped by sequence, ids
//! consecutive and ascending, equal counts, at most `n_batch` tokens) and checks the node's shape
//! against it; a layer seen twice (llama.cpp split the batch after all) is an error, never a
//! guess. `tests/attention.rs` checks the order: a row captured in a batch of several sequences
//! equals the same sequence's row captured alone.
//!
//! Only the rows asked for are copied (`n_kv` floats per row, head and layer), with
//! `ggml_backend_tensor_get`, so tensors on a GPU are read the same way as on the CPU.
//!
//! # The cell map without reading states
//!
//! Reading a sequence's state copies its whole cache. A lab remembers the map of every sequence
//! it captured; when the next capture adds one token to that sequence and the last token sees
//! exactly the cells it held plus one, that one is the new token's cell (see
//! [`assemble::extend_map`]). Anything else (several new tokens, surgery, a restored state, a
//! plain `eval` in between) falls back to reading the state.
//!
//! # Limits
//!
//! - A capturing [`Lab`](super::Lab) runs with flash attention off (the fused kernel never
//!   materializes the weights), so its V cache is transposed and it may be a little slower.
//! - One capture is one llama.cpp ubatch (see above), at most `n_batch` tokens.
//! - Models whose attention is not `build_attn_mha` with a plain KV cache (sliding-window,
//!   recurrent, MLA…) are refused by the lab anyway.
//! - Copying rows costs `rows × n_head × n_layer × n_kv × 4` bytes.

pub(crate) mod assemble;
pub(crate) mod hook;

/// What to capture during one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptureRequest {
    /// Indices into the evaluated items whose attention rows are kept (the query tokens).
    pub rows: Vec<usize>,
    /// Positions whose weights are reported one by one (e.g. the needle span), and in total.
    pub focus: Vec<i32>,
    /// Whether to keep each captured row over all `n_kv` cells as well.
    pub full_rows: bool,
    /// Whether to keep the scores before the softmax (`k·q`, unscaled) on the focus positions.
    pub focus_scores: bool,
}

/// The attention of the captured query tokens of one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionCapture {
    /// The sequence.
    pub seq: i32,
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
    /// One entry per requested row of this sequence, in request order.
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
    scores: Option<Vec<f32>>,
    full: Option<Vec<f32>>,
}

impl CapturedRow {
    /// The weight on each focus position (in [`AttentionCapture::focus`] order) in one layer and
    /// head: the weight of the cell holding it, 0 when no cell holds it.
    pub fn focus(&self, layer: usize, head: usize) -> &[f32] {
        let at = (layer * self.n_head + head) * self.n_focus;
        &self.focus[at..at + self.n_focus]
    }

    /// The score before the softmax (`k·q`, before llama.cpp's scale and mask) on each focus
    /// position in one layer and head, when asked for; NaN where no cell holds the position.
    pub fn focus_scores(&self, layer: usize, head: usize) -> Option<&[f32]> {
        let at = (layer * self.n_head + head) * self.n_focus;
        self.scores.as_ref().map(|s| &s[at..at + self.n_focus])
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
