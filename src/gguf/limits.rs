//! Header values on which llama.cpp asserts (aborting the whole process) instead of returning
//! an error, and bounds that keep kvlab's memory estimate from overflowing.

use std::collections::HashMap;

use super::reader::Value;

/// llama.cpp's `LLAMA_MAX_LAYERS` (llama-hparams.h): `<arch>.block_count` must be in 1..=this, or
/// llama.cpp aborts the process (`GGML_ASSERT`) while loading.
pub const LLAMA_MAX_LAYERS: u32 = 512;
/// llama.cpp's `LLAMA_MAX_EXPERTS` (llama-hparams.h): the most `<arch>.expert_count` may say.
pub const LLAMA_MAX_EXPERTS: u32 = 1024;
/// Attention heads (KV heads) a header may name; no model has near this many.
pub(super) const MAX_HEADS: u32 = 1 << 16;
/// Channels per head a header may name.
pub(super) const MAX_HEAD_DIM: u32 = 1 << 16;
/// Embedding size a header may name.
pub(super) const MAX_EMBD: u32 = 1 << 24;
/// The RoPE scaling names llama.cpp knows (`LLAMA_ROPE_SCALING_TYPES`); any other aborts it.
pub(super) const ROPE_SCALING_TYPES: [&str; 4] = ["none", "linear", "yarn", "longrope"];

/// Checks the header values on which llama.cpp asserts (`GGML_ASSERT` in `load_hparams`, which
/// aborts the whole process) instead of returning an error: a file that passes loads or fails
/// with llama.cpp's own message. Values of the wrong type are left to llama.cpp, which refuses
/// them with an error.
pub(super) fn check_llama_limits(kv: &HashMap<String, Value>, arch: &str) -> Result<(), String> {
    let keys = Keys { kv, arch };
    let n_layer = check_layers(&keys)?;
    check_sizes(&keys)?;
    check_experts(&keys)?;
    let k = |k: &str| keys.key(k);
    if let Some(Value::Str(t)) = kv.get(&k("rope.scaling.type"))
        && !ROPE_SCALING_TYPES.contains(&t.as_str())
    {
        return Err(format!(
            "{} is {t:?}; llama.cpp knows {}",
            k("rope.scaling.type"),
            ROPE_SCALING_TYPES.join(", ")
        ));
    }
    for sub in ["posnet.block_count", "convnext.block_count"] {
        if let Some(n) = keys.raw(sub)
            && n > n_layer
        {
            return Err(format!(
                "{} is {n}, more than {} ({n_layer}), which llama.cpp cannot load",
                k(sub),
                k("block_count")
            ));
        }
    }
    Ok(())
}

/// The metadata of one architecture's keys.
struct Keys<'a> {
    kv: &'a HashMap<String, Value>,
    arch: &'a str,
}

impl Keys<'_> {
    /// The full name of an architecture key ("llama.block_count").
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    /// The largest integer a key holds (per-layer arrays: their largest element).
    fn raw(&self, k: &str) -> Option<i128> {
        match self.kv.get(&self.key(k)) {
            Some(Value::Int(i)) => Some(*i),
            Some(Value::Ints(v)) => v.iter().copied().max(),
            _ => None,
        }
    }
    /// The smallest integer a key holds.
    fn smallest(&self, k: &str) -> Option<i128> {
        match self.kv.get(&self.key(k)) {
            Some(Value::Ints(v)) => v.iter().copied().min(),
            _ => self.raw(k),
        }
    }
}

/// `block_count` (present, 1..=LLAMA_MAX_LAYERS) and `nextn_predict_layers` (at most that).
fn check_layers(keys: &Keys<'_>) -> Result<i128, String> {
    let block_count = keys.key("block_count");
    let n_layer = match keys.raw("block_count") {
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
    if let Some(n) = keys.raw("nextn_predict_layers")
        && !(0..=n_layer).contains(&n)
    {
        return Err(format!(
            "{} is {n}, more than the {n_layer} layers in {block_count}",
            keys.key("nextn_predict_layers")
        ));
    }
    Ok(n_layer)
}

/// Not llama.cpp's asserts but kvlab's memory estimate: no model comes near these, and with them
/// one KV cell costs at most 2^43 bytes, so estimates stay far from overflowing.
fn check_sizes(keys: &Keys<'_>) -> Result<(), String> {
    for (k, max) in [
        ("attention.head_count", MAX_HEADS),
        ("attention.head_count_kv", MAX_HEADS),
        ("attention.key_length", MAX_HEAD_DIM),
        ("attention.value_length", MAX_HEAD_DIM),
        ("embedding_length", MAX_EMBD),
    ] {
        if let Some(n) = keys.smallest(k).filter(|&n| n < 0).or(keys.raw(k))
            && !(0..=max as i128).contains(&n)
        {
            return Err(format!(
                "{} is {n}, not a plausible value (kvlab accepts 0 to {max})",
                keys.key(k)
            ));
        }
    }
    Ok(())
}

/// Expert counts of mixture-of-experts models, as llama.cpp's loader asserts them.
fn check_experts(keys: &Keys<'_>) -> Result<(), String> {
    let key = |k: &str| keys.key(k);
    let experts = keys.raw("expert_count").unwrap_or(0);
    if !(0..=LLAMA_MAX_EXPERTS as i128).contains(&experts) {
        return Err(format!(
            "{} is {experts}; llama.cpp accepts at most {LLAMA_MAX_EXPERTS} experts (LLAMA_MAX_EXPERTS)",
            key("expert_count")
        ));
    }
    let used = keys.raw("expert_used_count").unwrap_or(0);
    let groups = keys.raw("expert_group_count").unwrap_or(0);
    let group_used = keys.raw("expert_group_used_count").unwrap_or(0);
    let bad = |what: String| Err(format!("{what}, which llama.cpp cannot load"));
    if !(0..=experts).contains(&used) {
        return bad(format!(
            "{} is {used} but {} is {experts}",
            key("expert_used_count"),
            key("expert_count")
        ));
    }
    if experts == 0 {
        if groups != 0 {
            return bad(format!(
                "{} is {groups} in a model without experts",
                key("expert_group_count")
            ));
        }
        return Ok(());
    }
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
    Ok(())
}
