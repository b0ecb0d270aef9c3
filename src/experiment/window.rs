//! Whether a run's needle stays inside the sliding window of a sliding-window model's layers
//! while the answer is generated. Such a layer attends only to the last `window` positions
//! (llama.cpp masks a key at position p for a query at q when q − p ≥ window), so once the
//! needle falls out, only the full-attention layers and the later tokens' own entries can still
//! carry it: the seed's question in its sharpest form.

use super::results::RunResults;

/// Where the needle stands against the window over a run's generated steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedleInWindow {
    /// Inside at every step.
    Throughout,
    /// Inside until this step (the first step whose query no longer sees it).
    LeavesAt(usize),
    /// Outside already at the first step.
    Outside,
}

/// `prompt_len` tokens in the prompt (step 0's query is its last, at `prompt_len − 1`; step s's
/// at `prompt_len − 1 + s`), the needle's last position `needle_last`, `steps` steps.
pub fn needle_in_window(
    prompt_len: usize,
    needle_last: usize,
    window: u32,
    steps: usize,
) -> NeedleInWindow {
    let first_query = prompt_len.saturating_sub(1);
    // The first query position that no longer sees the needle: needle_last + window.
    let leaves = needle_last + window as usize;
    if leaves <= first_query {
        NeedleInWindow::Outside
    } else if leaves - first_query >= steps {
        NeedleInWindow::Throughout
    } else {
        NeedleInWindow::LeavesAt(leaves - first_query)
    }
}

/// One line for the grid and the reports, for a run on a sliding-window model; `None` for a
/// model without one.
pub fn describe(r: &RunResults) -> Option<String> {
    let window = r.model_info.sliding_window?;
    let n_sliding = r.model_info.sliding_layers.len();
    if n_sliding == 0 {
        return None;
    }
    let prompt_len = r.variants.first()?.tokens.len();
    let steps = r.spec.generation.max_tokens;
    let needle_last = r.needle_span.end.checked_sub(1)?;
    let n_layer = r.model_info.n_layer as usize;
    let head = format!("{n_sliding} of {n_layer} layers slide: they see the last {window} tokens.");
    Some(
        match needle_in_window(prompt_len, needle_last, window, steps) {
            NeedleInWindow::Throughout => {
                format!(
                    "{head} The needle stays inside their window for all {steps} generated steps."
                )
            }
            NeedleInWindow::LeavesAt(s) => format!(
                "{head} The needle leaves their window at step {s}: from there only the full-attention layers and later tokens' entries can carry it."
            ),
            NeedleInWindow::Outside => format!(
                "{head} The needle is outside their window from the first step: only the full-attention layers and later tokens' entries can carry it."
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_needle_leaves_when_the_query_is_a_window_past_it() {
        // Prompt of 10 tokens (first query at 9), needle at 2, window 8: a query at 10 sees
        // 3..=10, not 2, so step 1 (query at 10) is the first without it.
        assert_eq!(needle_in_window(10, 2, 8, 5), NeedleInWindow::LeavesAt(1));
        assert_eq!(needle_in_window(10, 2, 9, 5), NeedleInWindow::LeavesAt(2));
        assert_eq!(needle_in_window(10, 2, 7, 5), NeedleInWindow::Outside);
        assert_eq!(
            needle_in_window(10, 2, 512, 100),
            NeedleInWindow::Throughout
        );
        // Leaving exactly after the last step is "throughout".
        assert_eq!(needle_in_window(10, 2, 12, 5), NeedleInWindow::Throughout);
        assert_eq!(needle_in_window(10, 2, 11, 5), NeedleInWindow::LeavesAt(4));
    }
}
