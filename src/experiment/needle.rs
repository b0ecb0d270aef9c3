//! Finding the needle: the token positions where the variants' prompts differ.

use super::spec::{Span, SpecError};

/// The span where token sequences differ: from the first position where any differs to the
/// last, found from both ends so that variants of different lengths also get a span.
/// `None` when all sequences are identical.
pub fn differing_span(sequences: &[&[i32]]) -> Option<Span> {
    let first = sequences.first()?;
    let min_len = sequences.iter().map(|s| s.len()).min().unwrap_or(0);
    let prefix = (0..min_len)
        .find(|&i| sequences.iter().any(|s| s[i] != first[i]))
        .unwrap_or(min_len);
    let all_same_len = sequences.iter().all(|s| s.len() == first.len());
    if prefix == min_len && all_same_len {
        return None;
    }
    // Common suffix, not overlapping the prefix.
    let max_suffix = min_len - prefix;
    let suffix = (0..max_suffix)
        .take_while(|&k| {
            let t = first[first.len() - 1 - k];
            sequences.iter().all(|s| s[s.len() - 1 - k] == t)
        })
        .count();
    let end = sequences
        .iter()
        .map(|s| s.len() - suffix)
        .max()
        .unwrap_or(prefix);
    Some(Span {
        start: prefix,
        end: end.max(prefix + 1),
    })
}

/// Checks that a span can be edited in the cache of a prompt of `prompt_len` tokens: the cache
/// holds positions `0..prompt_len-1` (the last prompt token is fed after the edit).
pub fn check_span_in_cache(span: Span, prompt_len: usize, what: &str) -> Result<(), SpecError> {
    let cached = prompt_len.saturating_sub(1);
    if span.is_empty() || span.end > cached {
        return Err(SpecError::Span(format!(
            "{what} {}..{} is outside the prompt's cache: the prompt has {prompt_len} tokens, \
             and positions 0..{cached} are cached (the last token is fed after the edit)",
            span.start, span.end
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_single_differing_token() {
        let a = [1, 2, 3, 4, 5];
        let b = [1, 2, 9, 4, 5];
        assert_eq!(differing_span(&[&a, &b]), Some(Span { start: 2, end: 3 }));
    }

    #[test]
    fn finds_a_span_when_lengths_differ() {
        let a = [1, 2, 3, 4, 5];
        let b = [1, 2, 7, 8, 4, 5];
        assert_eq!(differing_span(&[&a, &b]), Some(Span { start: 2, end: 4 }));
        // An insertion: a has nothing where b has 7.
        let c = [1, 2, 4, 5];
        let d = [1, 2, 7, 4, 5];
        assert_eq!(differing_span(&[&c, &d]), Some(Span { start: 2, end: 3 }));
    }

    #[test]
    fn identical_prompts_have_no_needle() {
        let a = [1, 2, 3];
        assert_eq!(differing_span(&[&a, &a]), None);
    }

    #[test]
    fn three_variants_union_their_differences() {
        let a = [1, 2, 3, 4, 5];
        let b = [1, 9, 3, 4, 5];
        let c = [1, 2, 3, 9, 5];
        assert_eq!(
            differing_span(&[&a, &b, &c]),
            Some(Span { start: 1, end: 4 })
        );
    }

    #[test]
    fn span_must_be_inside_the_cache() {
        assert!(check_span_in_cache(Span { start: 2, end: 3 }, 10, "needle").is_ok());
        let e = check_span_in_cache(Span { start: 9, end: 10 }, 10, "needle").unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        assert!(check_span_in_cache(Span { start: 50, end: 51 }, 10, "needle").is_err());
    }
}
