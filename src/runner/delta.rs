//! How far apart two variants' caches are, layer by layer and position by position: where the
//! needle's information has spread before any intervention (the seed's heatmaps).

use crate::engine::kv_state::StateBytes;
use crate::engine::{EngineError, KvStateError, SeqState};
use crate::experiment::metrics;
use crate::experiment::results::{KvDelta, LayerDelta};

use super::prompts::PreparedPrompt;
use super::surgery::in_window;

/// Per layer and position, the L2 norm of the K and V differences between two prompt states.
pub fn kv_delta(
    a: &SeqState,
    b: &SeqState,
    name_a: &str,
    name_b: &str,
    full_layer: Option<usize>,
) -> Result<KvDelta, EngineError> {
    let positions = a.positions();
    let n_layer = a.n_layer();
    let mut k_l2 = vec![Vec::with_capacity(positions.len()); n_layer];
    let mut v_l2 = vec![Vec::with_capacity(positions.len()); n_layer];
    let mut layer_rows = full_layer.map(|layer| LayerDelta {
        layer,
        k: Vec::new(),
        v: Vec::new(),
    });
    if let Some(l) = full_layer
        && l >= n_layer
    {
        return Err(KvStateError::LayerOutOfRange { layer: l, n_layer }.into());
    }
    for &pos in &positions {
        let ca = a.cells_at(pos)[0];
        let Some(&cb) = b.cells_at(pos).first() else {
            return Err(KvStateError::NoSuchPosition(pos).into());
        };
        for layer in 0..n_layer {
            // A sliding layer that no longer sees the position: no difference it could read.
            let (Some(ka), Some(kb)) = (
                in_window(a.k_row_f32(layer, ca))?,
                in_window(b.k_row_f32(layer, cb))?,
            ) else {
                k_l2[layer].push(0.0);
                v_l2[layer].push(0.0);
                continue;
            };
            let (va, vb) = (a.v_row_f32(layer, ca)?, b.v_row_f32(layer, cb)?);
            k_l2[layer].push(metrics::l2_diff(&ka, &kb));
            v_l2[layer].push(metrics::l2_diff(&va, &vb));
            if let Some(rows) = layer_rows.as_mut()
                && rows.layer == layer
            {
                rows.k
                    .push(ka.iter().zip(&kb).map(|(x, y)| x - y).collect());
                rows.v
                    .push(va.iter().zip(&vb).map(|(x, y)| x - y).collect());
            }
        }
    }
    Ok(KvDelta {
        variant_a: name_a.into(),
        variant_b: name_b.into(),
        k_l2,
        v_l2,
        layer_rows,
    })
}

/// Sequence-state bytes above which the delta reads its two prompts in pieces (each read
/// taking one piece of positions) rather than holding both whole.
const WHOLE_BELOW: usize = 64 << 20;

/// The K/V delta between the first two variants when their prompts have the same length (the
/// seed's SF/NY pair), reading each prompt's state with `read` (variant index → its bytes):
/// in up to 4 pieces of positions, so that at most one whole state and two pieces are in host
/// memory (a 2k-token Llama 3.1 8B state is 254 MiB). The same figures as [`kv_delta`] on the
/// whole states.
pub(crate) fn first_two(
    prompts: &[PreparedPrompt],
    full_layer: Option<usize>,
    read: impl FnMut(usize) -> Result<StateBytes, EngineError>,
) -> Result<Option<KvDelta>, EngineError> {
    first_two_in_pieces(prompts, full_layer, WHOLE_BELOW, read)
}

/// [`first_two`], read in pieces when a state is `whole_below` bytes or more.
fn first_two_in_pieces(
    prompts: &[PreparedPrompt],
    full_layer: Option<usize>,
    whole_below: usize,
    mut read: impl FnMut(usize) -> Result<StateBytes, EngineError>,
) -> Result<Option<KvDelta>, EngineError> {
    let [a, b, ..] = prompts else {
        return Ok(None);
    };
    if a.tokens.len() != b.tokens.len() {
        return Ok(None);
    }
    let mut first = Some(read(0)?);
    let size = first.as_ref().map_or(0, |s| s.as_bytes().len());
    let pieces = size.div_ceil(whole_below.max(1)).clamp(1, 4);
    let cached = a.tokens.len().saturating_sub(1).max(1);
    let step = cached.div_ceil(pieces) as i32;
    let mut total: Option<KvDelta> = None;
    for p0 in (0..cached as i32).step_by(step as usize) {
        let in_piece = |p: i32| p >= p0 && p < p0 + step;
        let pa = match first.take() {
            Some(bytes) => bytes.part(in_piece),
            None => read(0)?.part(in_piece),
        };
        let pb = read(1)?.part(in_piece);
        let piece = kv_delta(&pa, &pb, &a.name, &b.name, full_layer)?;
        match total.as_mut() {
            None => total = Some(piece),
            Some(t) => append(t, piece),
        }
    }
    Ok(total)
}

