//! Attention capture in a grid run (`RunOptions::attention`): the prompt pass's carriers
//! reading the needle, and every grid row's attention at every generated step.
//!
//! A capturing run uses a lab with the capture hook (flash attention off). To keep "capture on"
//! and "capture off" numerically identical in such a lab, both evaluate the same batches: each
//! variant's prompt on its own (a capture is one sequence's ubatch), and each generation step
//! split into runs of consecutive sequences, which is how llama.cpp splits the step's batch
//! itself (`split_equal`, see `docs/attention-capture.md`), so the split costs nothing.

use crate::engine::lab::BatchItem;
use crate::engine::{CaptureRequest, CapturedRow, EngineError, Lab};
use crate::experiment::attention::{PromptAttention, step_sums};
use crate::experiment::spec::Span;

/// Whether a run captures attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionMode {
    /// A plain lab (flash attention as configured), nothing captured.
    #[default]
    Off,
    /// A capturing lab that captures nothing: the same batches and numbers as [`Self::Capture`]
    /// (for tests and the bench, which compare the two).
    IdleLab,
    /// Capture, stored in the results.
    Capture,
}

impl AttentionMode {
    /// Whether the run needs a capturing lab.
    pub fn capture_lab(self) -> bool {
        self != AttentionMode::Off
    }
}

/// A variant's prompt but its last token as the batches a capturing lab evaluates: its own
/// tokens, `n_batch` at a time.
pub(crate) fn prompt_chunks(seq: i32, tokens: &[i32], n_batch: usize) -> Vec<Vec<BatchItem>> {
    let items: Vec<BatchItem> = tokens[..tokens.len() - 1]
        .iter()
        .enumerate()
        .map(|(pos, &token)| BatchItem {
            seq,
            token,
            pos: pos as i32,
            logits: false,
        })
        .collect();
    items.chunks(n_batch.max(1)).map(<[_]>::to_vec).collect()
}

/// Evaluates one prompt chunk, adding the carriers' weights on the needle to `into`.
pub(crate) fn capture_prompt_chunk(
    lab: &mut Lab<'_>,
    chunk: &[BatchItem],
    needle: Span,
    into: &mut PromptAttention,
) -> Result<(), EngineError> {
    let rows: Vec<usize> = (0..chunk.len())
        .filter(|&i| into.carriers.positions().contains(&(chunk[i].pos as usize)))
        .collect();
    if rows.is_empty() {
        return lab.eval(chunk, |_, _| {});
    }
    let request = CaptureRequest {
        rows,
        focus: needle.positions().map(|p| p as i32).collect(),
        ..Default::default()
    };
    let cap = lab.eval_capturing(chunk, &request, |_, _| {})?;
    for row in &cap.rows {
        into.needle.push(
            (0..cap.n_layer)
                .flat_map(|l| (0..cap.n_head).map(move |h| (l, h)))
                .map(|(l, h)| row.focus_total(l, h))
                .collect(),
        );
    }
    Ok(())
}

/// What a generation step captures: the weights on positions `0..focus_len`.
pub(crate) struct StepCapture {
    /// Whether to capture (else: the same batches, nothing captured).
    pub on: bool,
    /// Positions reported one by one: every prompt position of the longest prompt.
    pub focus_len: usize,
    /// The needle span.
    pub needle: Span,
}

/// Evaluates one generation step's items in runs of consecutive sequences (llama.cpp's own
/// split), handing logits on with the item's index; per item its captured row when on.
pub(crate) fn eval_step(
    lab: &mut Lab<'_>,
    items: &[BatchItem],
    capture: &StepCapture,
    mut on_logits: impl FnMut(usize, &[f32]),
) -> Result<Vec<Option<CapturedRow>>, EngineError> {
    let mut out: Vec<Option<CapturedRow>> = vec![None; items.len()];
    let mut start = 0;
    while start < items.len() {
        let mut end = start + 1;
        while end < items.len() && items[end].seq == items[end - 1].seq + 1 {
            end += 1;
        }
        let run = &items[start..end];
        let on_run = |k: usize, l: &[f32]| on_logits(start + k, l);
        if capture.on {
            let request = CaptureRequest {
                rows: (0..run.len()).collect(),
                focus: (0..capture.focus_len as i32).collect(),
                ..Default::default()
            };
            for cap in lab.eval_capturing_seqs(run, &request, on_run)? {
                for row in cap.rows {
                    let at = start + row.item;
                    out[at] = Some(row);
                }
            }
        } else {
            lab.eval(run, on_run)?;
        }
        start = end;
    }
    Ok(out)
}

/// One step's measures of a captured row, per layer × head (see [`step_sums`]).
pub(crate) fn row_sums(
    row: &CapturedRow,
    n_layer: usize,
    n_head: usize,
    needle: Span,
    carriers: Span,
    last_pos: usize,
) -> Vec<[f32; 3]> {
    (0..n_layer)
        .flat_map(|l| (0..n_head).map(move |h| (l, h)))
        .map(|(l, h)| step_sums(row.focus(l, h), needle, carriers, last_pos))
        .collect()
}
