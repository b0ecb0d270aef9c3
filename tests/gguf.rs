//! The header reader on the real test model's bytes, cut and forged in the test: a truncated
//! download must be named as such before llama.cpp sees it, wherever it was cut.

mod common;

use common::model_path;
use kvlab::gguf::summary_from_bytes;

fn model_bytes() -> Vec<u8> {
    std::fs::read(model_path()).expect("the test model is readable")
}

/// Whether a reason names the cut.
fn says_truncated(reason: &str, n: usize) -> bool {
    reason.contains("truncated") || reason.contains(&format!("the file has only {n} bytes"))
}

#[test]
fn the_real_model_needs_exactly_its_bytes() {
    let b = model_bytes();
    let s = summary_from_bytes(&b).unwrap();
    assert_eq!(s.tensor_count, 272);
    assert_eq!(s.data_offset % 32, 0);
    // The data section ends where the file ends: any shorter file lacks tensor bytes.
    assert_eq!(s.data_end, b.len() as u64);
    let err = summary_from_bytes(&b[..b.len() - 1]).unwrap_err();
    assert_eq!(
        err,
        format!(
            "it is truncated: its tensor data needs {} bytes, the file has {} \
             (the download may be incomplete)",
            b.len(),
            b.len() - 1
        )
    );
}

#[test]
fn every_cut_of_the_real_model_is_called_truncated() {
    let b = model_bytes();
    let s = summary_from_bytes(&b).unwrap();
    let header_end = s.data_offset as usize;
    // Every cut in the first 16 KiB and around the end of the header (the last tensor infos and
    // the padding), one in every 7 bytes of the 16 KiB before (the tensor infos), 1500 spread
    // over the metadata, then cuts spread over the tensor data. Together with `data_end == file size` above, the data cuts stand for all: once the header
    // is whole, the extent it gives does not depend on where the file was cut.
    let mut cuts: Vec<usize> = (0..16_384).collect();
    cuts.extend(header_end - 600..header_end + 64);
    cuts.extend((header_end - 16_384..header_end).step_by(7));
    cuts.extend((0..header_end).step_by(header_end / 1500));
    cuts.extend((header_end..b.len()).step_by(b.len() / 97));
    cuts.extend(b.len() - 64..b.len());
    for n in cuts {
        let err = summary_from_bytes(&b[..n]).unwrap_err();
        assert!(says_truncated(&err, n), "cut at {n}: {err}");
    }
}

#[test]
fn a_truncated_file_is_refused_before_loading() {
    let b = model_bytes();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("half.gguf");
    std::fs::write(&cut, &b[..b.len() / 2]).unwrap();
    let err = kvlab::gguf::read_summary(&cut).unwrap_err().to_string();
    assert!(
        err.contains("it is truncated: its tensor data needs"),
        "{err}"
    );
    let err = kvlab::engine::LoadedModel::load(&cut, &Default::default(), None, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("it is truncated"), "{err}");
    assert!(
        !err.contains("could not load"),
        "llama.cpp never saw it: {err}"
    );
}

#[test]
fn a_forged_tensor_shape_is_refused_with_its_name() {
    let mut b = model_bytes();
    let s = summary_from_bytes(&b).unwrap();
    // Double the embedding's first dimension: find "token_embd.weight" and the u64 after its
    // n_dims. Its data grows, so the next tensor's offset is wrong (or, were it the last, the
    // file too short).
    let name = b"token_embd.weight";
    let at = (0..s.data_offset as usize - name.len())
        .find(|&i| &b[i..i + name.len()] == name && b[i - 8] == name.len() as u8)
        .expect("the embedding's tensor info");
    let dim0 = at + name.len() + 4;
    let ne0 = u64::from_le_bytes(b[dim0..dim0 + 8].try_into().unwrap());
    b[dim0..dim0 + 8].copy_from_slice(&(ne0 * 2).to_le_bytes());
    let err = summary_from_bytes(&b).unwrap_err();
    assert!(
        err.contains("has offset") || err.contains("truncated"),
        "{err}"
    );
}

/// `kvlab bench --scale`'s model: llama.cpp loads it with Llama 3.1 8B's cache shape (32 layers,
/// 8 KV heads of 128 values: 128 KiB per token at f16), the demo model's tokenizer and chat
/// template, and kvlab can edit its cache.
#[test]
fn the_scale_model_has_the_cache_shape_of_llama_3_1_8b() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scale.gguf");
    kvlab::gguf::writer::llama_8b_cache_shape(&common::model_path(), &path).unwrap();
    let header = kvlab::gguf::read_summary(&path).unwrap();
    assert_eq!(header.kv_bytes_per_cell(), 128 * 1024);
    let m = kvlab::engine::LoadedModel::load(
        &path,
        &kvlab::engine::LoadOptions::default(),
        None,
        |_| {},
    )
    .unwrap();
    let info = m.info();
    assert_eq!((info.n_layer, info.n_head, info.n_head_kv), (32, 32, 8));
    assert_eq!(info.head_dims(), (128, 128));
    assert!(info.has_chat_template);
    assert_eq!(
        kvlab::runner::fits::kv_bytes_per_cell(info, Default::default()),
        128 * 1024
    );
    m.check_kv_surgery_supported().unwrap();
    let demo: Vec<i32> = (common::model()
        .tokenize("I am flying to SF", true, false)
        .unwrap())
    .iter()
    .map(|t| t.id)
    .collect();
    let here: Vec<i32> = (m.tokenize("I am flying to SF", true, false).unwrap())
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(here, demo, "the demo model's tokenizer");
}
