//! Reading a GGUF file's metadata without llama.cpp: enough to describe a model and estimate the
//! memory it needs before anyone waits for it to load. Pure Rust, bounded reads; never panics on
//! bad input (a property test feeds it garbage).

use std::io::{BufReader, Read, Seek};
use std::path::Path;

use thiserror::Error;

/// Why a file's metadata could not be read.
#[derive(Debug, Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not GGUF metadata llama.cpp would read.
    #[error("{path} is not a GGUF model file ({reason})")]
    NotGguf {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a GGUF file says about its model, read from the header alone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GgufSummary {
    /// File size in bytes (about the memory the weights take).
    pub file_size: u64,
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// Number of tensors.
    pub tensor_count: u64,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// `general.architecture` ("llama", "qwen2", …).
    pub architecture: String,
    /// `general.file_type` as a name ("Q4_1"), when present.
    pub quantization: Option<String>,
    /// Repeating layers (`<arch>.block_count`).
    pub n_layer: u32,
    /// Embedding size (`<arch>.embedding_length`).
    pub n_embd: u32,
    /// Attention heads (`<arch>.attention.head_count`; the largest, if per layer).
    pub n_head: u32,
    /// KV heads per layer (`<arch>.attention.head_count_kv`; = `n_head` when absent).
    pub n_head_kv: Vec<u32>,
    /// K head size (`<arch>.attention.key_length`, else `n_embd / n_head`).
    pub head_dim_k: u32,
    /// V head size (`<arch>.attention.value_length`, else `n_embd / n_head`).
    pub head_dim_v: u32,
    /// Trained context (`<arch>.context_length`).
    pub n_ctx_train: u32,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
}

impl GgufSummary {
    /// Bytes one KV-cache cell takes across all layers, K and V in F16 (llama.cpp's default).
    pub fn kv_bytes_per_cell(&self) -> u64 {
        kv_bytes_per_cell(
            (0..self.n_layer).map(|il| self.n_head_kv_at(il)),
            self.head_dim_k,
            self.head_dim_v,
        )
    }

    /// KV heads of layer `il`.
    pub fn n_head_kv_at(&self, il: u32) -> u32 {
        match self.n_head_kv.as_slice() {
            [] => self.n_head,
            [one] => *one,
            per_layer => per_layer.get(il as usize).copied().unwrap_or(0),
        }
    }
}

/// Bytes one KV-cell takes: per layer, K and V of `n_head_kv` heads, two bytes (F16) per channel.
/// Saturates at `u64::MAX` instead of overflowing (a forged header can ask for anything).
pub fn kv_bytes_per_cell(n_head_kv_per_layer: impl Iterator<Item = u32>, dk: u32, dv: u32) -> u64 {
    n_head_kv_per_layer
        .map(|h| {
            2u64.saturating_mul(h as u64)
                .saturating_mul(dk as u64 + dv as u64)
        })
        .fold(0u64, u64::saturating_add)
}

/// KV cells a run allocates: one stream per sequence, each rounded up to 256 cells as the
/// engine's `Lab` does, long enough for the prompt, the generation and a small margin.
/// Saturates at `u64::MAX` instead of overflowing.
pub fn kv_cells_for_run(n_seq: u64, prompt_tokens: u64, max_tokens: u64) -> u64 {
    let per_seq = prompt_tokens
        .saturating_add(max_tokens)
        .saturating_add(8)
        .div_ceil(256)
        .saturating_mul(256);
    n_seq.saturating_mul(per_seq)
}

/// llama.cpp's `LLAMA_MAX_LAYERS` (llama-hparams.h): `<arch>.block_count` must be in 1..=this, or
/// llama.cpp aborts the process (`GGML_ASSERT`) while loading.
pub const LLAMA_MAX_LAYERS: u32 = 512;
/// llama.cpp's `LLAMA_MAX_EXPERTS` (llama-hparams.h): the most `<arch>.expert_count` may say.
pub const LLAMA_MAX_EXPERTS: u32 = 1024;
/// Attention heads (KV heads) a header may name; no model has near this many.
const MAX_HEADS: u32 = 1 << 16;
/// Channels per head a header may name.
const MAX_HEAD_DIM: u32 = 1 << 16;
/// Embedding size a header may name.
const MAX_EMBD: u32 = 1 << 24;
/// The RoPE scaling names llama.cpp knows (`LLAMA_ROPE_SCALING_TYPES`); any other aborts it.
const ROPE_SCALING_TYPES: [&str; 4] = ["none", "linear", "yarn", "longrope"];

/// llama.cpp's `llama_ftype` as the names people use.
pub fn file_type_name(ftype: u32) -> String {
    let name = match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        other => return format!("file type {other}"),
    };
    name.to_string()
}

