//! The tensor infos that follow the metadata, and how far into the file the tensor data they
//! describe reaches.
//!
//! A download cut off inside the weights still has a complete, plausible header; without this
//! check the "Before loading" summary would describe such a file as a model and only llama.cpp's
//! loader would notice, after the user waited for it. The walk mirrors `gguf_init_from_file_impl`
//! (ggml/src/gguf.cpp): names, shapes and types are checked as llama.cpp checks them, offsets must
//! follow each other as it requires, and the data section starts at the next multiple of
//! `general.alignment` (default 32). Sizes use ggml's block sizes, kept in [`ggml_type_block`]
//! (a unit test in the engine compares the table with the linked ggml).

use std::collections::HashSet;
use std::io::{Read, Seek};

use super::reader::{ParseError, Reader};

/// llama.cpp's `GGUF_DEFAULT_ALIGNMENT`.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_NAME`: tensor names must be shorter.
const GGML_MAX_NAME: u64 = 64;
/// ggml's `GGML_MAX_DIMS`.
const GGML_MAX_DIMS: u32 = 4;
/// The fewest bytes one tensor info takes (empty name, no dimensions, type, offset).
const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;

/// ggml's block size and bytes per block of a tensor type id (`type_traits` in ggml.c of the
/// pinned llama.cpp), or `None` for an id it does not know or no longer reads.
pub fn ggml_type_block(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        40 => (64, 36),   // NVFP4
        41 => (128, 18),  // Q1_0
        42 => (64, 18),   // Q2_0
        _ => return None,
    })
}

/// Where the tensor data lies, from the tensor infos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DataExtent {
    /// Offset of the data section (after the infos, aligned).
    pub start: u64,
    /// The file size the data needs: the end of the last tensor's bytes.
    pub end: u64,
}

/// One tensor info's shape and type.
struct Info {
    name: String,
    ne: [u64; 4],
    ty: u32,
}

/// Reads `count` tensor infos and returns the extent of their data, refusing what llama.cpp
/// would refuse, and a file too short for the data, with the reason.
pub(super) fn read_tensor_infos<R: Read + Seek>(
    r: &mut Reader<R>,
    count: u64,
    alignment: u64,
) -> Result<DataExtent, ParseError> {
    let left = r.size.saturating_sub(r.pos);
    if count.checked_mul(MIN_TENSOR_INFO).is_none_or(|b| b > left) {
        return Err(ParseError::Bad(format!(
            "it claims {count} tensors, more than the {left} bytes after its metadata can \
             describe; the file may be truncated"
        )));
    }
    let mut names = HashSet::new();
    let mut expected_offset = 0u64;
    let mut end = 0u64;
    for i in 0..count {
        let info = read_info(r, i)?;
        let nbytes = tensor_bytes(&info)?;
        let offset = r.u64()?;
        if offset != expected_offset {
            return Err(ParseError::Bad(format!(
                "tensor '{}' has offset {offset}, where llama.cpp expects {expected_offset}",
                info.name
            )));
        }
        end = offset + nbytes;
        expected_offset = nbytes
            .checked_next_multiple_of(alignment)
            .and_then(|n| n.checked_add(offset))
            .ok_or_else(|| ParseError::Bad(format!("tensor '{}' is too large", info.name)))?;
        if !names.insert(info.name.clone()) {
            return Err(ParseError::Bad(format!(
                "the tensor name '{}' appears twice",
                info.name
            )));
        }
    }
    if count == 0 {
        return Ok(DataExtent {
            start: r.pos,
            end: r.pos,
        });
    }
    let start = r.pos.next_multiple_of(alignment);
    let extent = DataExtent {
        start,
        end: start.saturating_add(end),
    };
    if extent.end > r.size {
        return Err(ParseError::Bad(format!(
            "it is truncated: its tensor data needs {} bytes, the file has {} \
             (the download may be incomplete)",
            extent.end, r.size
        )));
    }
    Ok(extent)
}

/// One tensor info up to its offset: name, shape, type, checked as llama.cpp checks them.
fn read_info<R: Read + Seek>(r: &mut Reader<R>, i: u64) -> Result<Info, ParseError> {
    let at = r.pos;
    let name = r.string(GGML_MAX_NAME - 1)?.ok_or_else(|| {
        ParseError::Bad(format!(
            "tensor {i} at byte {at} has a name longer than llama.cpp's {} bytes",
            GGML_MAX_NAME - 1
        ))
    })?;
    let n_dims = r.u32()?;
    if n_dims > GGML_MAX_DIMS {
        return Err(ParseError::Bad(format!(
            "tensor '{name}' has {n_dims} dimensions; llama.cpp reads at most {GGML_MAX_DIMS}"
        )));
    }
    let mut ne = [1u64; 4];
    for d in ne.iter_mut().take(n_dims as usize) {
        *d = r.u64()?;
        if *d > i64::MAX as u64 {
            return Err(ParseError::Bad(format!(
                "tensor '{name}' has a negative dimension"
            )));
        }
    }
    let ty = r.u32()?;
    Ok(Info { name, ne, ty })
}

/// The bytes of a tensor (`ggml_nbytes` of a contiguous tensor), refusing what llama.cpp refuses:
/// unknown types, rows that are not whole blocks, sizes that overflow.
fn tensor_bytes(info: &Info) -> Result<u64, ParseError> {
    let name = &info.name;
    let (blck, size) = ggml_type_block(info.ty).ok_or_else(|| {
        ParseError::Bad(format!(
            "tensor '{name}' has ggml type {}, which this llama.cpp does not read",
            info.ty
        ))
    })?;
    let [ne0, ne1, ne2, ne3] = info.ne;
    if ne0 % blck != 0 {
        return Err(ParseError::Bad(format!(
            "tensor '{name}' has rows of {ne0} values, not a multiple of its type's block of {blck}"
        )));
    }
    let too_big = || ParseError::Bad(format!("tensor '{name}' is too large: {:?}", info.ne));
    let elements = [ne1, ne2, ne3]
        .into_iter()
        .try_fold(ne0, |n, d| n.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(too_big)?;
    if elements == 0 {
        return Ok(0);
    }
    (elements / blck).checked_mul(size).ok_or_else(too_big)
}
