//! The interventions themselves, and the only code that knows what zero, transplant, mean,
//! noise and remove do. A condition starts from a copy of its variant's evaluated prompt cache,
//! edited through the state codec (pure, testable on synthetic states): rows rewritten, or for
//! remove the span's cells taken out, leaving exactly the state llama.cpp writes after its own
//! `seq_rm` (an engine test compares the two). Restoring that state gives a cache with no hole
//! where the needle was, laid out like every other condition's, so the tokens generated after
//! it sit where a later teacher-forced evaluation puts them too.

use crate::engine::kv_state::{CellRef, StateBytes};
use crate::engine::{EngineError, KvPart, KvStateError, Lab, SeqState};
use crate::experiment::spec::Span;
use crate::experiment::stats::SplitMix64;

use super::plan::{Edit, Plan, PlannedCondition};

/// A condition's cache as the codec makes it: a copy of its variant's prompt state with its
/// edit applied over span × layers × part (remove: the span's cells taken out). None leaves the
/// copy as it is.
pub(crate) fn edited_state(
    c: &PlannedCondition,
    prompt_states: &[SeqState],
) -> Result<SeqState, KvStateError> {
    edited_state_with(c, prompt_states, None)
}

/// [`edited_state`] where the prompt states may hold only some of the prompt's cells (those
/// the edit touches and reads): the noise op's σ, a statistic over the whole prompt, then
/// comes from `spreads`.
pub(crate) fn edited_state_with(
    c: &PlannedCondition,
    prompt_states: &[SeqState],
    spreads: Option<&Spreads>,
) -> Result<SeqState, KvStateError> {
    edit(prompt_states[c.variant].clone(), c, prompt_states, spreads)
}

/// Applies `c`'s edit to `state`: its variant's prompt state, or any part of it holding the
/// span's cells (the edit reads everything else from `prompt_states` and `spreads`, so a part
/// is edited exactly as the whole would be there).
fn edit(
    mut state: SeqState,
    c: &PlannedCondition,
    prompt_states: &[SeqState],
    spreads: Option<&Spreads>,
) -> Result<SeqState, KvStateError> {
    match (&c.edit, &c.heads) {
        (Edit::None, _) => {}
        (Edit::Remove, _) => state.remove_positions(c.span.start as i32, c.span.end as i32),
        (Edit::Zero, None) => {
            for pos in span_positions(c.span) {
                for cell in state.cells_at(pos) {
                    for &l in &c.layers {
                        state.zero_cell(l as usize, cell, c.part)?;
                    }
                }
            }
        }
        (Edit::Transplant { donor }, None) => transplant(
            &mut state,
            &prompt_states[*donor],
            c.span,
            &c.layers,
            c.part,
        )?,
        _ => edit_values(&mut state, c, prompt_states, spreads)?,
    }
    Ok(state)
}

/// Half of the cache, for reading and writing rows as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Half {
    K,
    V,
}

fn halves(part: KvPart) -> impl Iterator<Item = Half> {
    [(part.has_k(), Half::K), (part.has_v(), Half::V)]
        .into_iter()
        .filter_map(|(on, h)| on.then_some(h))
}

fn read_row(s: &SeqState, half: Half, layer: u32, cell: CellRef) -> Result<Vec<f32>, KvStateError> {
    match half {
        Half::K => s.k_row_f32(layer as usize, cell),
        Half::V => s.v_row_f32(layer as usize, cell),
    }
}

/// A row read where a sliding layer may no longer see the cell: `None` then.
pub(crate) fn in_window<T>(r: Result<T, KvStateError>) -> Result<Option<T>, KvStateError> {
    match r {
        Err(KvStateError::OutsideWindow { .. }) => Ok(None),
        other => other.map(Some),
    }
}

/// A variant's row at a position (its first cell there).
fn row_at(s: &SeqState, half: Half, layer: u32, pos: i32) -> Result<Vec<f32>, KvStateError> {
    let cell = *s
        .cells_at(pos)
        .first()
        .ok_or(KvStateError::NoSuchPosition(pos))?;
    read_row(s, half, layer, cell)
}

