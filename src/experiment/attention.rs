//! Attention captured during a run (`kvlab run --attention`): what it holds, and the pure
//! aggregations the report and the app draw from it.
//!
//! Every measure is kept per layer and query head (`layer * n_head + head`, f32), so a file holds
//! `n_layer × n_head` numbers per captured token and measure:
//! - the prompt pass, per variant: for each prompt token after the needle span (up to the last
//!   but one, the tokens the cache holds before an intervention), the weight it pays to the
//!   needle span: which tokens read the needle, the candidate carriers;
//! - generation, per grid row (each variant's baseline, each condition), per step: the weight the
//!   token being fed pays to the needle span, to the carriers and in total to the prompt.
//!   Step 0's query is the last prompt token (fed after the intervention), later steps' are the
//!   generated tokens.
//!
//! The carriers are the prompt positions after the needle span up to, not including, the last
//! prompt token: the cells an intervention starts from. The last prompt token is left out
//! because at step 0 it is the query itself (its own cell is new then), so including it would
//! make step 0 incomparable with the others.

use serde::{Deserialize, Serialize};

use super::spec::Span;

/// What a run with attention capture recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionResults {
    /// Layers.
    pub n_layer: usize,
    /// Query heads per layer.
    pub n_head: usize,
    /// The needle span whose weights are reported.
    pub needle: Span,
    /// Per variant (spec order): its prompt pass.
    pub variants: Vec<PromptAttention>,
    /// Per variant (spec order): its baseline's generation.
    pub baselines: Vec<RowAttention>,
    /// Per condition (spec order): its generation.
    pub conditions: Vec<RowAttention>,
}

/// The prompt pass of one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptAttention {
    /// The carriers: positions after the needle up to the last prompt token (excluded).
    pub carriers: Span,
    /// Per carrier position (from `carriers.start`), per layer × head: its weight on the needle.
    pub needle: Vec<Vec<f32>>,
}

/// One grid row's generation: per step, per layer × head.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RowAttention {
    /// The weight on the needle span.
    pub needle: Vec<Vec<f32>>,
    /// The weight on the carriers.
    pub carriers: Vec<Vec<f32>>,
    /// The weight on the whole prompt (needle, carriers, everything before, the last token).
    pub prompt: Vec<Vec<f32>>,
}

/// Which of a row's measures to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Measure {
    /// Attention to the needle.
    #[default]
    Needle,
    /// Attention to the carriers.
    Carriers,
    /// Attention to the prompt in total.
    Prompt,
}

/// One step's three measures for one layer and head, from the weights on positions
/// `0..weights.len()` (the position's index): needle, carriers, and prompt up to `last_pos`.
pub fn step_sums(weights: &[f32], needle: Span, carriers: Span, last_pos: usize) -> [f32; 3] {
    let sum = |r: std::ops::Range<usize>| -> f32 {
        weights[r.start.min(weights.len())..r.end.min(weights.len())]
            .iter()
            .sum()
    };
    [
        sum(needle.positions()),
        sum(carriers.positions()),
        sum(0..last_pos + 1),
    ]
}

impl RowAttention {
    /// Appends one step: `sums[layer * n_head + head]` as from [`step_sums`].
    pub fn push(&mut self, sums: &[[f32; 3]]) {
        self.needle.push(sums.iter().map(|s| s[0]).collect());
        self.carriers.push(sums.iter().map(|s| s[1]).collect());
        self.prompt.push(sums.iter().map(|s| s[2]).collect());
    }

    /// The steps of a measure.
    pub fn steps(&self, m: Measure) -> &[Vec<f32>] {
        match m {
            Measure::Needle => &self.needle,
            Measure::Carriers => &self.carriers,
            Measure::Prompt => &self.prompt,
        }
    }

    /// `[layer][step]`: the measure in one head, or the mean over heads (`None`).
    pub fn layer_by_step(&self, m: Measure, n_head: usize, head: Option<usize>) -> Vec<Vec<f32>> {
        let steps = self.steps(m);
        let n_layer = steps.first().map_or(0, |s| s.len() / n_head.max(1));
        (0..n_layer)
            .map(|l| {
                steps
                    .iter()
                    .map(|s| head_value(s, l, n_head, head))
                    .collect()
            })
            .collect()
    }

    /// `[head][step]` in one layer.
    pub fn head_by_step(&self, m: Measure, n_head: usize, layer: usize) -> Vec<Vec<f32>> {
        let steps = self.steps(m);
        (0..n_head)
            .map(|h| steps.iter().map(|s| s[layer * n_head + h]).collect())
            .collect()
    }
}

