//! Which layers of a sliding-window model slide, derived exactly as llama.cpp's model loader
//! derives it, so that the state codec can give every cache row its model layer number.
//!
//! Why derive it: llama.cpp keeps such models' K/V in two caches (its iSWA cache: the
//! full-attention layers in one, the sliding ones in the other) and writes both into a sequence's
//! state without saying which layer is which; its public API does not expose the per-layer flag
//! either. The loader sets it from the GGUF key `<arch>.attention.sliding_window_pattern` when
//! present (a period, or one flag per layer), else from a period fixed per architecture
//! (`load_swa_pattern(ml, n, dense_first)` in `src/models/<arch>.cpp`), with
//! `is_swa(il) = il % n < n - 1` (or `il % n != 0` when the dense layer comes first). The codec
//! checks each cache's layer count against the result, and the Gemma 3 test checks the mapping
//! on the real model (cells older than the window are missing in exactly the sliding layers).

use super::kv_state::SwaSplit;

/// Architectures whose llama.cpp cache is iSWA, with the loader's default period and whether
/// the dense layer comes first. Only these are mapped; Gemma 3 is verified on a real model.
const ISWA_ARCHITECTURES: &[(&str, u32, bool)] = &[
    ("gemma2", 2, false),
    ("gemma3", 6, false),
    ("cohere2", 4, false),
    ("gpt-oss", 2, false),
];

/// Whether kvlab knows how llama.cpp lays out `architecture`'s two caches.
pub fn is_mapped(architecture: &str) -> bool {
    ISWA_ARCHITECTURES.iter().any(|(a, ..)| *a == architecture)
}

/// The split of `n_layer` layers for a model of `architecture` with sliding window `window`
/// (`<arch>.attention.sliding_window`) and the pattern key's value as llama.cpp prints it
/// (`pattern`: a number, or an array such as `[true, true, false]`). `Ok(None)`: a plain cache
/// (no window, or an architecture llama.cpp gives one cache).
pub fn split(
    architecture: &str,
    n_layer: u32,
    window: Option<u32>,
    pattern: Option<&str>,
) -> Result<Option<SwaSplit>, String> {
    let Some(&(_, period, dense_first)) =
        ISWA_ARCHITECTURES.iter().find(|(a, ..)| *a == architecture)
    else {
        return Ok(None);
    };
    if window.unwrap_or(0) == 0 {
        return Ok(None);
    }
    let n = n_layer as usize;
    let sliding = match pattern.map(str::trim) {
        None => periodic(n, period, dense_first),
        Some(text) if text.starts_with('[') => {
            let flags = text
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|f| match f.trim() {
                    "true" | "1" => Ok(true),
                    "false" | "0" => Ok(false),
                    other => Err(format!(
                        "{architecture}.attention.sliding_window_pattern has {other:?} where a flag belongs"
                    )),
                })
                .collect::<Result<Vec<bool>, String>>()?;
            if flags.len() != n {
                return Err(format!(
                    "{architecture}.attention.sliding_window_pattern lists {} layers, the model has {n}",
                    flags.len()
                ));
            }
            flags
        }
        Some(text) => {
            let period = text.parse::<u32>().map_err(|_| {
                format!("{architecture}.attention.sliding_window_pattern is {text:?}, not a layer pattern")
            })?;
            periodic(n, period, dense_first)
        }
    };
    Ok(Some(SwaSplit { sliding }))
}

/// In words, for the model panel and `kvlab inspect`: "sliding window of 512 tokens in 15 of
/// 18 layers; layers 5, 11, 17 see every token".
pub fn describe(window: u32, split: &SwaSplit) -> String {
    let full: Vec<String> = split.base_layers().iter().map(|l| l.to_string()).collect();
    let n = split.sliding.len();
    let sees = match full.len() {
        0 => "no layer sees every token".to_string(),
        1 => format!("layer {} sees every token", full[0]),
        _ => format!("layers {} see every token", full.join(", ")),
    };
    format!(
        "sliding window of {window} tokens in {} of {n} layers; {sees}",
        n - full.len()
    )
}

/// llama.cpp's `set_swa_pattern`: with period `n` every n-th layer attends to everything (the
/// last of each period, or the first with `dense_first`); period 0 makes every layer slide.
fn periodic(n_layer: usize, n: u32, dense_first: bool) -> Vec<bool> {
    let n = n as usize;
    (0..n_layer)
        .map(|il| {
            n == 0
                || if dense_first {
                    il % n != 0
                } else {
                    il % n < n - 1
                }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma3_attends_fully_every_sixth_layer() {
        let s = split("gemma3", 18, Some(512), None).unwrap().unwrap();
        assert_eq!(s.base_layers(), vec![5, 11, 17]);
        assert_eq!(s.swa_layers().len(), 15);
        assert_eq!(s.locate(5), Some((false, 0)));
        assert_eq!(s.locate(11), Some((false, 1)));
        assert_eq!(s.locate(6), Some((true, 5)));
        assert_eq!(s.locate(18), None);
    }

    #[test]
    fn the_gguf_pattern_key_overrides_the_default() {
        let s = split("gemma2", 4, Some(4096), Some("[true, false, false, true]"))
            .unwrap()
            .unwrap();
        assert_eq!(s.sliding, vec![true, false, false, true]);
        let s = split("gemma2", 6, Some(4096), Some("3")).unwrap().unwrap();
        assert_eq!(s.base_layers(), vec![2, 5]);
        assert!(split("gemma2", 3, Some(1), Some("[true]")).is_err());
        assert!(split("gemma2", 3, Some(1), Some("every other")).is_err());
    }

    #[test]
    fn no_window_or_another_architecture_is_a_plain_cache() {
        assert_eq!(split("gemma3", 18, None, None), Ok(None));
        assert_eq!(split("gemma3", 18, Some(0), None), Ok(None));
        assert_eq!(split("llama", 30, Some(4096), None), Ok(None));
    }

    #[test]
    fn the_split_reads_in_words() {
        let s = split("gemma3", 18, Some(512), None).unwrap().unwrap();
        assert_eq!(
            describe(512, &s),
            "sliding window of 512 tokens in 15 of 18 layers; layers 5, 11, 17 see every token"
        );
    }

    #[test]
    fn dense_first_puts_the_full_layer_at_the_start_of_each_period() {
        assert_eq!(periodic(5, 4, true), vec![false, true, true, true, false]);
        assert_eq!(periodic(3, 0, false), vec![true, true, true]);
    }
}
