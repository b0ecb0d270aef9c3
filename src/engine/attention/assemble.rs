//! From copied rows to captures: which position each cell holds, and each requested row's
//! weights on the focus positions.

use std::collections::HashMap;

use super::hook::RawCapture;
use super::{AttentionCapture, CaptureRequest, CapturedRow};

/// The copied rows of one evaluation, every layer present.
pub(crate) struct Rows {
    pub layers: Vec<Vec<f32>>,
    pub scores: Option<Vec<Vec<f32>>>,
    pub mask: Vec<f32>,
    pub n_head: usize,
    pub n_kv: usize,
}

impl Rows {
    /// Checks that every layer was seen.
    pub fn new(raw: RawCapture) -> Result<Rows, String> {
        let seen = |layers: Vec<Option<Vec<f32>>>| -> Result<Vec<Vec<f32>>, String> {
            layers
                .into_iter()
                .enumerate()
                .map(|(l, d)| {
                    d.ok_or_else(|| {
                        format!(
                            "layer {l}'s attention weights were not seen (is flash attention on?)"
                        )
                    })
                })
                .collect()
        };
        let scores = if raw.scores.is_empty() {
            None
        } else {
            Some(seen(raw.scores)?)
        };
        Ok(Rows {
            layers: seen(raw.layers)?,
            scores,
            mask: raw.mask.ok_or("the attention mask was not seen")?,
            n_head: raw.n_head,
            n_kv: raw.n_kv,
        })
    }

    /// Which cells armed row `i` could see.
    pub fn visible(&self, i: usize) -> Vec<bool> {
        self.mask[i * self.n_kv..(i + 1) * self.n_kv]
            .iter()
            .map(|&m| m != f32::NEG_INFINITY)
            .collect()
    }

    /// The capture of one sequence: `rows` are (request item, armed row index) pairs.
    pub fn capture(
        &self,
        seq: i32,
        request: &CaptureRequest,
        rows: &[(usize, usize)],
        item_pos: &[i32],
        cell_pos: Vec<Option<i32>>,
    ) -> AttentionCapture {
        let (n_head, n_kv, n_layer) = (self.n_head, self.n_kv, self.layers.len());
        let index: HashMap<i32, usize> = request
            .focus
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, i))
            .collect();
        // The focus slot each cell's weight goes to (a position may repeat in `focus`: the first).
        let cell_focus: Vec<Option<usize>> = cell_pos
            .iter()
            .map(|p| p.and_then(|p| index.get(&p).copied()))
            .collect();
        let n_focus = request.focus.len();
        let gather = |w: &[f32], missing: f32, out: &mut Vec<f32>| {
            let at = out.len();
            out.resize(at + n_focus, missing);
            for (c, f) in cell_focus.iter().enumerate() {
                if let Some(f) = f {
                    out[at + f] = w[c];
                }
            }
            // Repeated focus positions get the same weight.
            for (i, p) in request.focus.iter().enumerate() {
                let first = index[p];
                if first != i {
                    out[at + i] = out[at + first];
                }
            }
        };
        let rows = rows
            .iter()
            .map(|&(item, i)| {
                let mut focus = Vec::with_capacity(n_layer * n_head * n_focus);
                let mut scores = self
                    .scores
                    .as_ref()
                    .filter(|_| request.focus_scores)
                    .map(|_| Vec::with_capacity(n_layer * n_head * n_focus));
                let mut full = request
                    .full_rows
                    .then(|| Vec::with_capacity(n_layer * n_head * n_kv));
                for (l, data) in self.layers.iter().enumerate() {
                    for h in 0..n_head {
                        let w = &data[(i * n_head + h) * n_kv..][..n_kv];
                        gather(w, 0.0, &mut focus);
                        if let (Some(s), Some(all)) = (scores.as_mut(), self.scores.as_ref()) {
                            gather(&all[l][(i * n_head + h) * n_kv..][..n_kv], f32::NAN, s);
                        }
                        if let Some(f) = full.as_mut() {
                            f.extend_from_slice(w);
                        }
                    }
                }
                CapturedRow {
                    item,
                    pos: item_pos[item],
                    visible: self.visible(i),
                    n_head,
                    n_focus,
                    n_kv,
                    focus,
                    scores,
                    full,
                }
            })
            .collect();
        AttentionCapture {
            seq,
            n_layer,
            n_head,
            n_kv,
            cell_pos,
            focus: request.focus.clone(),
            rows,
        }
    }
}

