//! The graph callback: armed for one evaluation, it copies the asked rows of every layer's
//! softmax (and, on request, of the scores before it) and the mask's rows.

use std::ffi::{CStr, c_void};
use std::sync::Mutex;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_sys_2 as sys;

/// A row of the ubatch: its stream (the ubatch's `s`-th sequence) and its token in the stream.
pub(crate) type UbatchRow = (usize, usize);

/// The rows of one evaluation as copied by the callback, before cells are mapped.
#[derive(Debug, Default)]
pub(crate) struct RawCapture {
    pub n_head: usize,
    pub n_kv: usize,
    /// Per layer: `[row][head][cell]` softmax weights, `None` when the layer was never seen.
    pub layers: Vec<Option<Vec<f32>>>,
    /// Per layer: `[row][head][cell]` scores before the softmax (only when asked for).
    pub scores: Vec<Option<Vec<f32>>>,
    /// `[row][cell]`: the mask's rows (`-inf`: masked).
    pub mask: Option<Vec<f32>>,
}

#[derive(Debug, Default)]
struct Armed {
    /// Ubatch rows to copy (the captured items, and each sequence's last item for the cell map).
    rows: Vec<UbatchRow>,
    n_stream: usize,
    /// Tokens per stream.
    n_per_stream: usize,
    scores: bool,
    raw: RawCapture,
    error: Option<String>,
}

/// What the callback shares with the lab: armed for one evaluation, idle otherwise.
#[derive(Debug, Default)]
pub(crate) struct Hook {
    state: Mutex<Option<Armed>>,
}

/// Which node a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Softmax(usize),
    Scores(usize),
}

/// The node of a `kq_soft_max-<layer>` or `kq-<layer>` name.
fn node_of(name: &[u8]) -> Option<Node> {
    let layer = |rest: &[u8]| std::str::from_utf8(rest).ok()?.parse().ok();
    if let Some(rest) = name.strip_prefix(b"kq_soft_max-") {
        return layer(rest).map(Node::Softmax);
    }
    name.strip_prefix(b"kq-").and_then(layer).map(Node::Scores)
}

impl Hook {
    /// Arms the hook for one evaluation of `n_stream` sequences of `n_per_stream` tokens each,
    /// in one ubatch.
    pub(crate) fn arm(
        &self,
        rows: Vec<UbatchRow>,
        n_stream: usize,
        n_per_stream: usize,
        n_layer: usize,
        scores: bool,
    ) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = Some(Armed {
            rows,
            n_stream,
            n_per_stream,
            scores,
            raw: RawCapture {
                layers: vec![None; n_layer],
                scores: vec![None; if scores { n_layer } else { 0 }],
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
        let node = match node_of(name.to_bytes()) {
            Some(Node::Scores(_)) if !armed.scores => return !ask,
            Some(n) => n,
            None => return !ask,
        };
        let (Node::Softmax(layer) | Node::Scores(layer)) = node;
        if layer >= armed.raw.layers.len() {
            return !ask;
        }
        if ask {
            return true;
        }
        if armed.error.is_none() {
            // SAFETY: `t` is the computed node (ask == false).
            if let Err(e) = unsafe { copy_node(t, node, layer, armed) } {
                armed.error = Some(e);
            }
        }
        true
    }
}

/// Copies the armed rows of one layer's softmax or scores node (and, once, the mask's rows).
///
/// # Safety
/// `t` is a computed graph node.
unsafe fn copy_node(
    t: *mut sys::ggml_tensor,
    node: Node,
    layer: usize,
    armed: &mut Armed,
) -> Result<(), String> {
    // SAFETY: the node is valid for the callback's duration.
    let tr = unsafe { &*t };
    let [n_kv, n_tokens, n_head, n_stream] = tr.ne.map(|n| n.max(0) as usize);
    if tr.type_ != sys::GGML_TYPE_F32 || tr.nb[0] != 4 || tr.buffer.is_null() {
        return Err("the attention weights are not a plain F32 tensor in this build".into());
    }
    if n_tokens != armed.n_per_stream || n_stream != armed.n_stream {
        return Err(format!(
            "llama.cpp evaluated {n_stream} streams of {n_tokens} tokens where one ubatch of {} \
             streams of {} tokens was expected",
            armed.n_stream, armed.n_per_stream
        ));
    }
    if armed.raw.n_kv != 0 && (armed.raw.n_kv != n_kv || armed.raw.n_head != n_head) {
        return Err("the layers' attention shapes differ".into());
    }
    let slot = match node {
        Node::Softmax(_) => &armed.raw.layers[layer],
        Node::Scores(_) => &armed.raw.scores[layer],
    };
    if slot.is_some() {
        return Err(format!(
            "layer {layer}'s attention was computed twice: llama.cpp split the batch into \
             several ubatches"
        ));
    }
    armed.raw.n_kv = n_kv;
    armed.raw.n_head = n_head;
    let mut out = vec![0f32; armed.rows.len() * n_head * n_kv];
    for (i, &(stream, token)) in armed.rows.iter().enumerate() {
        for h in 0..n_head {
            let dst = &mut out[(i * n_head + h) * n_kv..][..n_kv];
            let offset = token * tr.nb[1] + h * tr.nb[2] + stream * tr.nb[3];
            // SAFETY: token < n_tokens, h < n_head and stream < n_stream (checked by the lab and
            // above), so `offset + n_kv * 4` lies inside the tensor (nb[0] == 4); `dst` holds n_kv
            // floats.
            unsafe {
                sys::ggml_backend_tensor_get(t, dst.as_mut_ptr().cast::<c_void>(), offset, n_kv * 4)
            };
        }
    }
    match node {
        Node::Softmax(_) => {
            armed.raw.layers[layer] = Some(out);
            if armed.raw.mask.is_none() {
                // SAFETY: src[1] is null or a tensor of the same graph.
                armed.raw.mask = Some(unsafe { copy_mask(tr.src[1], n_kv, armed)? });
            }
        }
        Node::Scores(_) => armed.raw.scores[layer] = Some(out),
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
        || (mr.ne[1].max(0) as usize) < armed.n_per_stream
        || (mr.ne[3].max(0) as usize) != armed.n_stream
        || mr.nb[0] != el
    {
        return Err("the attention mask has an unexpected shape".into());
    }
    let mut out = Vec::with_capacity(armed.rows.len() * n_kv);
    let mut buf = vec![0u8; n_kv * el];
    for &(stream, token) in &armed.rows {
        // SAFETY: token < n_per_stream <= ne[1] and stream < n_stream == ne[3], so the row's
        // n_kv elements lie inside the tensor.
        unsafe {
            sys::ggml_backend_tensor_get(
                m,
                buf.as_mut_ptr().cast::<c_void>(),
                token * mr.nb[1] + stream * mr.nb[3],
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
    fn only_softmax_and_score_nodes_are_wanted() {
        assert_eq!(node_of(b"kq_soft_max-0"), Some(Node::Softmax(0)));
        assert_eq!(node_of(b"kq_soft_max-29"), Some(Node::Softmax(29)));
        assert_eq!(node_of(b"kq-3"), Some(Node::Scores(3)));
        assert_eq!(node_of(b"kq_soft_max"), None);
        assert_eq!(node_of(b"kq_soft_max-x"), None);
        assert_eq!(node_of(b"kqv-3"), None);
        assert_eq!(node_of(b"kq_scaled-3"), None);
    }
}
