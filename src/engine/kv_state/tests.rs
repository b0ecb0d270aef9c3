//! Unit tests of the codec on synthetic states.

use super::synthetic;
use super::*;
use proptest::prelude::*;

#[test]
fn round_trips_both_v_layouts() {
    for v_trans in [false, true] {
        let bytes = synthetic(&[0, 1, 2, 3], 3, 4, v_trans);
        let st = SeqState::parse(&bytes, LayoutHints::default()).unwrap();
        assert_eq!(st.serialize(), bytes);
        assert_eq!(st.n_layer(), 3);
        assert_eq!(st.positions(), vec![0, 1, 2, 3]);
    }
}

#[test]
fn removing_positions_leaves_the_state_of_the_other_cells() {
    for v_trans in [false, true] {
        let mut st = SeqState::parse(
            &synthetic(&[0, 1, 2, 3, 4], 2, 4, v_trans),
            LayoutHints::default(),
        )
        .unwrap();
        let kept = SeqState::parse(
            &synthetic(&[0, 1, 2, 3, 4], 2, 4, v_trans),
            LayoutHints::default(),
        )
        .unwrap();
        st.remove_positions(1, 3);
        assert_eq!(st.positions(), vec![0, 3, 4]);
        for pos in [0, 3, 4] {
            let (a, b) = (st.cells_at(pos)[0], kept.cells_at(pos)[0]);
            for layer in 0..2 {
                assert_eq!(
                    st.k_row_f32(layer, a).unwrap(),
                    kept.k_row_f32(layer, b).unwrap()
                );
                assert_eq!(
                    st.v_row_f32(layer, a).unwrap(),
                    kept.v_row_f32(layer, b).unwrap()
                );
            }
        }
        // What is left serializes to bytes that parse back to the same state.
        let again = SeqState::parse(&st.serialize(), LayoutHints::default()).unwrap();
        assert_eq!(again, st);
        st.remove_positions(0, 10);
        assert_eq!(st.positions(), Vec::<i32>::new());
        assert!(st.streams.iter().all(Option::is_none));
    }
}

#[test]
fn reads_rows_in_both_layouts_identically() {
    let a = SeqState::parse(&synthetic(&[5, 6, 7], 2, 4, false), LayoutHints::default()).unwrap();
    let b = SeqState::parse(&synthetic(&[5, 6, 7], 2, 4, true), LayoutHints::default()).unwrap();
    let r = a.cells_at(6)[0];
    assert_eq!(r, CellRef { stream: 0, cell: 1 });
    let expect: Vec<f32> = (0..4).map(|j| -((1000 + 10 + j) as f32) / 64.0).collect();
    assert_eq!(a.v_row_f32(1, r).unwrap(), expect);
    assert_eq!(b.v_row_f32(1, r).unwrap(), expect);
    let k: Vec<f32> = (0..4).map(|j| ((1000 + 10 + j) as f32) / 64.0).collect();
    assert_eq!(a.k_row_f32(1, r).unwrap(), k);
}

#[test]
fn zero_touches_only_the_chosen_cell_layer_and_part() {
    for v_trans in [false, true] {
        let orig = SeqState::parse(
            &synthetic(&[0, 1, 2], 2, 4, v_trans),
            LayoutHints::default(),
        )
        .unwrap();
        let mut st = orig.clone();
        let r = st.cells_at(1)[0];
        st.zero_cell(1, r, KvPart::V).unwrap();
        for layer in 0..2 {
            for (cr, _) in orig.cells() {
                let zeroed = layer == 1 && cr == r;
                assert_eq!(
                    st.k_row_f32(layer, cr).unwrap(),
                    orig.k_row_f32(layer, cr).unwrap()
                );
                let v = st.v_row_f32(layer, cr).unwrap();
                if zeroed {
                    assert!(v.iter().all(|&x| x == 0.0));
                } else {
                    assert_eq!(v, orig.v_row_f32(layer, cr).unwrap());
                }
            }
        }
    }
}