/// The position each cell holds: the cells `seen` by a token at `last_pos`, in cell order, are
/// the sequence's cells (`seq_cells`, in cell order) with a position up to `last_pos`.
pub(crate) fn map_cells(
    seen: &[bool],
    last_pos: i32,
    seq_cells: &[i32],
) -> Result<Vec<Option<i32>>, String> {
    let visible: Vec<usize> = (0..seen.len()).filter(|&c| seen[c]).collect();
    let held: Vec<i32> = seq_cells
        .iter()
        .copied()
        .filter(|&p| p <= last_pos)
        .collect();
    if visible.len() != held.len() {
        return Err(format!(
            "the last token sees {} cells but the sequence holds {} up to its position",
            visible.len(),
            held.len()
        ));
    }
    let mut cell_pos = vec![None; seen.len()];
    for (&c, &p) in visible.iter().zip(&held) {
        cell_pos[c] = Some(p);
    }
    Ok(cell_pos)
}

/// The map after one token at `new_pos` was added to a sequence whose map was `prev`, given the
/// cells that token sees: every cell held before must still be seen, and exactly one more cell
/// (the new token's). `None` when that does not hold (the caller reads the state instead).
pub(crate) fn extend_map(
    prev: &[Option<i32>],
    seen: &[bool],
    new_pos: i32,
) -> Option<Vec<Option<i32>>> {
    // A cell held before but beyond the new view: not one added token.
    if prev
        .get(seen.len()..)
        .is_some_and(|rest| rest.iter().any(Option::is_some))
    {
        return None;
    }
    let mut out = vec![None; seen.len()];
    let mut new = None;
    for (c, (&seen, slot)) in seen.iter().zip(out.iter_mut()).enumerate() {
        match (prev.get(c).copied().flatten(), seen) {
            (Some(p), true) if p < new_pos => *slot = Some(p),
            (Some(_), _) => return None,
            (None, true) if new.is_none() => new = Some(c),
            (None, true) => return None,
            (None, false) => {}
        }
    }
    out[new?] = Some(new_pos);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_map_to_positions_in_cell_order() {
        // Cells 0..3 hold 0, 1, 9 (reused cell), 2; cell 4 is empty.
        let seen = [true, true, true, true, false];
        let map = map_cells(&seen, 9, &[0, 1, 9, 2]).unwrap();
        assert_eq!(map, [Some(0), Some(1), Some(9), Some(2), None]);
        assert!(map_cells(&seen, 9, &[0, 1]).is_err());
    }

    #[test]
    fn one_new_token_extends_the_map() {
        let prev = [Some(0), None, Some(2)];
        // The new token went into the free cell 1.
        let seen = [true, true, true, false];
        assert_eq!(
            extend_map(&prev, &seen, 3),
            Some(vec![Some(0), Some(3), Some(2), None])
        );
        // Into a cell beyond the old view.
        let seen = [true, false, true, true];
        assert_eq!(
            extend_map(&prev, &seen, 3),
            Some(vec![Some(0), None, Some(2), Some(3)])
        );
        // A held cell no longer seen, two new cells, none, or an old position not before the
        // new one: not one added token, so no guess.
        assert_eq!(extend_map(&prev, &[true, true, false], 3), None);
        assert_eq!(extend_map(&prev, &[true, true, true, true], 3), None);
        assert_eq!(extend_map(&prev, &[true, false, true], 3), None);
        assert_eq!(extend_map(&prev, &[true, true, true], 2), None);
    }
}
