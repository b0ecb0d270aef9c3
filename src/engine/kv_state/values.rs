//! ggml type ids: their names for messages, and decoding rows as numbers: the float types here,
//! the quantized cache types through ggml's own conversions ([`crate::engine::ggml_types`]).

use half::{bf16, f16};

use super::KvStateError;
use crate::engine::ggml_types;

/// ggml type ids kvlab knows by name (`enum ggml_type` in ggml.h).
pub(super) const GGML_TYPE_F32: i32 = 0;
pub(super) const GGML_TYPE_F16: i32 = 1;
pub(super) const GGML_TYPE_BF16: i32 = 30;

/// A short name for a ggml type id, for messages.
pub fn ggml_type_name(t: i32) -> String {
    match t {
        0 => "f32".into(),
        1 => "f16".into(),
        2 => "q4_0".into(),
        3 => "q4_1".into(),
        6 => "q5_0".into(),
        7 => "q5_1".into(),
        8 => "q8_0".into(),
        20 => "iq4_nl".into(),
        30 => "bf16".into(),
        other => format!("ggml type {other}"),
    }
}

pub(super) fn element_size(t: i32) -> Option<usize> {
    match t {
        GGML_TYPE_F32 => Some(4),
        GGML_TYPE_F16 | GGML_TYPE_BF16 => Some(2),
        _ => None,
    }
}
pub(super) fn decode_values(t: i32, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), KvStateError> {
    match t {
        GGML_TYPE_F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        GGML_TYPE_F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        GGML_TYPE_BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        other if ggml_types::is_convertible_quant(other) => {
            ggml_types::dequantize(other, bytes, out).map_err(KvStateError::Malformed)?
        }
        other => return Err(KvStateError::UnreadableType(ggml_type_name(other))),
    }
    Ok(())
}

/// Writes `values` as ggml type `t`. A value read from a row and written back is the same bytes
/// (f16 and bf16 widen to f32 exactly and narrow back exactly; a quantized block's largest value
/// sets its scale again, so its bytes come back too).
pub(super) fn encode_values(t: i32, values: &[f32], out: &mut [u8]) -> Result<(), KvStateError> {
    if ggml_types::is_convertible_quant(t) {
        return ggml_types::quantize(t, values, out).map_err(KvStateError::Malformed);
    }
    let size = element_size(t).ok_or_else(|| KvStateError::UnreadableType(ggml_type_name(t)))?;
    if out.len() != values.len() * size {
        return Err(KvStateError::Mismatch(format!(
            "{} values do not fill a row of {} bytes of {}",
            values.len(),
            out.len(),
            ggml_type_name(t)
        )));
    }
    for (v, o) in values.iter().zip(out.chunks_exact_mut(size)) {
        match t {
            GGML_TYPE_F32 => o.copy_from_slice(&v.to_le_bytes()),
            GGML_TYPE_F16 => o.copy_from_slice(&f16::from_f32(*v).to_le_bytes()),
            _ => o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes()),
        }
    }
    Ok(())
}