/// Edits through numbers (per-head surgery, mean and noise): each row is read as numbers, the
/// op's values computed for the whole row, and only the chosen heads' values replaced before
/// the row is written back (values left alone round-trip to the same bytes).
fn edit_values(
    state: &mut SeqState,
    c: &PlannedCondition,
    prompt_states: &[SeqState],
    spreads: Option<&Spreads>,
) -> Result<(), KvStateError> {
    let own = &prompt_states[c.variant];
    let mut noise = match &c.edit {
        Edit::Noise { scale, seed } => Some(Noise::new(*scale, *seed, spreads)),
        _ => None,
    };
    for pos in span_positions(c.span) {
        for cell in state.cells_at(pos) {
            for &l in &c.layers {
                for half in halves(c.part) {
                    // A sliding layer that no longer sees the position has nothing to edit.
                    let Some(mut row) = in_window(read_row(state, half, l, cell))? else {
                        continue;
                    };
                    let target = match &c.edit {
                        Edit::None | Edit::Remove => return Ok(()),
                        Edit::Zero => vec![0.0; row.len()],
                        Edit::Transplant { donor } => row_at(&prompt_states[*donor], half, l, pos)?,
                        Edit::Mean { over } => mean_row(prompt_states, over, half, l, pos)?,
                        Edit::Noise { .. } => match noise.as_mut() {
                            Some(n) => n.add_to(&row, own, half, l)?,
                            None => row.clone(),
                        },
                    };
                    replace_heads(&mut row, &target, c.heads.as_ref());
                    match half {
                        Half::K => state.write_k_row_f32(l as usize, cell, &row)?,
                        Half::V => state.write_v_row_f32(l as usize, cell, &row)?,
                    }
                }
            }
        }
    }
    Ok(())
}

/// Copies `target` into `row` for the chosen heads (all when `None`); a row holds `n_head`
/// heads of equal size.
fn replace_heads(row: &mut [f32], target: &[f32], heads: Option<&(Vec<u32>, u32)>) {
    match heads {
        None => row.copy_from_slice(target),
        Some((heads, n_head)) => {
            let size = row.len() / (*n_head).max(1) as usize;
            for &h in heads {
                let r = h as usize * size..(h as usize + 1) * size;
                if r.end <= row.len() {
                    row[r.clone()].copy_from_slice(&target[r]);
                }
            }
        }
    }
}

/// The mean of some variants' rows at a position. The sum starts from the first row, so the
/// mean of one row is that row exactly.
fn mean_row(
    states: &[SeqState],
    over: &[usize],
    half: Half,
    layer: u32,
    pos: i32,
) -> Result<Vec<f32>, KvStateError> {
    let mut rows = over.iter().map(|&v| row_at(&states[v], half, layer, pos));
    let Some(first) = rows.next() else {
        return Err(KvStateError::Mismatch("a mean over no variant".into()));
    };
    let mut sum = first?;
    for r in rows {
        for (s, x) in sum.iter_mut().zip(r?) {
            *s += x;
        }
    }
    if over.len() > 1 {
        let n = over.len() as f32;
        sum.iter_mut().for_each(|s| *s /= n);
    }
    Ok(sum)
}

/// Gaussian noise scaled per layer and half by the spread of the variant's own cache there,
/// drawn from a seeded generator in a fixed order (positions, cells, layers, K then V,
/// elements), so a seed always draws the same noise.
struct Noise<'a> {
    scale: f32,
    rng: SplitMix64,
    spare: Option<f64>,
    sigma: std::collections::HashMap<(u32, Half), f32>,
    /// σ known beforehand (a prompt read in pieces).
    known: Option<&'a Spreads>,
}

