//! Random-weight GGUF models of architectures kvlab must refuse or handle differently (written
//! with `kvlab::gguf::writer`, with the demo model's tokenizer).

#![allow(dead_code)]

use std::path::Path;

use kvlab::gguf::writer::{Value, Writer, vocab_size};

/// A two-layer Mamba model (a recurrent state, no KV cache) with the tokenizer of `tokenizer`:
/// llama.cpp loads it; kvlab must refuse to edit it.
pub fn tiny_mamba(tokenizer: &Path, path: &Path) {
    let (n_embd, d_inner, d_conv, d_state, dt_rank, n_layer) =
        (64u64, 128u64, 4u64, 16u64, 4u64, 2);
    let mut w = Writer::default();
    w.kv("general.architecture", Value::Str("mamba".into()))
        .kv("general.name", Value::Str("tiny random mamba".into()))
        .kv("mamba.context_length", Value::U32(2048))
        .kv("mamba.embedding_length", Value::U32(n_embd as u32))
        .kv("mamba.block_count", Value::U32(n_layer))
        .kv("mamba.feed_forward_length", Value::U32(0))
        .kv("mamba.attention.head_count", Value::U32(0))
        .kv("mamba.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .kv("mamba.ssm.conv_kernel", Value::U32(d_conv as u32))
        .kv("mamba.ssm.inner_size", Value::U32(d_inner as u32))
        .kv("mamba.ssm.state_size", Value::U32(d_state as u32))
        .kv("mamba.ssm.time_step_rank", Value::U32(dt_rank as u32))
        .tokenizer_from(tokenizer)
        .unwrap();
    let n_vocab = vocab_size(tokenizer).unwrap();
    w.tensor("token_embd.weight", &[n_embd, n_vocab])
        .tensor("output_norm.weight", &[n_embd]);
    for i in 0..n_layer {
        let t = |n: &str| format!("blk.{i}.{n}");
        w.tensor(&t("attn_norm.weight"), &[n_embd])
            .tensor(&t("ssm_in.weight"), &[n_embd, 2 * d_inner])
            .tensor(&t("ssm_conv1d.weight"), &[d_conv, d_inner])
            .tensor(&t("ssm_conv1d.bias"), &[d_inner])
            .tensor(&t("ssm_x.weight"), &[d_inner, dt_rank + 2 * d_state])
            .tensor(&t("ssm_dt.weight"), &[dt_rank, d_inner])
            .tensor(&t("ssm_dt.bias"), &[d_inner])
            .tensor(&t("ssm_a"), &[d_state, d_inner])
            .tensor(&t("ssm_d"), &[d_inner])
            .tensor(&t("ssm_out.weight"), &[d_inner, n_embd]);
    }
    w.write(path).unwrap();
}

/// A four-layer OLMo 2 model with a sliding window of 16 tokens: llama.cpp gives it two caches
/// (layers 0–2 slide, 3 sees everything), an architecture kvlab does not map.
pub fn tiny_olmo2_sliding(tokenizer: &Path, path: &Path) {
    let (n_embd, n_head, n_ff, n_layer) = (64u64, 4u32, 128u64, 4u32);
    let mut w = Writer::default();
    w.kv("general.architecture", Value::Str("olmo2".into()))
        .kv(
            "general.name",
            Value::Str("tiny random olmo2 with a sliding window".into()),
        )
        .kv("olmo2.context_length", Value::U32(2048))
        .kv("olmo2.embedding_length", Value::U32(n_embd as u32))
        .kv("olmo2.block_count", Value::U32(n_layer))
        .kv("olmo2.feed_forward_length", Value::U32(n_ff as u32))
        .kv("olmo2.attention.head_count", Value::U32(n_head))
        .kv("olmo2.attention.head_count_kv", Value::U32(n_head))
        .kv("olmo2.attention.layer_norm_rms_epsilon", Value::F32(1e-6))
        .kv("olmo2.attention.sliding_window", Value::U32(16))
        .tokenizer_from(tokenizer)
        .unwrap();
    let n_vocab = vocab_size(tokenizer).unwrap();
    w.tensor("token_embd.weight", &[n_embd, n_vocab])
        .tensor("output_norm.weight", &[n_embd])
        .tensor("output.weight", &[n_embd, n_vocab]);
    for i in 0..n_layer {
        let t = |n: &str| format!("blk.{i}.{n}");
        w.tensor(&t("attn_q.weight"), &[n_embd, n_embd])
            .tensor(&t("attn_k.weight"), &[n_embd, n_embd])
            .tensor(&t("attn_v.weight"), &[n_embd, n_embd])
            .tensor(&t("attn_output.weight"), &[n_embd, n_embd])
            .tensor(&t("attn_q_norm.weight"), &[n_embd])
            .tensor(&t("attn_k_norm.weight"), &[n_embd])
            .tensor(&t("post_attention_norm.weight"), &[n_embd])
            .tensor(&t("ffn_gate.weight"), &[n_embd, n_ff])
            .tensor(&t("ffn_up.weight"), &[n_embd, n_ff])
            .tensor(&t("ffn_down.weight"), &[n_ff, n_embd])
            .tensor(&t("post_ffw_norm.weight"), &[n_embd]);
    }
    w.write(path).unwrap();
}

/// The GGUF at `from` (a llama model) with one more metadata key/value pair, `llama.attention.sliding_window`, at the front of the list (the tensor
/// data shifts by a multiple of 32 bytes, the alignment, so the file still loads).
pub fn with_sliding_window(from: &Path, dir: &Path) -> std::path::PathBuf {
    let mut b = std::fs::read(from).unwrap();
    let kv = |key: &str, ty: u32, value: &[u8]| {
        let mut kv = (key.len() as u64).to_le_bytes().to_vec();
        kv.extend(key.as_bytes());
        kv.extend(ty.to_le_bytes());
        kv.extend(value);
        kv
    };
    let mut add = kv("llama.attention.sliding_window", 4, &4096u32.to_le_bytes());
    // A string key that pads the insertion to a multiple of 32 bytes.
    let pad = (32 - (add.len() + 8 + 9 + 4 + 8) % 32) % 32;
    let mut text = (pad as u64).to_le_bytes().to_vec();
    text.extend(std::iter::repeat_n(b'x', pad));
    add.extend(kv("kvlab.pad", 8, &text));
    assert_eq!(add.len() % 32, 0);
    b.splice(24..24, add);
    let n = u64::from_le_bytes(b[16..24].try_into().unwrap()) + 2;
    b[16..24].copy_from_slice(&n.to_le_bytes());
    let path = dir.join("sliding-window.gguf");
    std::fs::write(&path, b).unwrap();
    path
}
