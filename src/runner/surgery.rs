//! The interventions themselves, and the only code that knows what zero, transplant and remove
//! do. A condition starts from a copy of its variant's evaluated prompt cache: zero and
//! transplant edit the copy's bytes through the state codec (pure, testable on synthetic
//! states); remove takes cells out of the sequence, which only llama.cpp can do, so it happens
//! in a [`Lab`] after the copy is loaded.

use crate::engine::{EngineError, KvPart, KvStateError, Lab, SeqState};
use crate::experiment::spec::Span;

use super::plan::{Edit, Plan, PlannedCondition};

/// A condition's cache as the codec makes it: a copy of its variant's prompt state with zero or
/// transplant applied over span × layers × part. None and remove leave the copy as it is.
pub(crate) fn edited_state(
    c: &PlannedCondition,
    prompt_states: &[SeqState],
) -> Result<SeqState, KvStateError> {
    let mut state = prompt_states[c.variant].clone();
    match c.edit {
        Edit::None | Edit::Remove => {}
        Edit::Zero => {
            for pos in span_positions(c.span) {
                for cell in state.cells_at(pos) {
                    for &l in &c.layers {
                        state.zero_cell(l as usize, cell, c.part)?;
                    }
                }
            }
        }
        Edit::Transplant { donor } => {
            transplant(&mut state, &prompt_states[donor], c.span, &c.layers, c.part)?
        }
    }
    Ok(state)
}

/// Copies the donor's rows at the span's positions into `state`, same positions.
fn transplant(
    state: &mut SeqState,
    donor: &SeqState,
    span: Span,
    layers: &[u32],
    part: KvPart,
) -> Result<(), KvStateError> {
    for pos in span_positions(span) {
        let src = *donor
            .cells_at(pos)
            .first()
            .ok_or(KvStateError::NoSuchPosition(pos))?;
        for cell in state.cells_at(pos) {
            for &l in layers {
                state.copy_cell_from(donor, l as usize, cell, src, part)?;
            }
        }
    }
    Ok(())
}

fn span_positions(span: Span) -> impl Iterator<Item = i32> {
    span.positions().map(|p| p as i32)
}

/// Puts condition `c`'s starting cache into sequence `seq` of `lab`: the edited copy, and for
/// remove the span's cells taken out.
pub(crate) fn load(
    lab: &mut Lab<'_>,
    seq: i32,
    c: &PlannedCondition,
    prompt_states: &[SeqState],
) -> Result<(), EngineError> {
    lab.set_state(seq, &edited_state(c, prompt_states)?)?;
    if c.edit == Edit::Remove {
        lab.remove(seq, c.span.start as i32, c.span.end as i32)?;
    }
    Ok(())
}

/// Loads every planned condition's starting cache into its sequence and returns its bytes: the
/// exact cache the condition generates from, re-used for scoring.
pub(crate) fn load_all(
    lab: &mut Lab<'_>,
    plan: &Plan<'_>,
    prompt_states: &[SeqState],
) -> Result<Vec<Vec<u8>>, EngineError> {
    let mut states = Vec::with_capacity(plan.conditions.len());
    for c in &plan.conditions {
        load(lab, c.seq, c, prompt_states)?;
        states.push(lab.state_bytes(c.seq)?);
    }
    Ok(states)
}

