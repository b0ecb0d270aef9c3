//! Whether a run fits the model and this machine, checked before anything is allocated: the
//! tokens asked for must fit the model's trained context, and the KV cache of every sequence
//! must fit in memory. Without this a forged or careless spec allocates gigabytes and fails
//! late (or never returns).

use crate::engine::{CacheTypes, LoadedModel, ModelInfo};
use crate::experiment::spec::{ExperimentSpec, SpecError};

/// Bytes of K and V per cache cell (one token of one sequence) with caches of the given types,
/// from the model's shape.
pub fn kv_bytes_per_cell(info: &ModelInfo, cache: CacheTypes) -> u64 {
    let (dk, dv) = info.head_dims();
    crate::gguf::kv_bytes_per_cell_as(
        std::iter::repeat_n(info.n_head_kv, info.n_layer as usize),
        dk,
        dv,
        cache,
    )
}

/// This machine's memory in bytes (Linux: MemTotal; elsewhere unknown, and not checked).
pub fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Checks `spec` against `model` and this machine's memory.
pub fn check(model: &LoadedModel, spec: &ExperimentSpec) -> Result<(), SpecError> {
    let info = model.info();
    spec.check_fits(
        info.n_ctx_train,
        kv_bytes_per_cell(info, spec.cache),
        model.fingerprint().file_size,
        host_memory(),
    )
}