/// Limits that keep a hostile header from costing memory or time.
const MAX_KEYS: u64 = 1 << 20;
const MAX_KEY_LEN: u64 = 1 << 16;
const MAX_STRING_KEPT: u64 = 1 << 20;

/// A metadata value kvlab keeps (numbers, short strings); everything else is skipped.
#[derive(Debug, Clone)]
enum Value {
    Int(i128),
    Float,
    Str(String),
    Ints(Vec<i128>),
    Other,
}

/// Reads the metadata of the GGUF file at `path`.
pub fn read_summary(path: &Path) -> Result<GgufSummary, GgufError> {
    let shown = path.display().to_string();
    let io = |source| GgufError::Io {
        path: shown.clone(),
        source,
    };
    // Looked at before opening: opening a FIFO blocks until someone writes to it.
    let kind = std::fs::metadata(path).map_err(io)?;
    if let Some(what) = not_a_regular_file(&kind) {
        return Err(GgufError::NotGguf {
            path: shown,
            reason: format!("it is {what}, not a regular file"),
        });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(what) = not_a_regular_file(&meta) {
        return Err(GgufError::NotGguf {
            path: shown,
            reason: format!("it is {what}, not a regular file"),
        });
    }
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        size: meta.len(),
        pos: 0,
    };
    parse(&mut r).map_err(|e| match e {
        ParseError::Io(source) if source.kind() != std::io::ErrorKind::UnexpectedEof => {
            GgufError::Io {
                path: shown.clone(),
                source,
            }
        }
        ParseError::Io(_) => GgufError::NotGguf {
            path: shown.clone(),
            reason: format!(
                "its metadata is cut off after {} bytes; the file may be truncated",
                meta.len()
            ),
        },
        ParseError::Bad(reason) => GgufError::NotGguf {
            path: shown.clone(),
            reason,
        },
    })
}

/// What a file that is not a regular file is, in words ("a folder", "a named pipe (FIFO)"), or
/// `None` for a regular file. Reading such a file can block forever (a FIFO) or never end
/// (`/dev/zero`), so model, experiment and session paths must be regular files.
pub fn not_a_regular_file(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a named pipe (FIFO)");
        }
        if t.is_char_device() || t.is_block_device() {
            return Some("a device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a regular file")
}

/// Reads the metadata from bytes in memory (tests, and files already read).
pub fn summary_from_bytes(bytes: &[u8]) -> Result<GgufSummary, String> {
    let mut r = Reader {
        inner: std::io::Cursor::new(bytes),
        size: bytes.len() as u64,
        pos: 0,
    };
    parse(&mut r).map_err(|e| match e {
        ParseError::Io(e) => e.to_string(),
        ParseError::Bad(reason) => reason,
    })
}

enum ParseError {
    Io(std::io::Error),
    Bad(String),
}

impl From<std::io::Error> for ParseError {
    fn from(e: std::io::Error) -> Self {
        ParseError::Io(e)
    }
}

