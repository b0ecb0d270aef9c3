//! What a grid run holds in memory, estimated before it starts (the app shows it next to the
//! model and warns when it will not fit; runs refuse before allocating). Pure arithmetic on the
//! experiment and the model's shape, saturating rather than overflowing: a forged header can
//! ask for more bytes than a `u64` holds, and that must read "too large", never panic.

use super::spec::{ExperimentSpec, MAX_SEQUENCES};

/// A run's memory, in bytes (`None`: more than a `u64` holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMemory {
    /// The model's weights (the file's size).
    pub weights: u64,
    /// The KV cache: one stream per variant and per condition, each long enough for the prompt
    /// and the generation or the longest scored answer (as the run sizes it), rounded up to
    /// 256 cells as llama.cpp does.
    pub kv_cache: Option<u64>,
    /// Host copies of prompt caches: a run holds no prompt's state for long. It reads one
    /// variant's evaluated prompt as bytes at a time, edits each condition's rows where they
    /// lie and writes them into the condition's sequence; a variant's second remove works on
    /// one copy of those bytes. So at most two prompts' bytes (the edited cells and the K/V
    /// delta's pieces are far smaller).
    pub prompt_copies: Option<u64>,
    /// Sequences (streams).
    pub n_seq: u64,
}

impl RunMemory {
    /// The estimate for `spec` on a model with `bytes_per_cell` of K and V per token and
    /// `weights` bytes of weights; `prompt_tokens` when the prompts are tokenized (else guessed
    /// from their text, see [`guess_prompt_tokens`]). A dataset's is its largest wave's.
    pub fn of(
        spec: &ExperimentSpec,
        prompt_tokens: Option<usize>,
        bytes_per_cell: u64,
        weights: u64,
    ) -> RunMemory {
        // A dataset runs as waves of grids: its estimate is its largest wave's.
        let (n_var, n_seq) = match &spec.dataset {
            Some(d) => crate::experiment::dataset::largest_wave(d, MAX_SEQUENCES),
            None => (spec.variants.len(), spec.n_sequences()),
        };
        let (n_var, n_seq) = (n_var as u64, n_seq as u64);
        let prompt = prompt_tokens.unwrap_or_else(|| guess_prompt_tokens(spec)) as u64;
        let cells = crate::gguf::kv_cells_for_run(n_seq, prompt, spec.continuation_cells() as u64);
        let copies = if n_var == 0 {
            0
        } else {
            2u64.saturating_mul(prompt)
        };
        RunMemory {
            weights,
            kv_cache: bytes(cells, bytes_per_cell),
            prompt_copies: bytes(copies, bytes_per_cell),
            n_seq,
        }
    }

    /// Everything together.
    pub fn total(&self) -> Option<u64> {
        self.kv_cache?
            .checked_add(self.prompt_copies?)?
            .checked_add(self.weights)
    }

    /// Whether the run fits in `memory` bytes (`None`, unknown: assumed to fit).
    pub fn fits(&self, memory: Option<u64>) -> bool {
        match (memory, self.total()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(m), Some(t)) => t <= m,
        }
    }
}

/// `cells × per_cell`, `None` where it overflows or a count saturated (as unknowable).
fn bytes(cells: u64, per_cell: u64) -> Option<u64> {
    cells
        .checked_mul(per_cell)
        .filter(|_| cells != u64::MAX && per_cell != u64::MAX)
}

/// The longest prompt's tokens guessed from its text before tokenizing: about four characters
/// a token, plus a few tokens of template per turn.
pub fn guess_prompt_tokens(spec: &ExperimentSpec) -> usize {
    let chars = |turns: &[crate::experiment::spec::Turn]| {
        (turns.iter())
            .map(|t| t.content.len().saturating_add(8))
            .fold(0usize, usize::saturating_add)
    };
    let (text, needle) = match &spec.dataset {
        // A dataset's longest template with its longest needle.
        Some(d) => (
            d.templates
                .iter()
                .map(|t| chars(&t.turns))
                .max()
                .unwrap_or(0),
            d.needles.iter().map(|n| n.needle.len()).max(),
        ),
        None => (
            chars(&spec.prompt.turns),
            spec.variants.iter().map(|v| v.needle.len()).max(),
        ),
    };
    text.saturating_add(needle.unwrap_or(0)) / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed grid on a model of Llama 3.1 8B's shape (128 KiB a token, 16 GiB of f16
    /// weights) with a 2,000-token prompt, by hand: 2 variants + 8 conditions = 10 streams of
    /// 2,000 + 100 + 8 → 2,304 cells; 2 prompt copies of 2,000 tokens (one variant's prompt
    /// bytes and a copy for a second remove).
    #[test]
    fn an_8b_seed_grid_by_hand() {
        let spec = ExperimentSpec::seed();
        assert_eq!((spec.variants.len(), spec.conditions.len()), (2, 8));
        let per_cell = 128 << 10;
        let m = RunMemory::of(&spec, Some(2000), per_cell, 16 << 30);
        assert_eq!(m.n_seq, 10);
        assert_eq!(m.kv_cache, Some(10 * 2304 * per_cell));
        assert_eq!(m.prompt_copies, Some(2 * 2000 * per_cell));
        let total = (16u64 << 30) + 10 * 2304 * per_cell + 2 * 2000 * per_cell;
        assert_eq!(m.total(), Some(total));
        assert!(m.fits(Some(total)) && m.fits(None));
        assert!(!m.fits(Some(total - 1)), "one byte short does not fit");
    }

    /// Short generations still leave room for the scored answers: the seed's answers are
    /// longer than 8 tokens' worth, and the estimate sizes each stream as the run does (a
    /// 2,031-token prompt with 8 generated tokens overflows 2,048 cells).
    #[test]
    fn streams_hold_the_longest_answer_when_generation_is_shorter() {
        let mut spec = ExperimentSpec::seed();
        spec.generation.max_tokens = 8;
        let answer = (spec.variants.iter().flat_map(|v| &v.expected))
            .map(String::len)
            .max()
            .unwrap();
        assert!(answer + 1 > 8, "the seed's answers outgrow 8 tokens");
        assert_eq!(spec.continuation_cells(), answer + 1);
        let m = RunMemory::of(&spec, Some(2031), 1, 0);
        assert_eq!(m.kv_cache, Some(10 * 2304), "not 10 × 2,048 cells");
        spec.generation.max_tokens = 500;
        assert_eq!(spec.continuation_cells(), 500);
    }

    /// A forged header's sizes overflow: "too large", never a panic, and never "fits".
    #[test]
    fn overflow_is_too_large_and_does_not_fit() {
        let spec = ExperimentSpec::seed();
        let m = RunMemory::of(&spec, None, u64::MAX / 2, 0);
        assert_eq!(m.kv_cache, None);
        assert_eq!(m.total(), None);
        assert!(!m.fits(Some(u64::MAX)));
        let big = RunMemory::of(&spec, Some(usize::MAX), 1, 0);
        assert_eq!(big.total(), None);
    }

    #[test]
    fn a_prompt_is_guessed_at_four_characters_a_token() {
        let spec = ExperimentSpec::seed();
        let text: usize = spec.prompt.turns.iter().map(|t| t.content.len() + 8).sum();
        let needle = spec.variants.iter().map(|v| v.needle.len()).max().unwrap();
        assert_eq!(guess_prompt_tokens(&spec), (text + needle) / 4);
    }
}