/// One layer's value in one head, or the mean over its heads.
fn head_value(v: &[f32], layer: usize, n_head: usize, head: Option<usize>) -> f32 {
    match head {
        Some(h) => v[layer * n_head + h],
        None => v[layer * n_head..(layer + 1) * n_head].iter().sum::<f32>() / n_head.max(1) as f32,
    }
}

impl PromptAttention {
    /// Per carrier token: its weight on the needle, mean over heads, in one layer or summed over
    /// layers (`None`).
    pub fn strip(&self, n_head: usize, layer: Option<usize>) -> Vec<f32> {
        self.needle
            .iter()
            .map(|v| {
                let n_layer = v.len() / n_head.max(1);
                match layer {
                    Some(l) => head_value(v, l, n_head, None),
                    None => (0..n_layer).map(|l| head_value(v, l, n_head, None)).sum(),
                }
            })
            .collect()
    }

    /// `[layer][head]` of one carrier token (index from `carriers.start`).
    pub fn token_heads(&self, token: usize, n_head: usize) -> Vec<Vec<f32>> {
        self.needle
            .get(token)
            .map(|v| v.chunks(n_head.max(1)).map(<[f32]>::to_vec).collect())
            .unwrap_or_default()
    }
}

/// `a − b` cell by cell over the cells both grids have.
pub fn difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f32>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(x, y)| x - y).collect())
        .collect()
}

/// A colour scale for attention values, shared by the report and the app.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// 0 (dark) to `max` (bright): weights.
    Weight {
        /// The value drawn brightest (at least a tiny positive number).
        max: f32,
    },
    /// `-max` (blue) through 0 (white) to `max` (red): differences.
    Difference {
        /// The largest magnitude.
        max: f32,
    },
}

impl Scale {
    /// A weight scale up to the grids' largest value.
    pub fn weights<'a>(grids: impl IntoIterator<Item = &'a Vec<f32>>) -> Scale {
        let max = grids.into_iter().flatten().copied().fold(0f32, f32::max);
        Scale::Weight { max: max.max(1e-6) }
    }

    /// A difference scale up to the grid's largest magnitude.
    pub fn differences<'a>(grids: impl IntoIterator<Item = &'a Vec<f32>>) -> Scale {
        let max = grids
            .into_iter()
            .flatten()
            .map(|v| v.abs())
            .fold(0f32, f32::max);
        Scale::Difference { max: max.max(1e-6) }
    }

    /// The lowest and highest values of the scale.
    pub fn range(self) -> (f32, f32) {
        match self {
            Scale::Weight { max } => (0.0, max),
            Scale::Difference { max } => (-max, max),
        }
    }

    /// The colour of a value (sRGB).
    pub fn rgb(self, v: f32) -> [u8; 3] {
        let mix = |a: [f32; 3], b: [f32; 3], t: f32| {
            let t = if t.is_finite() {
                t.clamp(0.0, 1.0)
            } else {
                0.0
            };
            [0, 1, 2].map(|i| (a[i] + (b[i] - a[i]) * t).round() as u8)
        };
        let ratio = |max: f32| {
            let t = v / max;
            if t.is_finite() { t } else { 0.0 }
        };
        match self {
            // Dark blue → teal → yellow (perceptually ordered, readable on light and dark).
            Scale::Weight { max } => {
                let t = ratio(max);
                let (dark, mid, bright) = ([20., 24., 82.], [33., 145., 140.], [253., 231., 37.]);
                if t < 0.5 {
                    mix(dark, mid, t * 2.0)
                } else {
                    mix(mid, bright, (t - 0.5) * 2.0)
                }
            }
            Scale::Difference { max } => {
                let t = ratio(max);
                let white = [247., 247., 247.];
                if t < 0.0 {
                    mix(white, [33., 102., 172.], -t)
                } else {
                    mix(white, [178., 24., 43.], t)
                }
            }
        }
    }
}

