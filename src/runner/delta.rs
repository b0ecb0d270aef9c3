//! How far apart two variants' caches are, layer by layer and position by position: where the
//! needle's information has spread before any intervention (the seed's heatmaps).

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

/// The delta between the first two variants, when there are two and their prompts align.
pub(crate) fn first_two(
    prompts: &[PreparedPrompt],
    states: &[SeqState],
    full_layer: Option<usize>,
) -> Result<Option<KvDelta>, EngineError> {
    match (prompts, states) {
        ([a, b, ..], [sa, sb, ..]) if a.tokens.len() == b.tokens.len() => {
            Ok(Some(kv_delta(sa, sb, &a.name, &b.name, full_layer)?))
        }
        _ => Ok(None),
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
}
