//! A synthetic sequence state for unit tests (here and in the runner's surgery).

use half::f16;

use super::values::GGML_TYPE_F16;
use super::{CellMeta, RowBlock, SeqState, Stream, TransposedBlock, VBlock};

/// A synthetic state for tests (here and in the runner's surgery): two streams, the first with
/// `positions` cells; F16 K rows of `n_embd` values, V transposed or not; values encode
/// (layer, cell, channel).
pub(crate) fn synthetic(
    positions: &[i32],
    n_layer: usize,
    n_embd: usize,
    v_trans: bool,
) -> Vec<u8> {
    let n = positions.len();
    let mut st = SeqState {
        seq_id: 0,
        streams: vec![None, None],
        swa: None,
    };
    let cells = positions
        .iter()
        .map(|&pos| CellMeta {
            pos,
            ext: None,
            seq_ids: vec![0],
        })
        .collect();
    let val = |l: usize, c: usize, j: usize, v: bool| {
        f16::from_f32((l * 1000 + c * 10 + j) as f32 * if v { -1.0 } else { 1.0 } / 64.0)
    };
    let k = (0..n_layer)
        .map(|l| RowBlock {
            ggml_type: GGML_TYPE_F16,
            row_size: n_embd * 2,
            data: (0..n)
                .flat_map(|c| (0..n_embd).flat_map(move |j| val(l, c, j, false).to_le_bytes()))
                .collect(),
        })
        .collect();
    let v = (0..n_layer)
        .map(|l| {
            if v_trans {
                VBlock::Transposed(TransposedBlock {
                    ggml_type: GGML_TYPE_F16,
                    el_size: 2,
                    n_embd,
                    data: (0..n_embd)
                        .flat_map(|j| (0..n).flat_map(move |c| val(l, c, j, true).to_le_bytes()))
                        .collect(),
                })
            } else {
                VBlock::Rows(RowBlock {
                    ggml_type: GGML_TYPE_F16,
                    row_size: n_embd * 2,
                    data: (0..n)
                        .flat_map(|c| {
                            (0..n_embd).flat_map(move |j| val(l, c, j, true).to_le_bytes())
                        })
                        .collect(),
                })
            }
        })
        .collect();
    st.streams[0] = Some(Stream {
        cells,
        v_trans,
        n_rot_k: 0,
        n_rot_v: 0,
        k,
        v,
    });
    st.serialize()
}
