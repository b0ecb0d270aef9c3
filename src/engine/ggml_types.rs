//! ggml's own conversions between its quantized block types and `f32`, for the K/V rows of
//! quantized caches (`q8_0`, `q4_0`, …): reading them as numbers (mean, noise, per-head edits,
//! the K/V delta) and writing numbers back.
//!
//! Why ggml's and not kvlab's: the block layouts, scales and rounding are ggml's, and a
//! hand-written quantizer would drift from what llama.cpp itself writes into the cache.
//! `llama-cpp-2` does not expose them, so they are reached through `llama-cpp-sys-2` here, behind
//! two safe functions that check every length before a pointer is formed.

use llama_cpp_sys_2 as sys;

/// The quantized types llama.cpp accepts for a KV cache, whose conversions need no importance
/// matrix (ggml type ids): q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl.
const CACHE_QUANT_TYPES: [i32; 6] = [2, 3, 6, 7, 8, 20];

/// Whether kvlab converts rows of ggml type `t` through ggml.
pub fn is_convertible_quant(t: i32) -> bool {
    CACHE_QUANT_TYPES.contains(&t)
}

/// (values per block, bytes per block) of a convertible type.
fn block(t: i32) -> Option<(usize, usize)> {
    if !is_convertible_quant(t) {
        return None;
    }
    // SAFETY: `t` is one of ggml's own type ids (checked above); ggml_get_type_traits returns a
    // pointer into a static table that lives as long as the program.
    let traits = unsafe { sys::ggml_get_type_traits(t as sys::ggml_type).as_ref()? };
    Some((traits.blck_size as usize, traits.type_size))
}

/// Decodes one row of ggml type `t` into `out` (appended). `Err` says why not.
pub fn dequantize(t: i32, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), String> {
    let (per_block, block_bytes) = block(t).ok_or_else(|| format!("type {t} is not converted"))?;
    if block_bytes == 0 || !bytes.len().is_multiple_of(block_bytes) {
        return Err(format!(
            "{} bytes are not whole blocks of {block_bytes}",
            bytes.len()
        ));
    }
    let n = bytes.len() / block_bytes * per_block;
    // SAFETY: as in `block`; the table entry is static.
    let traits = unsafe { &*sys::ggml_get_type_traits(t as sys::ggml_type) };
    let to_float = traits.to_float.ok_or("no conversion to f32")?;
    let start = out.len();
    out.resize(start + n, 0.0);
    // SAFETY: `bytes` holds exactly n / per_block whole blocks of type `t`, and `out` has room
    // for the n values ggml writes.
    unsafe { to_float(bytes.as_ptr().cast(), out[start..].as_mut_ptr(), n as i64) };
    Ok(())
}

/// Encodes `values` as one row of ggml type `t` into `out`, whose length must be the row's.
pub fn quantize(t: i32, values: &[f32], out: &mut [u8]) -> Result<(), String> {
    let (per_block, block_bytes) = block(t).ok_or_else(|| format!("type {t} is not converted"))?;
    if per_block == 0 || !values.len().is_multiple_of(per_block) {
        return Err(format!(
            "{} values are not whole blocks of {per_block}",
            values.len()
        ));
    }
    if out.len() != values.len() / per_block * block_bytes {
        return Err(format!(
            "{} values do not fill a row of {} bytes",
            values.len(),
            out.len()
        ));
    }
    // SAFETY: `values` is whole blocks and `out` exactly their encoded size (checked above);
    // these types need no importance matrix, so a null one is allowed.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            t as sys::ggml_type,
            values.as_ptr(),
            out.as_mut_ptr().cast(),
            0,
            1,
            values.len() as i64,
            std::ptr::null(),
        )
    };
    if written != out.len() {
        return Err(format!("ggml wrote {written} bytes of {}", out.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trips_its_own_values() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 7.0).collect();
        let mut row = vec![0u8; 2 * 34];
        quantize(8, &values, &mut row).unwrap();
        let mut back = Vec::new();
        dequantize(8, &row, &mut back).unwrap();
        assert_eq!(back.len(), 64);
        for (a, b) in values.iter().zip(&back) {
            assert!((a - b).abs() < 0.02, "{a} vs {b}");
        }
        // Quantizing decoded values gives the same bytes: an untouched head stays as it was.
        let mut again = vec![0u8; row.len()];
        quantize(8, &back, &mut again).unwrap();
        assert_eq!(again, row);
    }

    #[test]
    fn wrong_lengths_and_types_are_refused() {
        let mut out = Vec::new();
        assert!(dequantize(8, &[0u8; 33], &mut out).is_err());
        assert!(dequantize(1, &[0u8; 34], &mut out).is_err());
        assert!(quantize(8, &[0.0; 31], &mut [0u8; 34]).is_err());
        assert!(quantize(2, &[0.0; 32], &mut [0u8; 17]).is_err());
        assert!(quantize(2, &[0.0; 32], &mut [0u8; 18]).is_ok());
    }
}
