//! Writes small random-weight GGUF files for tests: models of architectures kvlab must refuse or
//! handle, with the demo model's tokenizer so that their prompts tokenize like the demo's.
//! GGUF v3: header, metadata key/values, tensor infos, then the tensor data (aligned to 32).

#![allow(dead_code)]

use std::path::Path;

/// A metadata value.
pub enum Value {
    U32(u32),
    F32(f32),
    Str(String),
}

/// A model to write: metadata (plus the tokenizer copied from a GGUF) and F32 tensors.
#[derive(Default)]
pub struct Writer {
    kvs: Vec<Vec<u8>>,
    tensors: Vec<(String, Vec<u64>)>,
}

const ALIGN: usize = 32;

fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend(s.as_bytes());
    b
}

impl Writer {
    /// Adds a key/value pair.
    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        let mut b = string(key);
        match value {
            Value::U32(v) => {
                b.extend(4u32.to_le_bytes());
                b.extend(v.to_le_bytes());
            }
            Value::F32(v) => {
                b.extend(6u32.to_le_bytes());
                b.extend(v.to_le_bytes());
            }
            Value::Str(v) => {
                b.extend(8u32.to_le_bytes());
                b.extend(string(&v));
            }
        }
        self.kvs.push(b);
        self
    }

    /// Copies every `tokenizer.*` key/value pair of the GGUF file at `from`, byte for byte.
    pub fn tokenizer_from(&mut self, from: &Path) -> &mut Self {
        let b = std::fs::read(from).unwrap();
        let mut at = 24;
        let n_kv = u64::from_le_bytes(b[16..24].try_into().unwrap());
        for _ in 0..n_kv {
            let start = at;
            let key_len = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
            let key = std::str::from_utf8(&b[at + 8..at + 8 + key_len])
                .unwrap()
                .to_string();
            at += 8 + key_len;
            let ty = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            at = skip_value(&b, at + 4, ty);
            if key.starts_with("tokenizer.") {
                self.kvs.push(b[start..at].to_vec());
            }
        }
        self
    }

    /// Adds an F32 tensor of shape `dims` (GGUF order: the fastest-varying first).
    pub fn tensor(&mut self, name: &str, dims: &[u64]) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec()));
        self
    }

    /// Writes the file; tensor values are small pseudo-random numbers (fixed seed).
    pub fn write(&self, path: &Path) {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for kv in &self.kvs {
            out.extend(kv);
        }
        let mut offset = 0u64;
        let sizes: Vec<u64> = (self.tensors.iter())
            .map(|(_, d)| d.iter().product::<u64>() * 4)
            .collect();
        for ((name, dims), size) in self.tensors.iter().zip(&sizes) {
            out.extend(string(name));
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(0u32.to_le_bytes()); // F32
            out.extend(offset.to_le_bytes());
            offset += size.div_ceil(ALIGN as u64) * ALIGN as u64;
        }
        out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for size in &sizes {
            for _ in 0..size / 4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let x = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                out.extend((0.1 * x).to_le_bytes());
            }
            out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
        }
        std::fs::write(path, out).unwrap();
    }
}

/// The offset after a value of type `ty` starting at `at`.
fn skip_value(b: &[u8], at: usize, ty: u32) -> usize {
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap()) as usize;
    match ty {
        0 | 1 | 7 => at + 1,
        2 | 3 => at + 2,
        4..=6 => at + 4,
        10..=12 => at + 8,
        8 => at + 8 + u64_at(at),
        9 => {
            let item = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let n = u64_at(at + 4);
            let mut i = at + 12;
            for _ in 0..n {
                i = skip_value(b, i, item);
            }
            i
        }
        _ => panic!("GGUF value type {ty}"),
    }
}

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
        .tokenizer_from(tokenizer);
    let n_vocab = kvlab_vocab_size(tokenizer);
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
    w.write(path);
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
        .tokenizer_from(tokenizer);
    let n_vocab = kvlab_vocab_size(tokenizer);
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
    w.write(path);
}

/// The number of tokens in a GGUF's `tokenizer.ggml.tokens`.
fn kvlab_vocab_size(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    let key = b"tokenizer.ggml.tokens";
    let at = b
        .windows(key.len())
        .position(|w| w == key)
        .expect("a tokenizer");
    // key, then type 9 (array), item type 8 (string), count.
    let count_at = at + key.len() + 8;
    u64::from_le_bytes(b[count_at..count_at + 8].try_into().unwrap())
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
