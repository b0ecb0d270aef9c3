//! The header walk: magic, version, counts and metadata, and the summary made from them.

use std::collections::HashMap;
use std::io::{Read, Seek};

use super::GgufSummary;
use super::file_type_name;
use super::limits::check_llama_limits;
use super::reader::{MAX_KEY_LEN, MAX_KEYS, ParseError, Reader, Value};
use super::tensors::{GGUF_DEFAULT_ALIGNMENT, read_tensor_infos};

/// Reads the header and summarizes it.
pub(super) fn parse<R: Read + Seek>(r: &mut Reader<R>) -> Result<GgufSummary, ParseError> {
    let (version, tensor_count, kv_count) = preamble(r)?;
    let kv = metadata(r, kv_count)?;
    let architecture = match kv.get("general.architecture") {
        Some(Value::Str(s)) => s.clone(),
        _ => return Err(ParseError::Bad("it has no general.architecture".into())),
    };
    check_llama_limits(&kv, &architecture).map_err(ParseError::Bad)?;
    let extent = read_tensor_infos(r, tensor_count, alignment(&kv)?)?;
    let mut s = summarize(&kv, architecture, version, tensor_count, r.size);
    s.data_offset = extent.start;
    s.data_end = extent.end;
    Ok(s)
}

/// `general.alignment` (default 32), a power of two as llama.cpp requires.
fn alignment(kv: &HashMap<String, Value>) -> Result<u64, ParseError> {
    match kv.get("general.alignment") {
        None => Ok(GGUF_DEFAULT_ALIGNMENT),
        Some(Value::Int(a))
            if *a > 0 && *a <= u32::MAX as i128 && (*a as u64).is_power_of_two() =>
        {
            Ok(*a as u64)
        }
        Some(Value::Int(a)) => Err(ParseError::Bad(format!(
            "general.alignment is {a}, not a power of 2"
        ))),
        Some(_) => Err(ParseError::Bad(
            "general.alignment is not an integer".into(),
        )),
    }
}

/// Magic, version, tensor count and metadata key count.
fn preamble<R: Read + Seek>(r: &mut Reader<R>) -> Result<(u32, u64, u64), ParseError> {
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
    Ok((version, tensor_count, kv_count))
}

/// The metadata key/value pairs (values kvlab does not use are skipped).
fn metadata<R: Read + Seek>(
    r: &mut Reader<R>,
    kv_count: u64,
) -> Result<HashMap<String, Value>, ParseError> {
    let mut kv = HashMap::new();
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
    Ok(kv)
}

/// What the metadata says about the model.
fn summarize(
    kv: &HashMap<String, Value>,
    architecture: String,
    version: u32,
    tensor_count: u64,
    file_size: u64,
) -> GgufSummary {
    let text = |k: &str| match kv.get(k) {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let int = |k: &str| match kv.get(k) {
        Some(Value::Int(i)) => u32::try_from(*i).ok(),
        Some(Value::Ints(v)) => v.iter().copied().max().and_then(|i| u32::try_from(i).ok()),
        _ => None,
    };
    let a = |k: &str| format!("{architecture}.{k}");
    let n_embd = int(&a("embedding_length")).unwrap_or(0);
    let n_head = int(&a("attention.head_count")).unwrap_or(0);
    let n_head_kv = match kv.get(&a("attention.head_count_kv")) {
        Some(Value::Int(i)) => vec![u32::try_from(*i).unwrap_or(0)],
        Some(Value::Ints(v)) => v.iter().map(|&i| u32::try_from(i).unwrap_or(0)).collect(),
        _ => Vec::new(),
    };
    let head_dim = n_embd.checked_div(n_head).unwrap_or(0);
    GgufSummary {
        file_size,
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
        sliding_window: int(&a("attention.sliding_window")),
        recurrent: [".ssm.", ".wkv.", ".shortconv."]
            .iter()
            .any(|part| kv.keys().any(|k| k.starts_with(&a(&part[1..])))),
        architecture,
        ..GgufSummary::default()
    }
}
