//! The number type of the KV cache's K and V tensors: f16 (llama.cpp's default) or one of the
//! quantized types llama.cpp accepts for a cache, which laptop users pick to fit longer prompts.
//! Every intervention works on all of them: zero and copy on the bytes, the rest through ggml's
//! own conversions ([`super::ggml_types`]).

use llama_cpp_2::context::params::KvCacheType;
use serde::{Deserialize, Serialize};

/// One cache tensor's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheType {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (llama.cpp's default).
    #[default]
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit blocks of 32 with one f16 scale.
    Q8_0,
    /// 5-bit blocks with a scale and a minimum.
    Q5_1,
    /// 5-bit blocks with a scale.
    Q5_0,
    /// 4-bit blocks with a scale and a minimum.
    Q4_1,
    /// 4-bit blocks with a scale.
    Q4_0,
    /// 4-bit non-linear blocks.
    Iq4Nl,
}

impl CacheType {
    /// Every type, for menus.
    pub const ALL: [CacheType; 9] = [
        CacheType::F16,
        CacheType::Bf16,
        CacheType::F32,
        CacheType::Q8_0,
        CacheType::Q5_1,
        CacheType::Q5_0,
        CacheType::Q4_1,
        CacheType::Q4_0,
        CacheType::Iq4Nl,
    ];

    /// Its name as llama.cpp's tools spell it (`--cache-type-k q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
            CacheType::Bf16 => "bf16",
            CacheType::Q8_0 => "q8_0",
            CacheType::Q5_1 => "q5_1",
            CacheType::Q5_0 => "q5_0",
            CacheType::Q4_1 => "q4_1",
            CacheType::Q4_0 => "q4_0",
            CacheType::Iq4Nl => "iq4_nl",
        }
    }

    /// Reads a name as [`name`](Self::name) writes it.
    pub fn parse(name: &str) -> Result<CacheType, String> {
        CacheType::ALL
            .into_iter()
            .find(|t| t.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                let names: Vec<&str> = CacheType::ALL.iter().map(|t| t.name()).collect();
                format!("unknown cache type {name:?}: one of {}", names.join(", "))
            })
    }

    /// Whether it is a block-quantized type (a quantized V cache needs flash attention).
    pub fn is_quantized(self) -> bool {
        !matches!(self, CacheType::F32 | CacheType::F16 | CacheType::Bf16)
    }

    /// Bytes per block and values per block, as ggml stores the type (a K or V row of a
    /// multiple of 32 values takes `row / values × bytes`).
    pub fn block(self) -> (u64, u64) {
        match self {
            CacheType::F32 => (4, 1),
            CacheType::F16 | CacheType::Bf16 => (2, 1),
            CacheType::Q8_0 => (34, 32),
            CacheType::Q5_1 => (24, 32),
            CacheType::Q5_0 => (22, 32),
            CacheType::Q4_1 => (20, 32),
            CacheType::Q4_0 | CacheType::Iq4Nl => (18, 32),
        }
    }

    /// Bytes a row of `n` values takes (whole blocks; saturating).
    pub fn row_bytes(self, n: u64) -> u64 {
        let (bytes, values) = self.block();
        n.div_ceil(values).saturating_mul(bytes)
    }

    pub(crate) fn to_llama(self) -> KvCacheType {
        match self {
            CacheType::F32 => KvCacheType::F32,
            CacheType::F16 => KvCacheType::F16,
            CacheType::Bf16 => KvCacheType::BF16,
            CacheType::Q8_0 => KvCacheType::Q8_0,
            CacheType::Q5_1 => KvCacheType::Q5_1,
            CacheType::Q5_0 => KvCacheType::Q5_0,
            CacheType::Q4_1 => KvCacheType::Q4_1,
            CacheType::Q4_0 => KvCacheType::Q4_0,
            CacheType::Iq4Nl => KvCacheType::IQ4_NL,
        }
    }
}

impl std::fmt::Display for CacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The K and V caches' types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheTypes {
    /// The keys' type.
    pub k: CacheType,
    /// The values' type.
    pub v: CacheType,
}

impl CacheTypes {
    /// Whether both are f16 (llama.cpp's default).
    pub fn is_default(&self) -> bool {
        *self == CacheTypes::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are whole blocks (the block sizes themselves are checked against the linked ggml
    /// in `engine::tests`).
    #[test]
    fn rows_take_whole_blocks() {
        assert_eq!(CacheType::F16.row_bytes(64), 128);
        assert_eq!(CacheType::F32.row_bytes(64), 256);
        assert_eq!(CacheType::Q8_0.row_bytes(64), 68);
        assert_eq!(CacheType::Q4_0.row_bytes(128), 72);
        assert_eq!(
            CacheType::Q5_1.row_bytes(33),
            48,
            "a partial block is a whole block"
        );
    }

    #[test]
    fn names_read_back_and_unknown_ones_are_listed() {
        for t in CacheType::ALL {
            assert_eq!(CacheType::parse(t.name()), Ok(t));
        }
        assert_eq!(CacheType::parse(" Q8_0 "), Ok(CacheType::Q8_0));
        let e = CacheType::parse("q3_k").unwrap_err();
        assert!(e.contains("q8_0") && e.contains("q3_k"), "{e}");
        assert_eq!(
            serde_json::to_string(&CacheType::Iq4Nl).unwrap(),
            "\"iq4_nl\""
        );
    }
}
