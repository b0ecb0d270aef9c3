//! Unit tests of the header reader on headers written in the test.

use super::*;

/// A GGUF header writer for tests.
#[derive(Default)]
struct Gguf {
    kvs: Vec<u8>,
    n: u64,
}

impl Gguf {
    fn key(&mut self, k: &str, ty: u32) {
        self.kvs.extend((k.len() as u64).to_le_bytes());
        self.kvs.extend(k.as_bytes());
        self.kvs.extend(ty.to_le_bytes());
        self.n += 1;
    }
    fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k, 8);
        self.kvs.extend((v.len() as u64).to_le_bytes());
        self.kvs.extend(v.as_bytes());
        self
    }
    fn u32(mut self, k: &str, v: u32) -> Self {
        self.key(k, 4);
        self.kvs.extend(v.to_le_bytes());
        self
    }
    fn f32(mut self, k: &str, v: f32) -> Self {
        self.key(k, 6);
        self.kvs.extend(v.to_le_bytes());
        self
    }
    fn i32s(mut self, k: &str, v: &[i32]) -> Self {
        self.key(k, 9);
        self.kvs.extend(5u32.to_le_bytes());
        self.kvs.extend((v.len() as u64).to_le_bytes());
        for x in v {
            self.kvs.extend(x.to_le_bytes());
        }
        self
    }
    fn strs(mut self, k: &str, v: &[&str]) -> Self {
        self.key(k, 9);
        self.kvs.extend(8u32.to_le_bytes());
        self.kvs.extend((v.len() as u64).to_le_bytes());
        for s in v {
            self.kvs.extend((s.len() as u64).to_le_bytes());
            self.kvs.extend(s.as_bytes());
        }
        self
    }
    /// The whole file: header, seven Q4_1 tensors of 2 × 32 values (40 bytes each, padded to
    /// 64), and their data.
    fn bytes(&self) -> Vec<u8> {
        let q4_1: (u32, &[u64]) = (3, &[32, 2]);
        self.bytes_with(&[q4_1; 7], 32)
    }
    /// The whole file with the given tensors (ggml type, shape), data aligned to `align`.
    fn bytes_with(&self, tensors: &[(u32, &[u64])], align: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend(self.n.to_le_bytes());
        b.extend(&self.kvs);
        let mut offset = 0u64;
        for (i, (ty, dims)) in tensors.iter().enumerate() {
            let name = format!("t{i}.weight");
            b.extend((name.len() as u64).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
            let (blck, size) = ggml_type_block(*ty).unwrap();
            let n: u64 = dims.iter().product();
            offset += (n / blck * size).next_multiple_of(align);
        }
        b.resize((b.len() as u64).next_multiple_of(align) as usize, 0);
        b.resize(b.len() + offset as usize, 0x55);
        b
    }
}

fn llama_like() -> Gguf {
    Gguf::default()
        .str("general.architecture", "llama")
        .str("general.name", "Tiny")
        .u32("general.file_type", 3)
        .strs("tokenizer.ggml.tokens", &["<s>", "a", "b"])
        .u32("llama.block_count", 30)
        .u32("llama.embedding_length", 576)
        .u32("llama.attention.head_count", 9)
        .u32("llama.attention.head_count_kv", 3)
        .f32("llama.rope.freq_base", 10000.0)
        .u32("llama.context_length", 8192)
        .str("tokenizer.chat_template", "{{ messages }}")
}

#[test]
fn reads_what_the_estimate_needs() {
    let s = summary_from_bytes(&llama_like().bytes()).unwrap();
    assert_eq!(s.architecture, "llama");
    assert_eq!(s.name.as_deref(), Some("Tiny"));
    assert_eq!(s.quantization.as_deref(), Some("Q4_1"));
    assert_eq!((s.n_layer, s.n_embd, s.n_head), (30, 576, 9));
    assert_eq!(s.n_head_kv, vec![3]);
    assert_eq!((s.head_dim_k, s.head_dim_v), (64, 64));
    assert_eq!(s.n_ctx_train, 8192);
    assert!(s.has_chat_template);
    assert_eq!(s.tensor_count, 7);
    // SmolLM2-135M: 30 layers × 3 KV heads × 64 × (K + V) × 2 bytes = 23,040 B, what
    // llama.cpp's state bytes measure per cell.
    assert_eq!(s.kv_bytes_per_cell(), 23_040);
}

#[test]
fn per_layer_kv_heads_and_explicit_head_sizes() {
    let g = Gguf::default()
        .str("general.architecture", "openelm")
        .u32("openelm.block_count", 3)
        .u32("openelm.embedding_length", 1280)
        .i32s("openelm.attention.head_count", &[4, 8, 16])
        .i32s("openelm.attention.head_count_kv", &[1, 2, 4])
        .u32("openelm.attention.key_length", 64)
        .u32("openelm.attention.value_length", 32);
    let s = summary_from_bytes(&g.bytes()).unwrap();
    assert_eq!(s.n_head, 16);
    assert_eq!(s.n_head_kv, vec![1, 2, 4]);
    assert_eq!(s.kv_bytes_per_cell(), 2 * (1 + 2 + 4) * (64 + 32));
}