struct Reader<R> {
    inner: R,
    size: u64,
    pos: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    /// A length that must fit in what is left of the file.
    fn len(&mut self, what: &str, unit: u64) -> Result<u64, ParseError> {
        let n = self.u64()?;
        let left = self.size.saturating_sub(self.pos);
        if n.checked_mul(unit).is_none_or(|b| b > left) {
            return Err(ParseError::Bad(format!(
                "{what} of {n} items at byte {} runs past the end of the file; the file may be truncated",
                self.pos
            )));
        }
        Ok(n)
    }
    fn skip(&mut self, n: u64) -> Result<(), ParseError> {
        let n = i64::try_from(n).map_err(|_| ParseError::Bad("length overflow".into()))?;
        self.inner.seek_relative(n)?;
        self.pos += n as u64;
        if self.pos > self.size {
            return Err(ParseError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }
    fn string(&mut self, keep_up_to: u64) -> Result<Option<String>, ParseError> {
        let n = self.len("a string", 1)?;
        if n > keep_up_to {
            self.skip(n)?;
            return Ok(None);
        }
        let mut b = vec![0u8; n as usize];
        self.inner.read_exact(&mut b)?;
        self.pos += n;
        Ok(Some(String::from_utf8_lossy(&b).into_owned()))
    }
    fn scalar_int(&mut self, ty: u32) -> Result<Option<i128>, ParseError> {
        Ok(Some(match ty {
            0 => u8::from_le_bytes(self.bytes()?) as i128,
            1 => i8::from_le_bytes(self.bytes()?) as i128,
            2 => u16::from_le_bytes(self.bytes()?) as i128,
            3 => i16::from_le_bytes(self.bytes()?) as i128,
            4 => u32::from_le_bytes(self.bytes()?) as i128,
            5 => i32::from_le_bytes(self.bytes()?) as i128,
            7 => u8::from_le_bytes(self.bytes()?) as i128,
            10 => u64::from_le_bytes(self.bytes()?) as i128,
            11 => i64::from_le_bytes(self.bytes()?) as i128,
            _ => return Ok(None),
        }))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, ParseError> {
        if let Some(i) = self.scalar_int(ty)? {
            return Ok(Value::Int(i));
        }
        match ty {
            6 => {
                self.skip(4)?;
                Ok(Value::Float)
            }
            12 => {
                self.skip(8)?;
                Ok(Value::Float)
            }
            8 => Ok(self
                .string(MAX_STRING_KEPT)?
                .map(Value::Str)
                .unwrap_or(Value::Other)),
            9 => {
                if depth > 2 {
                    return Err(ParseError::Bad("arrays nested too deeply".into()));
                }
                let elem = self.u32()?;
                let fixed = fixed_size(elem);
                let n = self.len("an array", fixed.unwrap_or(8))?;
                match fixed {
                    // Small integer arrays (per-layer head counts) are kept; the rest skipped.
                    Some(_) if elem != 6 && elem != 12 && n <= 4096 => {
                        let mut v = Vec::with_capacity(n as usize);
                        for _ in 0..n {
                            v.push(self.scalar_int(elem)?.unwrap_or(0));
                        }
                        Ok(Value::Ints(v))
                    }
                    Some(w) => {
                        self.skip(n * w)?;
                        Ok(Value::Other)
                    }
                    None => {
                        for _ in 0..n {
                            self.value(elem, depth + 1)?;
                        }
                        Ok(Value::Other)
                    }
                }
            }
            other => Err(ParseError::Bad(format!(
                "unknown metadata value type {other} at byte {}",
                self.pos
            ))),
        }
    }
}

/// Byte size of a fixed-size GGUF value type.
fn fixed_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

fn parse<R: Read + Seek>(r: &mut Reader<R>) -> Result<GgufSummary, ParseError> {
    let magic: [u8; 4] = r
        .bytes()
        .map_err(|_| ParseError::Bad(format!("the file has only {} bytes", r.size)))?;
    if &magic != b"GGUF" {
        let start: String = magic
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        return Err(ParseError::Bad(format!(
            "it starts with {start:?}, not \"GGUF\""
        )));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(ParseError::Bad(format!(
            "GGUF version {version} is not one llama.cpp reads (2 or 3)"
        )));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    if kv_count > MAX_KEYS {
        return Err(ParseError::Bad(format!(
            "it claims {kv_count} metadata keys"
        )));
    }
    let mut kv = std::collections::HashMap::new();
    for _ in 0..kv_count {
        let at = r.pos;
        let key = r
            .string(MAX_KEY_LEN)?
            .ok_or_else(|| ParseError::Bad(format!("an overlong metadata key at byte {at}")))?;
        if key.is_empty() {
            return Err(ParseError::Bad(format!(
                "an empty metadata key at byte {at}"
            )));
        }
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        if kv.insert(key.clone(), value).is_some() {
            return Err(ParseError::Bad(format!(
                "the metadata key {key:?} appears twice"
            )));
        }
    }
    let text = |k: &str| match kv.get(k) {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let int = |k: &str| match kv.get(k) {
        Some(Value::Int(i)) => u32::try_from(*i).ok(),
        Some(Value::Ints(v)) => v.iter().copied().max().and_then(|i| u32::try_from(i).ok()),
        _ => None,
    };
    let architecture = text("general.architecture")
        .ok_or_else(|| ParseError::Bad("it has no general.architecture".into()))?;
    let a = |k: &str| format!("{architecture}.{k}");
    check_llama_limits(&kv, &architecture).map_err(ParseError::Bad)?;
    let n_embd = int(&a("embedding_length")).unwrap_or(0);
    let n_head = int(&a("attention.head_count")).unwrap_or(0);
    let n_head_kv = match kv.get(&a("attention.head_count_kv")) {
        Some(Value::Int(i)) => vec![u32::try_from(*i).unwrap_or(0)],
        Some(Value::Ints(v)) => v.iter().map(|&i| u32::try_from(i).unwrap_or(0)).collect(),
        _ => Vec::new(),
    };
    let head_dim = n_embd.checked_div(n_head).unwrap_or(0);
    Ok(GgufSummary {
        file_size: r.size,
        version,
        tensor_count,
        name: text("general.name"),
        quantization: int("general.file_type").map(file_type_name),
        n_layer: int(&a("block_count")).unwrap_or(0),
        n_embd,
        n_head,
        n_head_kv,
        head_dim_k: int(&a("attention.key_length")).unwrap_or(head_dim),
        head_dim_v: int(&a("attention.value_length")).unwrap_or(head_dim),
        n_ctx_train: int(&a("context_length")).unwrap_or(0),
        has_chat_template: kv.contains_key("tokenizer.chat_template"),
        architecture,
    })
}

/// Checks the header values on which llama.cpp asserts (`GGML_ASSERT` in `load_hparams`, which
/// aborts the whole process) instead of returning an error: a file that passes loads or fails
/// with llama.cpp's own message. Values of the wrong type are left to llama.cpp, which refuses
/// them with an error.
fn check_llama_limits(
    kv: &std::collections::HashMap<String, Value>,
    arch: &str,
) -> Result<(), String> {
    let key = |k: &str| format!("{arch}.{k}");
    // The largest integer a key holds (per-layer arrays: their largest element).
    let raw = |k: &str| -> Option<i128> {
        match kv.get(&key(k)) {
            Some(Value::Int(i)) => Some(*i),
            Some(Value::Ints(v)) => v.iter().copied().max(),
            _ => None,
        }
    };
    let block_count = key("block_count");
    let n_layer = match raw("block_count") {
        None => {
            return Err(format!(
                "it has no {block_count}; llama.cpp needs the number of layers"
            ));
        }
        Some(n) if !(1..=LLAMA_MAX_LAYERS as i128).contains(&n) => {
            return Err(format!(
                "{block_count} is {n}; llama.cpp accepts 1 to {LLAMA_MAX_LAYERS} layers (LLAMA_MAX_LAYERS)"
            ));
        }
        Some(n) => n,
    };
    // Not llama.cpp's asserts but kvlab's memory estimate: no model comes near these, and with
    // them one KV cell costs at most 2^43 bytes, so estimates stay far from overflowing.
    for (k, max) in [
        ("attention.head_count", MAX_HEADS),
        ("attention.head_count_kv", MAX_HEADS),
        ("attention.key_length", MAX_HEAD_DIM),
        ("attention.value_length", MAX_HEAD_DIM),
        ("embedding_length", MAX_EMBD),
    ] {
        let smallest = match kv.get(&key(k)) {
            Some(Value::Ints(v)) => v.iter().copied().min(),
            _ => raw(k),
        };
        if let Some(n) = smallest.filter(|&n| n < 0).or(raw(k))
            && !(0..=max as i128).contains(&n)
        {
            return Err(format!(
                "{} is {n}, not a plausible value (kvlab accepts 0 to {max})",
                key(k)
            ));
        }
    }
    if let Some(n) = raw("nextn_predict_layers")
        && !(0..=n_layer).contains(&n)
    {
        return Err(format!(
            "{} is {n}, more than the {n_layer} layers in {block_count}",
            key("nextn_predict_layers")
        ));
    }
    let experts = raw("expert_count").unwrap_or(0);
    if !(0..=LLAMA_MAX_EXPERTS as i128).contains(&experts) {
        return Err(format!(
            "{} is {experts}; llama.cpp accepts at most {LLAMA_MAX_EXPERTS} experts (LLAMA_MAX_EXPERTS)",
            key("expert_count")
        ));
    }
    let used = raw("expert_used_count").unwrap_or(0);
    let groups = raw("expert_group_count").unwrap_or(0);
    let group_used = raw("expert_group_used_count").unwrap_or(0);
    let bad = |what: String| Err(format!("{what}, which llama.cpp cannot load"));
    if !(0..=experts).contains(&used) {
        return bad(format!(
            "{} is {used} but {} is {experts}",
            key("expert_used_count"),
            key("expert_count")
        ));
    }
    if experts > 0 {
        if used == 0 {
            return bad(format!(
                "{} is {experts} but {} is 0 or missing",
                key("expert_count"),
                key("expert_used_count")
            ));
        }
        if !(0..experts).contains(&groups) {
            return bad(format!(
                "{} is {groups}, not below {} ({experts})",
                key("expert_group_count"),
                key("expert_count")
            ));
        }
        if groups > 1 && (experts % groups != 0 || !(1..groups).contains(&group_used)) {
            return bad(format!(
                "{} is {groups} and {} is {group_used} for {experts} experts",
                key("expert_group_count"),
                key("expert_group_used_count")
            ));
        }
    } else if groups != 0 {
        return bad(format!(
            "{} is {groups} in a model without experts",
            key("expert_group_count")
        ));
    }
    if let Some(Value::Str(t)) = kv.get(&key("rope.scaling.type"))
        && !ROPE_SCALING_TYPES.contains(&t.as_str())
    {
        return Err(format!(
            "{} is {t:?}; llama.cpp knows {}",
            key("rope.scaling.type"),
            ROPE_SCALING_TYPES.join(", ")
        ));
    }
    for sub in ["posnet.block_count", "convnext.block_count"] {
        if let Some(n) = raw(sub)
            && n > n_layer
        {
            return bad(format!(
                "{} is {n}, more than {block_count} ({n_layer})",
                key(sub)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF header writer for tests.
    #[derive(Default)]
    struct Gguf {
        kvs: Vec<u8>,
        n: u64,
    }

    impl Gguf {
        fn key(&mut self, k: &str, ty: u32) {
            self.kvs.extend((k.len() as u64).to_le_bytes());
            self.kvs.extend(k.as_bytes());
            self.kvs.extend(ty.to_le_bytes());
            self.n += 1;
        }
        fn str(mut self, k: &str, v: &str) -> Self {
            self.key(k, 8);
            self.kvs.extend((v.len() as u64).to_le_bytes());
            self.kvs.extend(v.as_bytes());
            self
        }
        fn u32(mut self, k: &str, v: u32) -> Self {
            self.key(k, 4);
            self.kvs.extend(v.to_le_bytes());
            self
        }
        fn f32(mut self, k: &str, v: f32) -> Self {
            self.key(k, 6);
            self.kvs.extend(v.to_le_bytes());
            self
        }
        fn i32s(mut self, k: &str, v: &[i32]) -> Self {
            self.key(k, 9);
            self.kvs.extend(5u32.to_le_bytes());
            self.kvs.extend((v.len() as u64).to_le_bytes());
            for x in v {
                self.kvs.extend(x.to_le_bytes());
            }
            self
        }
        fn strs(mut self, k: &str, v: &[&str]) -> Self {
            self.key(k, 9);
            self.kvs.extend(8u32.to_le_bytes());
            self.kvs.extend((v.len() as u64).to_le_bytes());
            for s in v {
                self.kvs.extend((s.len() as u64).to_le_bytes());
                self.kvs.extend(s.as_bytes());
            }
            self
        }
        fn bytes(&self) -> Vec<u8> {
            let mut b = b"GGUF".to_vec();
            b.extend(3u32.to_le_bytes());
            b.extend(7u64.to_le_bytes());
            b.extend(self.n.to_le_bytes());
            b.extend(&self.kvs);
            b
        }
    }

    fn llama_like() -> Gguf {
        Gguf::default()
            .str("general.architecture", "llama")
            .str("general.name", "Tiny")
            .u32("general.file_type", 3)
            .strs("tokenizer.ggml.tokens", &["<s>", "a", "b"])
            .u32("llama.block_count", 30)
            .u32("llama.embedding_length", 576)
            .u32("llama.attention.head_count", 9)
            .u32("llama.attention.head_count_kv", 3)
            .f32("llama.rope.freq_base", 10000.0)
            .u32("llama.context_length", 8192)
            .str("tokenizer.chat_template", "{{ messages }}")
    }

    #[test]
    fn reads_what_the_estimate_needs() {
        let s = summary_from_bytes(&llama_like().bytes()).unwrap();
        assert_eq!(s.architecture, "llama");
        assert_eq!(s.name.as_deref(), Some("Tiny"));
        assert_eq!(s.quantization.as_deref(), Some("Q4_1"));
        assert_eq!((s.n_layer, s.n_embd, s.n_head), (30, 576, 9));
        assert_eq!(s.n_head_kv, vec![3]);
        assert_eq!((s.head_dim_k, s.head_dim_v), (64, 64));
        assert_eq!(s.n_ctx_train, 8192);
        assert!(s.has_chat_template);
        assert_eq!(s.tensor_count, 7);
        // SmolLM2-135M: 30 layers × 3 KV heads × 64 × (K + V) × 2 bytes = 23,040 B, what
        // llama.cpp's state bytes measure per cell.
        assert_eq!(s.kv_bytes_per_cell(), 23_040);
    }

    #[test]
    fn per_layer_kv_heads_and_explicit_head_sizes() {
        let g = Gguf::default()
            .str("general.architecture", "openelm")
            .u32("openelm.block_count", 3)
            .u32("openelm.embedding_length", 1280)
            .i32s("openelm.attention.head_count", &[4, 8, 16])
            .i32s("openelm.attention.head_count_kv", &[1, 2, 4])
            .u32("openelm.attention.key_length", 64)
            .u32("openelm.attention.value_length", 32);
        let s = summary_from_bytes(&g.bytes()).unwrap();
        assert_eq!(s.n_head, 16);
        assert_eq!(s.n_head_kv, vec![1, 2, 4]);
        assert_eq!(s.kv_bytes_per_cell(), 2 * (1 + 2 + 4) * (64 + 32));
    }

    #[test]
    fn says_what_is_wrong() {
        let bytes = llama_like().bytes();
        let err = summary_from_bytes(&bytes[..bytes.len() - 20]).unwrap_err();
        assert!(
            err.contains("past the end") || err.contains("fill"),
            "{err}"
        );
        assert!(
            summary_from_bytes(b"GGU")
                .unwrap_err()
                .contains("only 3 bytes")
        );
        assert!(
            summary_from_bytes(b"{\"json\": 1}")
                .unwrap_err()
                .contains("not \"GGUF\"")
        );
        let mut v1 = bytes.clone();
        v1[4] = 1;
        assert!(summary_from_bytes(&v1).unwrap_err().contains("version 1"));
        let no_arch = Gguf::default().u32("llama.block_count", 3).bytes();
        assert!(
            summary_from_bytes(&no_arch)
                .unwrap_err()
                .contains("architecture")
        );
    }

    #[test]
    fn values_llama_cpp_asserts_on_are_refused_before_it_sees_them() {
        let err = |g: Gguf| summary_from_bytes(&g.bytes()).unwrap_err();
        let llama = || Gguf::default().str("general.architecture", "llama");
        let layers = |n| llama().u32("llama.block_count", n);
        assert!(err(llama()).contains("no llama.block_count"));
        let e = err(layers(0));
        assert!(
            e.contains("llama.block_count is 0; llama.cpp accepts 1 to 512"),
            "{e}"
        );
        assert!(err(layers(513)).contains("LLAMA_MAX_LAYERS"));
        assert!(summary_from_bytes(&layers(512).bytes()).is_ok());
        assert!(summary_from_bytes(&layers(1).bytes()).is_ok());
        let e = err(layers(30).u32("llama.expert_count", 1025));
        assert!(e.contains("expert_count is 1025"), "{e}");
        let e = err(layers(30).u32("llama.expert_count", 8));
        assert!(e.contains("expert_used_count is 0 or missing"), "{e}");
        let e = err(layers(30)
            .u32("llama.expert_count", 8)
            .u32("llama.expert_used_count", 9));
        assert!(e.contains("expert_used_count is 9"), "{e}");
        let e = err(layers(30)
            .u32("llama.expert_count", 8)
            .u32("llama.expert_used_count", 2)
            .u32("llama.expert_group_count", 3));
        assert!(e.contains("expert_group_count is 3"), "{e}");
        let moe = layers(30)
            .u32("llama.expert_count", 8)
            .u32("llama.expert_used_count", 2)
            .u32("llama.expert_group_count", 4)
            .u32("llama.expert_group_used_count", 2);
        assert!(summary_from_bytes(&moe.bytes()).is_ok());
        let e = err(layers(30).str("llama.rope.scaling.type", "YaRN"));
        assert!(e.contains("rope.scaling.type is \"YaRN\""), "{e}");
        assert!(
            summary_from_bytes(&layers(30).str("llama.rope.scaling.type", "yarn").bytes()).is_ok()
        );
        let e = err(layers(30).u32("llama.nextn_predict_layers", 31));
        assert!(e.contains("nextn_predict_layers is 31"), "{e}");
        let e = err(layers(30).u32("llama.attention.head_count_kv", u32::MAX));
        assert!(e.contains("head_count_kv is 4294967295"), "{e}");
        let e = err(layers(3).i32s("llama.attention.head_count_kv", &[1, -1, 2]));
        assert!(e.contains("head_count_kv is -1"), "{e}");
        let e = err(layers(30).str("general.name", "a").str("general.name", "b"));
        assert!(e.contains("\"general.name\" appears twice"), "{e}");
        let e = err(layers(30).str("", "x"));
        assert!(e.contains("empty metadata key"), "{e}");
    }

    #[test]
    fn estimates_saturate_instead_of_overflowing() {
        let per_cell = kv_bytes_per_cell(std::iter::repeat_n(u32::MAX, 600), u32::MAX, u32::MAX);
        assert_eq!(per_cell, u64::MAX);
        assert_eq!(kv_cells_for_run(u64::MAX, u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(kv_cells_for_run(2, 0, u64::MAX), u64::MAX);
    }

    #[test]
    fn cells_for_a_run_match_the_lab() {
        // 2 variants + 8 conditions, a 77-token prompt, 100 tokens: 256 cells per sequence.
        assert_eq!(kv_cells_for_run(10, 77, 100), 2560);
        assert_eq!(kv_cells_for_run(1, 249, 0), 512);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = summary_from_bytes(&bytes);
        }

        #[test]
        fn corrupted_headers_never_panic(pos in 0usize..400, byte in proptest::num::u8::ANY) {
            let mut b = llama_like().bytes();
            let i = pos % b.len();
            b[i] = byte;
            let _ = summary_from_bytes(&b);
        }
    }
}
