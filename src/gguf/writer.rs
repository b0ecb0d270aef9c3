//! Writes random-weight GGUF models: a model with a real model's cache shape (Llama 3.1 8B's,
//! for the scale benchmark) and tiny matrices elsewhere, or models of architectures kvlab must
//! refuse (for tests). The tokenizer is copied from a real GGUF (the demo model's), so prompts
//! tokenize as they do there. What such a model generates is noise; what it costs to run is
//! what the cache shape makes it cost, which is what a benchmark of cache handling needs.
//!
//! GGUF v3: header, metadata key/values, tensor infos, then the tensor data, each tensor
//! aligned to 32 bytes.

use std::io::Write as _;
use std::path::Path;

/// A metadata value.
#[derive(Debug, Clone)]
pub enum Value {
    /// An unsigned 32-bit integer.
    U32(u32),
    /// A 32-bit float.
    F32(f32),
    /// A string.
    Str(String),
}

/// A tensor's number type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
}

impl TensorType {
    fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
        }
    }

    fn size(self) -> u64 {
        match self {
            TensorType::F32 => 4,
            TensorType::F16 => 2,
        }
    }
}

/// A model to write: metadata (plus the tokenizer copied from a GGUF) and tensors of small
/// pseudo-random values.
#[derive(Debug, Default)]
pub struct Writer {
    kvs: Vec<Vec<u8>>,
    tensors: Vec<(String, Vec<u64>, TensorType)>,
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
    pub fn tokenizer_from(&mut self, from: &Path) -> Result<&mut Self, String> {
        let b = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
        let bad = || {
            format!(
                "{} is not a GGUF file kvlab can copy a tokenizer from",
                from.display()
            )
        };
        if b.get(..4) != Some(&b"GGUF"[..]) {
            return Err(bad());
        }
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
        };
        let n_kv = u64_at(16).ok_or_else(bad)?;
        let mut at = 24;
        for _ in 0..n_kv {
            let start = at;
            let key_len = u64_at(at).ok_or_else(bad)? as usize;
            let key = b.get(at + 8..at + 8 + key_len).ok_or_else(bad)?;
            let is_tokenizer = key.starts_with(b"tokenizer.");
            at += 8 + key_len;
            let ty = b.get(at..at + 4).ok_or_else(bad)?;
            let ty = u32::from_le_bytes(ty.try_into().unwrap());
            at = skip_value(&b, at + 4, ty).ok_or_else(bad)?;
            if is_tokenizer {
                self.kvs.push(b[start..at].to_vec());
            }
        }
        Ok(self)
    }

    /// Adds an F32 tensor of shape `dims` (GGUF order: the fastest-varying first).
    pub fn tensor(&mut self, name: &str, dims: &[u64]) -> &mut Self {
        self.typed_tensor(name, dims, TensorType::F32)
    }

    /// Adds a tensor of shape `dims` and type `ty`.
    pub fn typed_tensor(&mut self, name: &str, dims: &[u64], ty: TensorType) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty));
        self
    }

    /// Writes the file (to a temporary name, then renamed: a partial model never has the final
    /// name). Values are small pseudo-random numbers from a fixed seed.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("gguf.part");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut head = Vec::new();
        head.extend(b"GGUF");
        head.extend(3u32.to_le_bytes());
        head.extend((self.tensors.len() as u64).to_le_bytes());
        head.extend((self.kvs.len() as u64).to_le_bytes());
        for kv in &self.kvs {
            head.extend(kv);
        }
        let mut offset = 0u64;
        let sizes: Vec<u64> = (self.tensors.iter())
            .map(|(_, d, ty)| d.iter().product::<u64>() * ty.size())
            .collect();
        for ((name, dims, ty), size) in self.tensors.iter().zip(&sizes) {
            head.extend(string(name));
            head.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                head.extend(d.to_le_bytes());
            }
            head.extend(ty.id().to_le_bytes());
            head.extend(offset.to_le_bytes());
            offset += size.div_ceil(ALIGN as u64) * ALIGN as u64;
        }
        head.resize(head.len().div_ceil(ALIGN) * ALIGN, 0);
        out.write_all(&head)?;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut chunk = Vec::with_capacity(1 << 20);
        for ((_, _, ty), size) in self.tensors.iter().zip(&sizes) {
            for _ in 0..size / ty.size() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let x = 0.1 * ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5);
                match ty {
                    TensorType::F32 => chunk.extend(x.to_le_bytes()),
                    TensorType::F16 => chunk.extend(f16_bits(x).to_le_bytes()),
                }
                if chunk.len() >= 1 << 20 {
                    out.write_all(&chunk)?;
                    chunk.clear();
                }
            }
            let padded = (*size as usize).div_ceil(ALIGN) * ALIGN;
            chunk.resize(chunk.len() + padded - *size as usize, 0);
        }
        out.write_all(&chunk)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// The f16 nearest to `x` for |x| < 65504 (normal numbers; anything below f16's normal range
/// becomes 0, which random weights do not mind).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    let mant = b & 0x7f_ffff;
    // Round to nearest on the 13 dropped bits.
    let rounded = (((exp as u32) << 10) | (mant >> 13)) + ((mant >> 12) & 1);
    sign | rounded.min(0x7bff) as u16
}