impl AttentionResults {
    /// Checks that results read from a file have the shapes the views index by.
    pub fn validate(&self, n_variants: usize, n_conditions: usize) -> Result<(), String> {
        let width = self.n_layer * self.n_head;
        if self.n_head == 0 || self.n_layer > crate::gguf::LLAMA_MAX_LAYERS as usize {
            return Err(format!(
                "attention has {} layers of {} heads",
                self.n_layer, self.n_head
            ));
        }
        if self.variants.len() != n_variants
            || self.baselines.len() != n_variants
            || self.conditions.len() != n_conditions
        {
            return Err("attention does not have one entry per variant and condition".into());
        }
        let rows = self.baselines.iter().chain(&self.conditions);
        let vectors = self
            .variants
            .iter()
            .flat_map(|v| &v.needle)
            .chain(rows.flat_map(|r| r.needle.iter().chain(&r.carriers).chain(&r.prompt)));
        for v in vectors {
            if v.len() != width {
                return Err(format!(
                    "attention holds a vector of {} values where {width} (layers × heads) were expected",
                    v.len()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    #[test]
    fn step_sums_split_the_prompt() {
        // Positions 0..6; needle 1..3, carriers 3..5, last prompt token 5, generated 6.
        let w = [0.1, 0.2, 0.05, 0.1, 0.15, 0.3, 0.1];
        let [n, c, p] = step_sums(&w, span(1, 3), span(3, 5), 5);
        assert!((n - 0.25).abs() < 1e-6);
        assert!((c - 0.25).abs() < 1e-6);
        assert!((p - 0.9).abs() < 1e-6);
        // Weights cover fewer positions than the spans (a shorter focus): no panic, the rest is 0.
        assert_eq!(step_sums(&w[..2], span(1, 3), span(3, 5), 5)[1], 0.0);
    }

    fn row() -> RowAttention {
        // 2 layers × 2 heads, 2 steps.
        let mut r = RowAttention::default();
        r.push(&[
            [0.1, 0.2, 1.0],
            [0.3, 0.2, 1.0],
            [0.5, 0.0, 1.0],
            [0.7, 0.0, 1.0],
        ]);
        r.push(&[
            [0.0, 0.4, 0.9],
            [0.2, 0.4, 0.9],
            [0.0, 0.1, 0.8],
            [0.0, 0.1, 0.8],
        ]);
        r
    }

    #[test]
    fn grids_by_layer_and_head() {
        let r = row();
        let g = r.layer_by_step(Measure::Needle, 2, None);
        assert_eq!(g.len(), 2);
        assert!((g[0][0] - 0.2).abs() < 1e-6 && (g[1][0] - 0.6).abs() < 1e-6);
        assert!((g[0][1] - 0.1).abs() < 1e-6 && g[1][1] == 0.0);
        assert_eq!(r.layer_by_step(Measure::Needle, 2, Some(1))[1], [0.7, 0.0]);
        assert_eq!(
            r.head_by_step(Measure::Carriers, 2, 1),
            [[0.0, 0.1], [0.0, 0.1]]
        );
        let d = difference(&g, &r.layer_by_step(Measure::Needle, 2, Some(0)));
        assert!((d[1][0] - 0.1).abs() < 1e-6);
    }

    #[test]
    fn strips_sum_layers_or_show_one() {
        let p = PromptAttention {
            carriers: span(3, 5),
            needle: vec![vec![0.1, 0.3, 0.5, 0.7], vec![0.0, 0.0, 0.2, 0.0]],
        };
        let all = p.strip(2, None);
        assert!((all[0] - 0.8).abs() < 1e-6 && (all[1] - 0.1).abs() < 1e-6);
        assert_eq!(p.strip(2, Some(1)), [0.6, 0.1]);
        assert_eq!(p.token_heads(0, 2), [[0.1, 0.3], [0.5, 0.7]]);
        assert!(p.token_heads(9, 2).is_empty());
    }

    #[test]
    fn scales_run_from_dark_to_bright_and_blue_to_red() {
        let w = Scale::weights([&vec![0.0, 0.5], &vec![0.25]]);
        assert_eq!(w.range(), (0.0, 0.5));
        assert_eq!(w.rgb(0.0), [20, 24, 82]);
        assert_eq!(w.rgb(0.5), [253, 231, 37]);
        assert_eq!(w.rgb(9.0), [253, 231, 37]);
        assert_eq!(w.rgb(f32::NAN), [20, 24, 82]);
        let d = Scale::differences([&vec![-0.2, 0.1]]);
        assert_eq!(d.range(), (-0.2, 0.2));
        assert_eq!(d.rgb(0.0), [247, 247, 247]);
        assert_eq!(d.rgb(-0.2), [33, 102, 172]);
        assert_eq!(d.rgb(0.2), [178, 24, 43]);
        // All zeros: still a usable scale.
        assert!(matches!(Scale::weights([&vec![0.0]]), Scale::Weight { max } if max > 0.0));
    }

    #[test]
    fn shapes_are_checked() {
        let mut a = AttentionResults {
            n_layer: 2,
            n_head: 2,
            needle: span(1, 3),
            variants: vec![PromptAttention {
                carriers: span(3, 5),
                needle: vec![vec![0.0; 4]],
            }],
            baselines: vec![row()],
            conditions: vec![row(), row()],
        };
        assert_eq!(a.validate(1, 2), Ok(()));
        assert!(a.validate(1, 1).is_err());
        a.conditions[1].prompt[0].pop();
        assert!(a.validate(1, 2).unwrap_err().contains("layers × heads"));
    }
}