/// Appends the positions of `piece` (later positions) to `total`.
fn append(total: &mut KvDelta, piece: KvDelta) {
    for (t, p) in total.k_l2.iter_mut().zip(piece.k_l2) {
        t.extend(p);
    }
    for (t, p) in total.v_l2.iter_mut().zip(piece.v_l2) {
        t.extend(p);
    }
    if let (Some(t), Some(p)) = (total.layer_rows.as_mut(), piece.layer_rows) {
        t.k.extend(p.k);
        t.v.extend(p.v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::KvPart;
    use crate::engine::kv_state::{LayoutHints, synthetic};

    #[test]
    fn the_delta_is_where_the_states_differ() {
        let a =
            SeqState::parse(&synthetic(&[0, 1, 2], 2, 4, true), LayoutHints::default()).unwrap();
        let mut b = a.clone();
        b.zero_cell(1, b.cells_at(2)[0], KvPart::K).unwrap();
        let d = kv_delta(&a, &b, "A", "B", Some(1)).unwrap();
        assert_eq!(d.k_l2[0], [0.0; 3]);
        assert_eq!(&d.k_l2[1][..2], [0.0; 2]);
        let row = a.k_row_f32(1, a.cells_at(2)[0]).unwrap();
        assert_eq!(d.k_l2[1][2], metrics::l2_diff(&row, &[0.0; 4]));
        assert!(d.v_l2.iter().flatten().all(|&x| x == 0.0));
        let rows = d.layer_rows.unwrap();
        assert_eq!((rows.layer, rows.k.len()), (1, 3));
        assert_eq!(rows.k[2], row);
        assert_eq!(
            kv_delta(&a, &b, "A", "B", Some(2)).unwrap_err().to_string(),
            EngineError::from(KvStateError::LayerOutOfRange {
                layer: 2,
                n_layer: 2
            })
            .to_string()
        );
    }

    #[test]
    fn the_delta_read_in_pieces_is_the_delta_of_the_whole_states() {
        use crate::engine::TokenPiece;
        let positions: Vec<i32> = (0..8).collect();
        let a_bytes = synthetic(&positions, 3, 4, false);
        let mut b = SeqState::parse(&a_bytes, LayoutHints::default()).unwrap();
        for p in [0, 4, 7] {
            b.zero_cell(p as usize % 3, b.cells_at(p)[0], KvPart::Both)
                .unwrap();
        }
        let a = SeqState::parse(&a_bytes, LayoutHints::default()).unwrap();
        let whole = kv_delta(&a, &b, "A", "B", Some(1)).unwrap();
        let prompt = |name: &str| PreparedPrompt {
            name: name.into(),
            text: String::new(),
            // One token more than the cache holds: the last is fed after the edit.
            tokens: (0..9)
                .map(|id| TokenPiece {
                    id,
                    piece: String::new(),
                })
                .collect(),
        };
        let prompts = [prompt("A"), prompt("B")];
        for whole_below in [1, usize::MAX] {
            let mut reads = 0;
            let pieced = first_two_in_pieces(&prompts, Some(1), whole_below, |v| {
                reads += 1;
                let bytes = if v == 0 {
                    a_bytes.clone()
                } else {
                    b.serialize()
                };
                Ok(StateBytes::new(bytes, LayoutHints::default())?)
            })
            .unwrap()
            .unwrap();
            assert_eq!(pieced, whole, "whole below {whole_below}");
            // Four pieces read each prompt four times; one piece, once.
            assert_eq!(reads, if whole_below == 1 { 8 } else { 2 });
        }
    }
}