/// The offset after a value of type `ty` starting at `at` (`None`: not a value, or cut off).
fn skip_value(b: &[u8], at: usize, ty: u32) -> Option<usize> {
    let u64_at = |i: usize| -> Option<usize> {
        Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?) as usize)
    };
    let end = match ty {
        0 | 1 | 7 => at + 1,
        2 | 3 => at + 2,
        4..=6 => at + 4,
        10..=12 => at + 8,
        8 => at.checked_add(8)?.checked_add(u64_at(at)?)?,
        9 => {
            let item = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
            let n = u64_at(at + 4)?;
            let mut i = at + 12;
            for _ in 0..n {
                i = skip_value(b, i, item)?;
            }
            i
        }
        _ => return None,
    };
    (end <= b.len()).then_some(end)
}

/// The number of tokens in a GGUF's `tokenizer.ggml.tokens`.
pub fn vocab_size(path: &Path) -> Result<u64, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = b"tokenizer.ggml.tokens";
    let at = (b.windows(key.len()))
        .position(|w| w == key)
        .ok_or_else(|| format!("{} has no tokenizer", path.display()))?;
    // The key, then type 9 (array) and item type 8 (string), then the count.
    let count_at = at + key.len() + 8;
    b.get(count_at..count_at + 8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .ok_or_else(|| format!("{} has a cut-off tokenizer", path.display()))
}

/// The cache shape of Llama 3.1 8B: 32 layers, 8 KV heads of 128 values (128 KiB of f16 cache
/// per token), 32 query heads; everything else tiny (a 256-wide residual stream, a 512-wide
/// feed-forward), the tokenizer and chat template copied from `tokenizer` (the demo model).
/// About 230 MB of f16 weights (the 32 query heads' projections and the token embedding and
/// output matrices).
pub fn llama_8b_cache_shape(tokenizer: &Path, path: &Path) -> Result<(), String> {
    let (n_embd, n_head, n_head_kv, head, n_ff, n_layer) =
        (256u64, 32u64, 8u64, 128u64, 512u64, 32u32);
    let mut w = Writer::default();
    w.kv("general.architecture", Value::Str("llama".into()))
        .kv(
            "general.name",
            Value::Str("random weights, Llama 3.1 8B cache shape (kvlab bench --scale)".into()),
        )
        .kv("llama.context_length", Value::U32(16384))
        .kv("llama.embedding_length", Value::U32(n_embd as u32))
        .kv("llama.block_count", Value::U32(n_layer))
        .kv("llama.feed_forward_length", Value::U32(n_ff as u32))
        .kv("llama.attention.head_count", Value::U32(n_head as u32))
        .kv(
            "llama.attention.head_count_kv",
            Value::U32(n_head_kv as u32),
        )
        .kv("llama.attention.key_length", Value::U32(head as u32))
        .kv("llama.attention.value_length", Value::U32(head as u32))
        .kv("llama.rope.dimension_count", Value::U32(head as u32))
        .kv("llama.rope.freq_base", Value::F32(500000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .kv("general.file_type", Value::U32(1))
        .tokenizer_from(tokenizer)?;
    let n_vocab = vocab_size(tokenizer)?;
    let f16 = TensorType::F16;
    w.typed_tensor("token_embd.weight", &[n_embd, n_vocab], f16)
        .tensor("output_norm.weight", &[n_embd])
        .typed_tensor("output.weight", &[n_embd, n_vocab], f16);
    for i in 0..n_layer {
        let t = |n: &str| format!("blk.{i}.{n}");
        w.tensor(&t("attn_norm.weight"), &[n_embd])
            .typed_tensor(&t("attn_q.weight"), &[n_embd, n_head * head], f16)
            .typed_tensor(&t("attn_k.weight"), &[n_embd, n_head_kv * head], f16)
            .typed_tensor(&t("attn_v.weight"), &[n_embd, n_head_kv * head], f16)
            .typed_tensor(&t("attn_output.weight"), &[n_head * head, n_embd], f16)
            .tensor(&t("ffn_norm.weight"), &[n_embd])
            .typed_tensor(&t("ffn_gate.weight"), &[n_embd, n_ff], f16)
            .typed_tensor(&t("ffn_up.weight"), &[n_embd, n_ff], f16)
            .typed_tensor(&t("ffn_down.weight"), &[n_ff, n_embd], f16);
    }
    w.write(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_rounds_to_nearest() {
        assert_eq!(f16_bits(0.0), 0);
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(0.1), 0x2e66);
        assert_eq!(f16_bits(1e-9), 0, "below the normal range");
    }

    #[test]
    fn cut_or_foreign_files_are_refused_not_read_past_their_end() {
        let dir = std::env::temp_dir().join(format!("kvlab-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.gguf");
        std::fs::write(&p, b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\x05\0\0\0\0\0\0\0\xff").unwrap();
        assert!(Writer::default().tokenizer_from(&p).is_err());
        std::fs::write(&p, b"not a model").unwrap();
        assert!(Writer::default().tokenizer_from(&p).is_err());
        assert!(vocab_size(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