#[test]
fn says_what_is_wrong() {
    let bytes = llama_like().bytes();
    let err = summary_from_bytes(&bytes[..bytes.len() - 1000]).unwrap_err();
    assert!(err.contains("past the end of the file"), "{err}");
    assert!(err.contains("truncated"), "{err}");
    let err = summary_from_bytes(&bytes[..100]).unwrap_err();
    assert!(err.contains("cut off after 100 bytes"), "{err}");
    assert!(
        summary_from_bytes(b"GGU")
            .unwrap_err()
            .contains("only 3 bytes")
    );
    assert!(
        summary_from_bytes(b"{\"json\": 1}")
            .unwrap_err()
            .contains("not \"GGUF\"")
    );
    let mut v1 = bytes.clone();
    v1[4] = 1;
    assert!(summary_from_bytes(&v1).unwrap_err().contains("version 1"));
    let no_arch = Gguf::default().u32("llama.block_count", 3).bytes();
    assert!(
        summary_from_bytes(&no_arch)
            .unwrap_err()
            .contains("architecture")
    );
}

#[test]
fn values_llama_cpp_asserts_on_are_refused_before_it_sees_them() {
    let err = |g: Gguf| summary_from_bytes(&g.bytes()).unwrap_err();
    let llama = || Gguf::default().str("general.architecture", "llama");
    let layers = |n| llama().u32("llama.block_count", n);
    assert!(err(llama()).contains("no llama.block_count"));
    let e = err(layers(0));
    assert!(
        e.contains("llama.block_count is 0; llama.cpp accepts 1 to 512"),
        "{e}"
    );
    assert!(err(layers(513)).contains("LLAMA_MAX_LAYERS"));
    assert!(summary_from_bytes(&layers(512).bytes()).is_ok());
    assert!(summary_from_bytes(&layers(1).bytes()).is_ok());
    let e = err(layers(30).u32("llama.expert_count", 1025));
    assert!(e.contains("expert_count is 1025"), "{e}");
    let e = err(layers(30).u32("llama.expert_count", 8));
    assert!(e.contains("expert_used_count is 0 or missing"), "{e}");
    let e = err(layers(30)
        .u32("llama.expert_count", 8)
        .u32("llama.expert_used_count", 9));
    assert!(e.contains("expert_used_count is 9"), "{e}");
    let e = err(layers(30)
        .u32("llama.expert_count", 8)
        .u32("llama.expert_used_count", 2)
        .u32("llama.expert_group_count", 3));
    assert!(e.contains("expert_group_count is 3"), "{e}");
    let moe = layers(30)
        .u32("llama.expert_count", 8)
        .u32("llama.expert_used_count", 2)
        .u32("llama.expert_group_count", 4)
        .u32("llama.expert_group_used_count", 2);
    assert!(summary_from_bytes(&moe.bytes()).is_ok());
    let e = err(layers(30).str("llama.rope.scaling.type", "YaRN"));
    assert!(e.contains("rope.scaling.type is \"YaRN\""), "{e}");
    assert!(summary_from_bytes(&layers(30).str("llama.rope.scaling.type", "yarn").bytes()).is_ok());
    let e = err(layers(30).u32("llama.nextn_predict_layers", 31));
    assert!(e.contains("nextn_predict_layers is 31"), "{e}");
    let e = err(layers(30).u32("llama.attention.head_count_kv", u32::MAX));
    assert!(e.contains("head_count_kv is 4294967295"), "{e}");
    let e = err(layers(3).i32s("llama.attention.head_count_kv", &[1, -1, 2]));
    assert!(e.contains("head_count_kv is -1"), "{e}");
    let e = err(layers(30).str("general.name", "a").str("general.name", "b"));
    assert!(e.contains("\"general.name\" appears twice"), "{e}");
    let e = err(layers(30).str("", "x"));
    assert!(e.contains("empty metadata key"), "{e}");
}

#[test]
fn estimates_saturate_instead_of_overflowing() {
    let per_cell = kv_bytes_per_cell(std::iter::repeat_n(u32::MAX, 600), u32::MAX, u32::MAX);
    assert_eq!(per_cell, u64::MAX);
    assert_eq!(kv_cells_for_run(u64::MAX, u64::MAX, u64::MAX), u64::MAX);
    assert_eq!(kv_cells_for_run(2, 0, u64::MAX), u64::MAX);
}

#[test]
fn cells_for_a_run_match_the_lab() {
    // 2 variants + 8 conditions, a 77-token prompt, 100 tokens: 256 cells per sequence.
    assert_eq!(kv_cells_for_run(10, 77, 100), 2560);
    assert_eq!(kv_cells_for_run(1, 249, 0), 512);
}

proptest::proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = summary_from_bytes(&bytes);
    }

    #[test]
    fn corrupted_headers_never_panic(pos in 0usize..400, byte in proptest::num::u8::ANY) {
        let mut b = llama_like().bytes();
        let i = pos % b.len();
        b[i] = byte;
        let _ = summary_from_bytes(&b);
    }
}