impl<'a> Noise<'a> {
    fn new(scale: f32, seed: u64, known: Option<&'a Spreads>) -> Noise<'a> {
        Noise {
            scale,
            rng: SplitMix64(seed),
            spare: None,
            sigma: Default::default(),
            known,
        }
    }

    /// `row` plus noise; an element whose noise is exactly 0 (scale 0) keeps its bits.
    fn add_to(
        &mut self,
        row: &[f32],
        own: &SeqState,
        half: Half,
        layer: u32,
    ) -> Result<Vec<f32>, KvStateError> {
        let sigma = match self.sigma.get(&(layer, half)) {
            Some(s) => *s,
            None => {
                let s = match self.known.and_then(|k| k.sigma(layer, half)) {
                    Some(s) => s,
                    None => spread(own, half, layer)?,
                };
                self.sigma.insert((layer, half), s);
                s
            }
        };
        Ok(row
            .iter()
            .map(|&x| {
                let n = self.scale * sigma * self.normal() as f32;
                if n == 0.0 { x } else { x + n }
            })
            .collect())
    }

    /// A standard normal number (Box–Muller, both halves used).
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let u2 = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * (1.0 - u1).ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

/// The standard deviation of a layer's K (or V) values over every cell of a state.
fn spread(s: &SeqState, half: Half, layer: u32) -> Result<f32, KvStateError> {
    let mut sums = Sums::default();
    sums.add(s, half, layer)?;
    Ok(sums.sigma())
}

/// Running count, sum and sum of squares of values, added in cell order.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    n: f64,
    sum: f64,
    sq: f64,
}

impl Sums {
    fn add(&mut self, s: &SeqState, half: Half, layer: u32) -> Result<(), KvStateError> {
        let cells: Vec<CellRef> = s.cells().map(|(r, _)| r).collect();
        for cell in cells {
            let Some(row) = in_window(read_row(s, half, layer, cell))? else {
                continue;
            };
            for x in row {
                let x = x as f64;
                self.n += 1.0;
                self.sum += x;
                self.sq += x * x;
            }
        }
        Ok(())
    }

    fn sigma(&self) -> f32 {
        if self.n == 0.0 {
            return 0.0;
        }
        let mean = self.sum / self.n;
        ((self.sq / self.n - mean * mean).max(0.0)).sqrt() as f32
    }
}

/// The noise op's σ per layer and half for one variant, from its prompt read a piece at a
/// time (a shared lab reads a long prompt in pieces rather than holding its whole state): the
/// same sums in the same order as [`spread`] over the whole state, so the same σ.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spreads {
    sums: std::collections::HashMap<(u32, Half), Sums>,
}

impl Spreads {
    /// Adds a piece of the prompt (pieces in position order) for these layers, K and V.
    pub(crate) fn add(&mut self, piece: &SeqState, layers: &[u32]) -> Result<(), KvStateError> {
        for &l in layers {
            for half in [Half::K, Half::V] {
                self.sums
                    .entry((l, half))
                    .or_default()
                    .add(piece, half, l)?;
            }
        }
        Ok(())
    }