#[test]
fn copy_takes_the_donor_rows() {
    let donor =
        SeqState::parse(&synthetic(&[0, 1, 2], 2, 4, true), LayoutHints::default()).unwrap();
    let mut st = donor.clone();
    // Make the recipient differ everywhere, then copy one cell back.
    for (cr, _) in donor.cells() {
        for l in 0..2 {
            st.zero_cell(l, cr, KvPart::Both).unwrap();
        }
    }
    let src = donor.cells_at(2)[0];
    let dst = st.cells_at(0)[0];
    st.copy_cell_from(&donor, 0, dst, src, KvPart::Both)
        .unwrap();
    assert_eq!(
        st.k_row_f32(0, dst).unwrap(),
        donor.k_row_f32(0, src).unwrap()
    );
    assert_eq!(
        st.v_row_f32(0, dst).unwrap(),
        donor.v_row_f32(0, src).unwrap()
    );
    assert!(st.k_row_f32(1, dst).unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn refuses_foreign_and_damaged_states_with_reasons() {
    let bytes = synthetic(&[0, 1], 2, 4, true);
    let mut bad = bytes.clone();
    bad[0] ^= 0xff;
    assert!(matches!(
        SeqState::parse(&bad, LayoutHints::default()),
        Err(KvStateError::BadMagic { .. })
    ));
    assert!(matches!(
        SeqState::parse(&bytes[..bytes.len() - 1], LayoutHints::default()),
        Err(KvStateError::Truncated { .. })
    ));
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 8]);
    assert_eq!(
        SeqState::parse(&longer, LayoutHints::default()),
        Err(KvStateError::TrailingBytes(8))
    );
    let msg = SeqState::parse(&longer, LayoutHints::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not supported"), "{msg}");
}

#[test]
fn quantized_rows_of_types_a_cache_does_not_take_can_be_zeroed_but_not_read() {
    let mut st = SeqState::parse(&synthetic(&[0, 1], 1, 4, false), LayoutHints::default()).unwrap();
    st.streams[0].as_mut().unwrap().k[0].ggml_type = 12; // q4_K
    let r = st.cells_at(0)[0];
    let err = st.k_row_f32(0, r).unwrap_err();
    assert!(err.to_string().contains("ggml type 12"), "{err}");
    st.zero_cell(0, r, KvPart::K).unwrap();
    assert!(st.k_row_bytes(0, r).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn layer_out_of_range_is_an_error() {
    let st = SeqState::parse(&synthetic(&[0], 2, 4, false), LayoutHints::default()).unwrap();
    let r = st.cells_at(0)[0];
    assert_eq!(
        st.k_row_f32(2, r),
        Err(KvStateError::LayerOutOfRange {
            layer: 2,
            n_layer: 2
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// Random corruption is either refused or parsed into something that serializes back to
    /// the same bytes; it never panics.
    #[test]
    fn corruption_never_panics(flips in proptest::collection::vec((0usize..10_000, any::<u8>()), 1..6),
                               cut in 0usize..10_000, v_trans in any::<bool>()) {
        let mut bytes = synthetic(&[0, 1, 2], 2, 4, v_trans);
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x;
        }
        let n = bytes.len();
        bytes.truncate(n - cut % 8);
        if let Ok(st) = SeqState::parse(&bytes, LayoutHints::default()) {
            prop_assert_eq!(st.serialize(), bytes);
        }
    }
}

/// An iSWA state: the base cache's part, then the sliding cache's, each as llama.cpp writes a
/// plain cache after the state's header.
fn iswa_bytes() -> Vec<u8> {
    let base = synthetic(&[0, 1, 2], 1, 4, false);
    let swa = synthetic(&[1, 2], 2, 4, true);
    let mut b = base;
    b.extend_from_slice(&swa[8..]);
    b
}

fn iswa_hints(sliding: Vec<bool>) -> LayoutHints {
    LayoutHints {
        cell_ext: false,
        swa: Some(SwaSplit { sliding }),
    }
}

#[test]
fn an_iswa_state_maps_model_layers_to_both_caches() {
    let bytes = iswa_bytes();
    // Layer 1 attends fully (the base cache's one layer); 0 and 2 slide.
    let st = SeqState::parse(&bytes, iswa_hints(vec![true, false, true])).unwrap();
    assert_eq!(st.serialize(), bytes);
    assert_eq!(st.n_layer(), 3);
    assert!(st.is_sliding(0) && !st.is_sliding(1));
    // Position 0 is older than the window: only the full-attention layer has it.
    let first = st.cells_at(0)[0];
    assert!(st.k_row_f32(1, first).is_ok());
    assert_eq!(
        st.k_row_f32(0, first),
        Err(KvStateError::OutsideWindow { pos: 0, layer: 0 })
    );
    // Model layer 2 is the sliding cache's second layer; position 2 its second cell.
    let r = st.cells_at(2)[0];
    let k: Vec<f32> = (0..4).map(|j| ((1000 + 10 + j) as f32) / 64.0).collect();
    assert_eq!(st.k_row_f32(2, r).unwrap(), k);
    // Zeroing in every layer changes the base cache's and the sliding cache's rows of that
    // position, and leaves position 0's absent sliding rows alone.
    let mut z = st.clone();
    for layer in 0..3 {
        z.zero_cell(layer, r, KvPart::Both).unwrap();
        z.zero_cell(layer, first, KvPart::K).unwrap();
    }
    for layer in 0..3 {
        assert!(z.k_row_f32(layer, r).unwrap().iter().all(|&x| x == 0.0));
        assert!(z.v_row_f32(layer, r).unwrap().iter().all(|&x| x == 0.0));
        let middle = z.cells_at(1)[0];
        assert_eq!(z.k_row_bytes(layer, middle), st.k_row_bytes(layer, middle));
    }
}

#[test]
fn an_iswa_split_that_does_not_match_the_caches_is_refused() {
    let e = SeqState::parse(&iswa_bytes(), iswa_hints(vec![false, false, true])).unwrap_err();
    assert!(
        matches!(e, KvStateError::Malformed(ref m) if m.contains("holds 1 layers where the model's layer pattern gives it 2")),
        "{e}"
    );
    // Without the split, the second cache is unexplained.
    assert!(matches!(
        SeqState::parse(&iswa_bytes(), LayoutHints::default()),
        Err(KvStateError::TrailingBytes(_))
    ));
}

/// The states of the codec's layouts: plain with V as rows and transposed, and iSWA (whose
/// position 0 is outside the sliding window).
fn every_layout() -> Vec<SeqState> {
    let mut all: Vec<SeqState> = [false, true]
        .iter()
        .map(|&t| {
            SeqState::parse(
                &synthetic(&[0, 1, 2, 3, 4], 3, 4, t),
                LayoutHints::default(),
            )
            .unwrap()
        })
        .collect();
    all.push(SeqState::parse(&iswa_bytes(), iswa_hints(vec![true, false, true])).unwrap());
    all
}

#[test]
fn a_part_copied_out_is_the_state_with_the_other_cells_removed() {
    for st in every_layout() {
        for keep in [
            |p: i32| p == 0,
            |p: i32| (1..3).contains(&p),
            |_| true,
            |_| false,
        ] {
            let mut removed = st.clone();
            removed.retain_positions(keep);
            let part = st.with_positions(keep);
            assert_eq!(part, removed);
            assert_eq!(part.serialize(), removed.serialize());
        }
    }
}

#[test]
fn a_part_written_back_changes_exactly_its_rows_and_putting_it_back_restores_every_byte() {
    for st in every_layout() {
        let n_layer = st.n_layer();
        let original = st.with_positions(|p| p == 2);
        let mut edited = original.clone();
        let cell = edited.cells_at(2)[0];
        for layer in 0..n_layer {
            edited.zero_cell(layer, cell, KvPart::Both).unwrap();
        }
        let mut whole = st.clone();
        whole.overwrite_positions_from(&edited).unwrap();
        // The same as zeroing position 2 in the whole state.
        let mut zeroed = st.clone();
        let at = zeroed.cells_at(2)[0];
        for layer in 0..n_layer {
            zeroed.zero_cell(layer, at, KvPart::Both).unwrap();
        }
        assert_eq!(whole.serialize(), zeroed.serialize());
        assert_ne!(whole.serialize(), st.serialize());
        whole.overwrite_positions_from(&original).unwrap();
        assert_eq!(whole.serialize(), st.serialize());
    }
}

#[test]
fn a_part_of_another_shape_is_refused_rather_than_written_anywhere() {
    let st = &every_layout()[0];
    let other = SeqState::parse(&synthetic(&[2], 2, 4, false), LayoutHints::default()).unwrap();
    let mut whole = st.clone();
    assert!(matches!(
        whole.overwrite_positions_from(&other),
        Err(KvStateError::Mismatch(_))
    ));
    let beyond = SeqState::parse(&synthetic(&[9], 3, 4, false), LayoutHints::default()).unwrap();
    assert!(matches!(
        whole.overwrite_positions_from(&beyond),
        Err(KvStateError::Mismatch(_))
    ));
    assert_eq!(&whole, st);
}

/// Bytes of every layout, with the hints that parse them.
fn every_layout_bytes() -> Vec<(Vec<u8>, LayoutHints)> {
    let mut all: Vec<(Vec<u8>, LayoutHints)> = [false, true]
        .iter()
        .map(|&t| (synthetic(&[0, 1, 2, 3, 4], 3, 4, t), LayoutHints::default()))
        .collect();
    all.push((iswa_bytes(), iswa_hints(vec![true, false, true])));
    all
}

#[test]
fn state_bytes_read_parts_as_the_parsed_state_does() {
    for (bytes, hints) in every_layout_bytes() {
        let st = SeqState::parse(&bytes, hints.clone()).unwrap();
        let raw = StateBytes::new(bytes.clone(), hints.clone()).unwrap();
        assert_eq!(raw.to_state(), st);
        assert_eq!(raw.positions(), st.positions());
        assert_eq!(raw.as_bytes(), &bytes[..]);
        for keep in [|p: i32| p == 0, |p: i32| (1..3).contains(&p), |_| false] {
            assert_eq!(raw.part(keep), st.with_positions(keep));
            assert_eq!(
                SeqState::parse_positions(&bytes, hints.clone(), keep).unwrap(),
                st.with_positions(keep)
            );
        }
    }
}

#[test]
fn a_part_written_into_state_bytes_changes_what_the_parsed_write_changes() {
    for (bytes, hints) in every_layout_bytes() {
        let st = SeqState::parse(&bytes, hints.clone()).unwrap();
        for span in [1..3, 2..3, 0..5] {
            let original = st.with_positions(|p| span.contains(&p));
            let mut edited = original.clone();
            for (cell, _) in original.cells() {
                for layer in 0..st.n_layer() {
                    edited.zero_cell(layer, cell, KvPart::Both).unwrap();
                }
            }
            let mut whole = st.clone();
            whole.overwrite_positions_from(&edited).unwrap();
            let mut raw = StateBytes::new(bytes.clone(), hints.clone()).unwrap();
            raw.write_part(&edited).unwrap();
            assert_eq!(raw.as_bytes(), &whole.serialize()[..], "span {span:?}");
            assert_ne!(raw.as_bytes(), &bytes[..]);
            raw.write_part(&original).unwrap();
            assert_eq!(raw.as_bytes(), &bytes[..]);
        }
    }
}

#[test]
fn state_bytes_refuse_a_part_of_another_shape_and_keep_every_byte() {
    let bytes = synthetic(&[0, 1, 2, 3, 4], 3, 4, false);
    let mut raw = StateBytes::new(bytes.clone(), LayoutHints::default()).unwrap();
    for other in [
        synthetic(&[2], 2, 4, false),
        synthetic(&[9], 3, 4, false),
        synthetic(&[2], 3, 4, true),
        synthetic(&[2], 3, 8, false),
    ] {
        let part = SeqState::parse(&other, LayoutHints::default()).unwrap();
        assert!(matches!(
            raw.write_part(&part),
            Err(KvStateError::Mismatch(_))
        ));
        assert_eq!(raw.as_bytes(), &bytes[..]);
    }
    let iswa = SeqState::parse(&iswa_bytes(), iswa_hints(vec![true, false, true])).unwrap();
    assert!(raw.write_part(&iswa.with_positions(|p| p == 1)).is_err());
    assert_eq!(raw.as_bytes(), &bytes[..]);
}

#[test]
fn removing_positions_from_state_bytes_gives_the_bytes_of_the_parsed_removal() {
    for (bytes, hints) in every_layout_bytes() {
        let st = SeqState::parse(&bytes, hints.clone()).unwrap();
        for (p0, p1) in [(1, 3), (0, 1), (4, 5), (0, 5), (7, 9), (2, 2)] {
            let mut removed = st.clone();
            removed.remove_positions(p0, p1);
            let mut raw = StateBytes::new(bytes.clone(), hints.clone()).unwrap();
            raw.remove_positions(p0, p1).unwrap();
            assert_eq!(raw.as_bytes(), &removed.serialize()[..], "{p0}..{p1}");
            assert_eq!(raw.to_state(), removed);
        }
    }
}