#[test]
fn the_tensor_data_extent_is_where_the_last_tensor_ends() {
    let g = llama_like();
    let bytes = g.bytes();
    let s = summary_from_bytes(&bytes).unwrap();
    // Seven tensors of 40 bytes, each but the last padded to 64.
    assert_eq!(s.data_end - s.data_offset, 6 * 64 + 40);
    assert_eq!(s.data_offset % 32, 0);
    // The writer pads the last tensor too: the file may be longer than the data needs.
    assert_eq!(bytes.len() as u64, s.data_offset + 7 * 64);
    assert!(summary_from_bytes(&bytes[..s.data_end as usize]).is_ok());
    let err = summary_from_bytes(&bytes[..s.data_end as usize - 1]).unwrap_err();
    assert_eq!(
        err,
        format!(
            "it is truncated: its tensor data needs {} bytes, the file has {} \
             (the download may be incomplete)",
            s.data_end,
            s.data_end - 1
        )
    );
}

#[test]
fn every_cut_of_a_small_file_is_called_truncated() {
    let bytes = llama_like().bytes();
    let s = summary_from_bytes(&bytes).unwrap();
    for n in 0..s.data_end as usize {
        let err = summary_from_bytes(&bytes[..n]).unwrap_err();
        assert!(
            err.contains("truncated") || err.contains(&format!("only {n} bytes")),
            "cut at {n}: {err}"
        );
    }
}

#[test]
fn alignment_and_block_sizes_follow_llama_cpp() {
    // A 64-byte alignment moves the data start and the padding between tensors.
    let g = llama_like().u32("general.alignment", 64);
    let b = g.bytes_with(&[(0, &[3]), (8, &[64, 2])], 64);
    let s = summary_from_bytes(&b).unwrap();
    assert_eq!(s.data_offset % 64, 0);
    // F32 × 3 = 12 bytes padded to 64, then Q8_0: 2 rows of 2 blocks of 34 bytes.
    assert_eq!(s.data_end - s.data_offset, 64 + 4 * 34);
    let e = summary_from_bytes(&llama_like().u32("general.alignment", 48).bytes()).unwrap_err();
    assert!(
        e.contains("general.alignment is 48, not a power of 2"),
        "{e}"
    );
    // Rows that are not whole blocks, unknown types, bad offsets: what llama.cpp refuses.
    let e = summary_from_bytes(&llama_like().bytes_with(&[(2, &[31])], 32)).unwrap_err();
    assert!(
        e.contains("not a multiple of its type's block of 32"),
        "{e}"
    );
    let mut b = llama_like().bytes_with(&[(0, &[4]), (0, &[4])], 32);
    let s = summary_from_bytes(&b).unwrap();
    // The second tensor's offset field: the last 8 bytes before the data's padding.
    let second_offset = find_last(&b[..s.data_offset as usize], &32u64.to_le_bytes());
    b[second_offset..second_offset + 8].copy_from_slice(&40u64.to_le_bytes());
    let e = summary_from_bytes(&b).unwrap_err();
    assert!(
        e.contains("has offset 40, where llama.cpp expects 32"),
        "{e}"
    );
    let e = summary_from_bytes(&llama_like().bytes_with_unchecked(&[(4, &[4])])).unwrap_err();
    assert!(e.contains("ggml type 4"), "{e}");
    let e = summary_from_bytes(&llama_like().bytes_with(&[(0, &[1, 1, 1, 1, 1])], 32)).unwrap_err();
    assert!(e.contains("5 dimensions"), "{e}");
    let huge = [u32::MAX as u64 * 4, u32::MAX as u64 * 4, 4];
    let e = summary_from_bytes(&llama_like().bytes_with_unchecked(&[(0, &huge)])).unwrap_err();
    assert!(e.contains("too large"), "{e}");
}

/// Where `needle` last occurs in `hay`.
fn find_last(hay: &[u8], needle: &[u8]) -> usize {
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
        .unwrap()
}

impl Gguf {
    /// A header whose tensor infos describe shapes too large to write data for (no data).
    fn bytes_with_unchecked(&self, tensors: &[(u32, &[u64])]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend(self.n.to_le_bytes());
        b.extend(&self.kvs);
        for (ty, dims) in tensors {
            b.extend(4u64.to_le_bytes());
            b.extend(b"huge");
            b.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(0u64.to_le_bytes());
        }
        b
    }
}

#[test]
fn the_header_says_whether_the_cache_can_be_edited() {
    let mut s = GgufSummary {
        architecture: "gemma3".into(),
        ..GgufSummary::default()
    };
    assert!(s.kv_surgery_support().is_ok());
    // A sliding window alone decides nothing before loading: whether llama.cpp keeps a second
    // cache for it is known from the state it writes (checked at load).
    s.sliding_window = Some(512);
    assert!(s.kv_surgery_support().is_ok());
    s.architecture = "exaone4".into();
    assert!(s.kv_surgery_support().is_ok());
    s.sliding_window = None;
    s.recurrent = true;
    assert!(
        s.kv_surgery_support()
            .unwrap_err()
            .contains("recurrent state")
    );
}