/// The state bytes of condition `c`'s starting cache. Codec edits need no context; remove goes
/// through sequence `scratch` of `lab` (whatever it held is replaced).
pub(crate) fn cache_bytes(
    lab: &mut Lab<'_>,
    scratch: i32,
    c: &PlannedCondition,
    prompt_states: &[SeqState],
) -> Result<Vec<u8>, EngineError> {
    if c.edit == Edit::Remove {
        load(lab, scratch, c, prompt_states)?;
        lab.state_bytes(scratch)
    } else {
        Ok(edited_state(c, prompt_states)?.serialize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kv_state::{CellRef, LayoutHints, VBlock, synthetic};

    const N_LAYER: usize = 3;
    const SPAN: Span = Span { start: 1, end: 3 };

    fn state(v_trans: bool) -> SeqState {
        SeqState::parse(
            &synthetic(&[0, 1, 2, 3, 4], N_LAYER, 4, v_trans),
            LayoutHints::default(),
        )
        .unwrap()
    }

    /// A donor that differs from [`state`] in every byte of every row.
    fn donor(v_trans: bool) -> SeqState {
        let mut d = state(v_trans);
        let s = d.streams[0].as_mut().unwrap();
        for b in &mut s.k {
            b.data.iter_mut().for_each(|x| *x ^= 0x5a);
        }
        for v in &mut s.v {
            let data = match v {
                VBlock::Rows(b) => &mut b.data,
                VBlock::Transposed(b) => &mut b.data,
            };
            data.iter_mut().for_each(|x| *x ^= 0x5a);
        }
        d
    }

    fn planned(edit: Edit, layers: &[u32], part: KvPart) -> PlannedCondition {
        PlannedCondition {
            index: 0,
            variant: 0,
            edit,
            span: SPAN,
            layers: layers.to_vec(),
            part,
            seq: 2,
        }
    }

    /// The K and V bytes of one cell in one layer.
    fn rows(st: &SeqState, layer: usize, cell: CellRef) -> (Vec<u8>, Vec<u8>) {
        (
            st.k_row_bytes(layer, cell).unwrap().to_vec(),
            st.v_row_bytes(layer, cell).unwrap(),
        )
    }

    /// Checks every row of `after`: the rows `touched` says are edited equal `edited_row`, all
    /// others equal `before`; and the structure is unchanged.
    fn check_rows(
        before: &SeqState,
        after: &SeqState,
        touched: impl Fn(usize, i32, bool) -> bool,
        edited_row: impl Fn(usize, CellRef, bool) -> Vec<u8>,
    ) {
        assert_eq!(after.serialize().len(), before.serialize().len());
        assert_eq!(after.positions(), before.positions());
        for (cell, meta) in before.cells() {
            for layer in 0..N_LAYER {
                let (k0, v0) = rows(before, layer, cell);
                let (k1, v1) = rows(after, layer, cell);
                for (is_v, was, now) in [(false, k0, k1), (true, v0, v1)] {
                    let expect = if touched(layer, meta.pos, is_v) {
                        edited_row(layer, cell, is_v)
                    } else {
                        was
                    };
                    let what = if is_v { "V" } else { "K" };
                    assert_eq!(
                        now, expect,
                        "{what} of layer {layer}, position {}",
                        meta.pos
                    );
                }
            }
        }
    }

    fn in_scope(layers: &[u32], part: KvPart) -> impl Fn(usize, i32, bool) -> bool {
        move |layer, pos, is_v| {
            layers.contains(&(layer as u32))
                && SPAN.positions().contains(&(pos as usize))
                && if is_v { part.has_v() } else { part.has_k() }
        }
    }

    #[test]
    fn zero_clears_exactly_the_span_in_the_chosen_layers_and_part() {
        for v_trans in [false, true] {
            for part in [KvPart::K, KvPart::V, KvPart::Both] {
                let before = state(v_trans);
                let layers = [0, 2];
                let c = planned(Edit::Zero, &layers, part);
                let after = edited_state(&c, std::slice::from_ref(&before)).unwrap();
                check_rows(&before, &after, in_scope(&layers, part), |_, _, _| {
                    vec![0; 8]
                });
            }
        }
    }

    #[test]
    fn transplant_copies_exactly_the_donors_rows() {
        for v_trans in [false, true] {
            for part in [KvPart::K, KvPart::V, KvPart::Both] {
                let (before, d) = (state(v_trans), donor(v_trans));
                let layers = [1];
                let c = planned(Edit::Transplant { donor: 1 }, &layers, part);
                let after = edited_state(&c, &[before.clone(), d.clone()]).unwrap();
                check_rows(
                    &before,
                    &after,
                    in_scope(&layers, part),
                    |layer, cell, is_v| {
                        let (k, v) = rows(&d, layer, cell);
                        if is_v { v } else { k }
                    },
                );
            }
        }
    }

    #[test]
    fn none_and_remove_leave_every_byte() {
        for edit in [Edit::None, Edit::Remove] {
            let before = state(true);
            let c = planned(edit, &[0, 1, 2], KvPart::Both);
            let after = edited_state(&c, std::slice::from_ref(&before)).unwrap();
            assert_eq!(after.serialize(), before.serialize());
        }
    }

    #[test]
    fn a_transplant_from_a_donor_without_the_position_is_refused() {
        let before = state(false);
        let short = SeqState::parse(
            &synthetic(&[0, 1], N_LAYER, 4, false),
            LayoutHints::default(),
        )
        .unwrap();
        let c = planned(Edit::Transplant { donor: 1 }, &[0], KvPart::Both);
        assert_eq!(
            edited_state(&c, &[before, short]),
            Err(KvStateError::NoSuchPosition(2))
        );
    }
}