    fn sigma(&self, layer: u32, half: Half) -> Option<f32> {
        self.sums.get(&(layer, half)).map(Sums::sigma)
    }
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

/// What a grid's edits read from the prompts, gathered once: every variant's cells at the
/// positions any condition edits (a transplant's donor rows, a mean's rows, the edited rows
/// themselves), and for each variant a noise condition starts from, the noise op's σ over its
/// whole prompt. A few cells per variant, where the prompts' states are 254 MiB each at 2k
/// tokens of Llama 3.1 8B's cache.
#[derive(Debug, Default)]
pub(crate) struct EditInputs {
    /// Per variant, its prompt's cells at the edited positions.
    pub parts: Vec<SeqState>,
    /// Per variant a noise condition starts from, its σ.
    pub spreads: std::collections::HashMap<usize, Spreads>,
}

/// Positions of a prompt's σ summed at a time (a piece of a Llama 3.1 8B state is 32 MiB).
const SPREAD_PIECE: i32 = 256;

impl EditInputs {
    /// Reads what `conditions`' edits need from each variant's prompt state (`prompts`, one
    /// per variant, in order, each dropped before the next is asked for).
    pub(crate) fn gather(
        conditions: &[&PlannedCondition],
        n_variants: usize,
        mut prompts: impl FnMut(usize) -> Result<StateBytes, EngineError>,
    ) -> Result<EditInputs, EngineError> {
        let spans: Vec<Span> = conditions.iter().map(|c| c.span).collect();
        let edited = |p: i32| (spans.iter()).any(|s| p >= s.start as i32 && p < s.end as i32);
        let mut noise_layers: std::collections::HashMap<usize, Vec<u32>> = Default::default();
        for c in (conditions.iter()).filter(|c| matches!(c.edit, Edit::Noise { .. })) {
            noise_layers.entry(c.variant).or_default().extend(&c.layers);
        }
        let mut inputs = EditInputs::default();
        for v in 0..n_variants {
            let bytes = prompts(v)?;
            inputs.parts.push(bytes.part(edited));
            if let Some(layers) = noise_layers.get_mut(&v) {
                layers.sort_unstable();
                layers.dedup();
                let last = bytes.positions().last().copied();
                let mut spreads = Spreads::default();
                for p0 in (0..last.map_or(0, |p| p + 1)).step_by(SPREAD_PIECE as usize) {
                    let piece = bytes.part(|p| p >= p0 && p < p0 + SPREAD_PIECE);
                    spreads.add(&piece, layers)?;
                }
                inputs.spreads.insert(v, spreads);
            }
        }
        Ok(inputs)
    }
}

/// Makes condition `c`'s starting cache in `prompt`, its variant's prompt state as bytes, and
/// hands it to `with`: the edited cells' rows are written where they lie and put back after
/// `with` returns (even when the write failed), so `prompt` is the prompt again for the next
/// condition. None hands the prompt as it is. Remove takes the span's cells out of `prompt`
/// itself, which then is no longer the prompt: make a variant's removes last.
/// Equal, byte for byte, to [`edited_state`] on whole prompt states, serialized.
pub(crate) fn with_edit<R>(
    c: &PlannedCondition,
    prompt: &mut StateBytes,
    inputs: &EditInputs,
    with: impl FnOnce(&StateBytes) -> R,
) -> Result<R, KvStateError> {
    match c.edit {
        Edit::None => return Ok(with(prompt)),
        Edit::Remove => {
            prompt.remove_positions(c.span.start as i32, c.span.end as i32)?;
            return Ok(with(prompt));
        }
        _ => {}
    }
    let own = &inputs.parts[c.variant];
    let edited = edit(
        own.clone(),
        c,
        &inputs.parts,
        inputs.spreads.get(&c.variant),
    )?;
    let made = prompt.write_part(&edited).map(|()| with(prompt));
    // Put back even after a failed write: a half-edited prompt would spoil every later
    // condition of the variant.
    prompt.write_part(own)?;
    made
}

/// Makes every computed condition's starting cache in its sequence (conditions that run as one
/// share it), straight from the lab's prompt sequences: each variant's prompt state is read
/// (once to gather [`EditInputs`], once to make its conditions), edited where its rows lie and
/// written into each of its conditions' sequences. At most one prompt's state is in host memory
/// at a time, and no condition's.
pub(crate) fn load_all(lab: &mut Lab<'_>, plan: &Plan<'_>) -> Result<(), EngineError> {
    let n_variants = plan.prompts.len();
    let computed: Vec<&PlannedCondition> = plan.computed().collect();
    let inputs = EditInputs::gather(&computed, n_variants, |v| lab.scanned_state(v as i32))?;
    for v in 0..n_variants {
        let mut mine: Vec<&PlannedCondition> = plan.computed().filter(|c| c.variant == v).collect();
        if mine.is_empty() {
            continue;
        }
        // Removes change the prompt's bytes themselves: last, each but the last on a copy.
        mine.sort_by_key(|c| matches!(c.edit, Edit::Remove));
        let mut prompt = lab.scanned_state(v as i32)?;
        let n_removes = mine.iter().filter(|c| c.edit == Edit::Remove).count();
        let mut removes = 0;
        for c in mine {
            let load = |lab: &mut Lab<'_>, s: &StateBytes| lab.set_scanned_state(c.seq, s);
            if c.edit == Edit::Remove {
                removes += 1;
                if removes < n_removes {
                    let mut copy = prompt.clone();
                    with_edit(c, &mut copy, &inputs, |s| load(lab, s))??;
                    continue;
                }
            }
            with_edit(c, &mut prompt, &inputs, |s| load(lab, s))??;
        }
    }
    Ok(())
}

/// The state bytes of condition `c`'s starting cache (no context needed: every edit is the
/// codec's).
pub(crate) fn cache_bytes(
    c: &PlannedCondition,
    prompt_states: &[SeqState],
) -> Result<Vec<u8>, EngineError> {
    Ok(edited_state(c, prompt_states)?.serialize())
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
            heads: None,
            seq: 2,
            runs_as: 0,
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
    fn none_leaves_every_byte_and_remove_takes_out_the_span() {
        let before = state(true);
        let c = planned(Edit::None, &[0, 1, 2], KvPart::Both);
        let after = edited_state(&c, std::slice::from_ref(&before)).unwrap();
        assert_eq!(after.serialize(), before.serialize());
        let c = planned(Edit::Remove, &[0], KvPart::K);
        let after = edited_state(&c, std::slice::from_ref(&before)).unwrap();
        // Whatever the layers and part: a removed cell is gone from every layer.
        assert_eq!(after.positions(), vec![0, 3, 4]);
        let mut expected = before.clone();
        expected.remove_positions(SPAN.start as i32, SPAN.end as i32);
        assert_eq!(after, expected);
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

    /// The donor made of numbers: every value differs from [`state`]'s (no NaN from flipped
    /// bits), so changed elements are visible.
    fn numeric_donor(v_trans: bool) -> SeqState {
        let mut d = state(v_trans);
        let cells: Vec<CellRef> = d.cells().map(|(r, _)| r).collect();
        for l in 0..N_LAYER {
            for &c in &cells {
                let k: Vec<f32> = d.k_row_f32(l, c).unwrap().iter().map(|x| x + 0.5).collect();
                let v: Vec<f32> = d
                    .v_row_f32(l, c)
                    .unwrap()
                    .iter()
                    .map(|x| x - 0.25)
                    .collect();
                d.write_k_row_f32(l, c, &k).unwrap();
                d.write_v_row_f32(l, c, &v).unwrap();
            }
        }
        d
    }

    /// Rows are 4 values: 2 heads of 2.
    fn with_heads(mut c: PlannedCondition, heads: &[u32]) -> PlannedCondition {
        c.heads = Some((heads.to_vec(), 2));
        c
    }

    #[test]
    fn per_head_edits_touch_only_the_chosen_heads_values() {
        for v_trans in [false, true] {
            let (before, d) = (state(v_trans), numeric_donor(v_trans));
            let layers = [1];
            let c = with_heads(
                planned(Edit::Transplant { donor: 1 }, &layers, KvPart::Both),
                &[1],
            );
            let after = edited_state(&c, &[before.clone(), d.clone()]).unwrap();
            check_rows(
                &before,
                &after,
                in_scope(&layers, KvPart::Both),
                |layer, cell, is_v| {
                    // Head 0 (bytes 0..4) stays; head 1 (bytes 4..8) is the donor's.
                    let (k0, v0) = rows(&before, layer, cell);
                    let (k1, v1) = rows(&d, layer, cell);
                    let (mine, theirs) = if is_v { (v0, v1) } else { (k0, k1) };
                    [&mine[..4], &theirs[4..]].concat()
                },
            );
        }
    }

    #[test]
    fn zero_on_every_head_is_zero_bit_for_bit() {
        for v_trans in [false, true] {
            let before = state(v_trans);
            let all = planned(Edit::Zero, &[0, 2], KvPart::Both);
            let heads = with_heads(all.clone(), &[0, 1]);
            let one = std::slice::from_ref(&before);
            assert_eq!(
                edited_state(&heads, one).unwrap().serialize(),
                edited_state(&all, one).unwrap().serialize()
            );
        }
    }

    #[test]
    fn mean_and_noise_change_exactly_the_chosen_rows() {
        for v_trans in [false, true] {
            let (before, d) = (state(v_trans), numeric_donor(v_trans));
            let states = [before.clone(), d.clone()];
            let layers = [0, 2];
            let c = planned(Edit::Mean { over: vec![0, 1] }, &layers, KvPart::K);
            let after = edited_state(&c, &states).unwrap();
            check_rows(
                &before,
                &after,
                in_scope(&layers, KvPart::K),
                |layer, cell, _| {
                    let a = before.k_row_f32(layer, cell).unwrap();
                    let b = d.k_row_f32(layer, cell).unwrap();
                    let mut m = before.clone();
                    let mean: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect();
                    m.write_k_row_f32(layer, cell, &mean).unwrap();
                    m.k_row_bytes(layer, cell).unwrap().to_vec()
                },
            );
            let c = planned(
                Edit::Noise {
                    scale: 3.0,
                    seed: 7,
                },
                &layers,
                KvPart::V,
            );
            let after = edited_state(&c, &states).unwrap();
            let again = edited_state(&c, &states).unwrap();
            assert_eq!(
                after.serialize(),
                again.serialize(),
                "a seed draws the same noise"
            );
            for (cell, meta) in before.cells() {
                for layer in 0..N_LAYER {
                    let touched = in_scope(&layers, KvPart::V)(layer, meta.pos, true);
                    let (k0, v0) = rows(&before, layer, cell);
                    let (k1, v1) = rows(&after, layer, cell);
                    assert_eq!(k0, k1, "K untouched");
                    assert_eq!(v0 != v1, touched, "V of layer {layer} at {}", meta.pos);
                }
            }
            let other = planned(
                Edit::Noise {
                    scale: 3.0,
                    seed: 8,
                },
                &layers,
                KvPart::V,
            );
            assert_ne!(
                edited_state(&other, &states).unwrap().serialize(),
                after.serialize(),
                "another seed draws other noise"
            );
        }
    }

    #[test]
    fn noise_of_scale_zero_and_a_mean_over_the_variant_alone_change_nothing() {
        for v_trans in [false, true] {
            let before = state(v_trans);
            let states = [before.clone(), numeric_donor(v_trans)];
            for edit in [
                Edit::Noise {
                    scale: 0.0,
                    seed: 1,
                },
                Edit::Mean { over: vec![0] },
            ] {
                let c = planned(edit, &[0, 1, 2], KvPart::Both);
                let after = edited_state(&c, &states).unwrap();
                assert_eq!(after.serialize(), before.serialize());
            }
        }
    }

    /// What a shared lab relies on: an edit made from only the cells it touches (the prompt
    /// read around the span, σ summed over pieces) writes the same bytes there as the edit of
    /// the whole state.
    #[test]
    fn an_edit_made_from_the_cells_it_reads_equals_the_edit_of_the_whole_state() {
        let around = |s: &SeqState| {
            let mut s = s.clone();
            s.retain_positions(|p| SPAN.positions().contains(&(p as usize)));
            s
        };
        for v_trans in [false, true] {
            let whole = [state(v_trans), donor(v_trans)];
            let mut spreads = Spreads::default();
            for (p0, p1) in [(0, 2), (2, 4), (4, 5)] {
                let mut piece = whole[0].clone();
                piece.retain_positions(|p| p >= p0 && p < p1);
                spreads.add(&piece, &[0, 1, 2]).unwrap();
            }
            for layer in 0..N_LAYER as u32 {
                for half in [Half::K, Half::V] {
                    let in_one = spread(&whole[0], half, layer).unwrap();
                    assert_eq!(
                        spreads.sigma(layer, half).map(f32::to_bits),
                        Some(in_one.to_bits())
                    );
                }
            }
            let partial = [around(&whole[0]), around(&whole[1])];
            let edits = [
                Edit::Zero,
                Edit::Transplant { donor: 1 },
                Edit::Mean { over: vec![0, 1] },
                Edit::Noise {
                    scale: 3.0,
                    seed: 7,
                },
            ];
            for edit in edits {
                for heads in [None, Some((vec![1], 2))] {
                    let c = PlannedCondition {
                        heads: heads.clone(),
                        ..planned(edit.clone(), &[0, 2], KvPart::Both)
                    };
                    let from_whole = around(&edited_state(&c, &whole).unwrap());
                    let from_cells = edited_state_with(&c, &partial, Some(&spreads)).unwrap();
                    assert_eq!(
                        from_cells, from_whole,
                        "{edit:?}, heads {heads:?}, v_trans {v_trans}"
                    );
                }
            }
        }
    }

    /// [`EditInputs`] gathered from whole prompt states, as `load_all` gathers them from a lab.
    fn inputs(conditions: &[&PlannedCondition], whole: &[SeqState]) -> EditInputs {
        EditInputs::gather(conditions, whole.len(), |v| {
            Ok(StateBytes::new(
                whole[v].serialize(),
                LayoutHints::default(),
            )?)
        })
        .unwrap()
    }

    /// What grids rely on: the cache an edit made where the prompt's rows lie hands over is the
    /// copied-and-edited one byte for byte, for every edit, and the prompt's bytes are exactly
    /// as they were afterwards (the next condition starts from the same prompt).
    #[test]
    fn an_edit_made_where_the_rows_lie_is_the_edit_of_the_whole_state_and_leaves_the_prompt() {
        for v_trans in [false, true] {
            let whole = [state(v_trans), numeric_donor(v_trans)];
            let edits = [
                Edit::None,
                Edit::Remove,
                Edit::Zero,
                Edit::Transplant { donor: 1 },
                Edit::Mean { over: vec![0, 1] },
                Edit::Noise {
                    scale: 3.0,
                    seed: 7,
                },
            ];
            for edit in edits {
                for heads in [None, Some((vec![1], 2))] {
                    for part in [KvPart::K, KvPart::V, KvPart::Both] {
                        let c = PlannedCondition {
                            heads: heads.clone(),
                            ..planned(edit.clone(), &[0, 2], part)
                        };
                        let copied = edited_state(&c, &whole).unwrap().serialize();
                        let prompt = whole[0].serialize();
                        let mut bytes =
                            StateBytes::new(prompt.clone(), Default::default()).unwrap();
                        let handed = with_edit(&c, &mut bytes, &inputs(&[&c], &whole), |s| {
                            s.as_bytes().to_vec()
                        })
                        .unwrap();
                        let what =
                            format!("{edit:?}, heads {heads:?}, {part:?}, v_trans {v_trans}");
                        assert_eq!(handed, copied, "{what}");
                        if edit != Edit::Remove {
                            assert_eq!(bytes.as_bytes(), &prompt[..], "{what}: prompt changed");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn edits_read_only_the_edited_positions_and_the_noise_spread_of_the_whole_prompt() {
        let whole = [state(false), numeric_donor(false)];
        let noise = planned(
            Edit::Noise {
                scale: 1.0,
                seed: 3,
            },
            &[1],
            KvPart::Both,
        );
        let zero = PlannedCondition {
            span: Span { start: 4, end: 5 },
            ..planned(Edit::Zero, &[0], KvPart::K)
        };
        let got = inputs(&[&noise, &zero], &whole);
        for (part, w) in got.parts.iter().zip(&whole) {
            assert_eq!(part, &w.with_positions(|p| (1..3).contains(&p) || p == 4));
        }
        // σ summed in pieces over the whole prompt: the σ of the whole state.
        let spread = &got.spreads[&0];
        for half in [Half::K, Half::V] {
            let mut sums = Sums::default();
            sums.add(&whole[0], half, 1).unwrap();
            assert_eq!(spread.sigma(1, half), Some(sums.sigma()));
        }
        assert!(!got.spreads.contains_key(&1));
    }

    #[test]
    fn an_edit_that_cannot_be_made_where_the_rows_lie_fails_and_leaves_the_prompt() {
        let whole = [state(false), {
            let mut d = state(false);
            d.retain_positions(|p| p != 2);
            d
        }];
        let c = planned(Edit::Transplant { donor: 1 }, &[0], KvPart::Both);
        let prompt = whole[0].serialize();
        let mut bytes = StateBytes::new(prompt.clone(), Default::default()).unwrap();
        let mut called = false;
        assert!(with_edit(&c, &mut bytes, &inputs(&[&c], &whole), |_| called = true).is_err());
        assert!(!called);
        assert_eq!(bytes.as_bytes(), &prompt[..]);
    }
}
