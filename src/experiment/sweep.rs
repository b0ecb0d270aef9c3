//! Sweeps: many small interventions measured by one number each. Which *other* tokens carry the
//! needle, and in which layers? A sweep expands into ordinary [`Condition`]s, so each of its
//! items means exactly what the same condition means in a grid.

use serde::{Deserialize, Serialize};

use super::spec::{Condition, ExperimentSpec, KvPart, LayerSet, Op, Site, Span};
use crate::engine::TokenPiece;

/// What a sweep varies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SweepKind {
    /// One position at a time over `range` (default: every cached position).
    Position {
        /// Positions to visit.
        #[serde(default)]
        range: Option<Span>,
    },
    /// The needle plus the next k tokens, k = 0..=max_extra.
    Span {
        /// Largest k.
        max_extra: usize,
    },
    /// The needle in one layer at a time, then cumulative ranges from the bottom and from the top.
    Layer,
    /// Every position in `range` × every layer, one cell at a time (a position × layer heatmap).
    PositionLayer {
        /// Positions to visit.
        #[serde(default)]
        range: Option<Span>,
    },
}

impl SweepKind {
    /// A short name: "position", "span", "layer", "position × layer".
    pub fn name(&self) -> &'static str {
        match self {
            SweepKind::Position { .. } => "position",
            SweepKind::Span { .. } => "span",
            SweepKind::Layer => "layer",
            SweepKind::PositionLayer { .. } => "position × layer",
        }
    }
}

/// A sweep over one variant's prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// What varies.
    pub kind: SweepKind,
    /// The variant whose prompt is edited.
    pub variant: String,
    /// What each item does to its cells: any intervention but `none` (remove only with all
    /// layers); [`SweepOp`] makes the usual ones.
    pub op: Op,
    /// Layers touched, for position and span sweeps.
    #[serde(default)]
    pub layers: LayerSet,
    /// K, V or both.
    #[serde(default = "both")]
    pub part: KvPart,
}

fn both() -> KvPart {
    KvPart::Both
}

/// The interventions the app and `kvlab sweep --op` offer, each made into an [`Op`] for the
/// swept variant by [`SweepOp::op`]. Zero and remove ask "is this cell needed?"; mean, noise and
/// transplant ask the same with in-distribution replacements, which the literature prefers to
/// zero (a zero key still gets attention logit 0, not -inf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepOp {
    /// Rows set to zero.
    #[default]
    Zero,
    /// Cells taken out of the sequence (all layers only).
    Remove,
    /// Rows replaced by their mean over every variant at the same positions.
    Mean,
    /// Gaussian noise of causal tracing's 3 σ, the same draw (seed 0) for every item.
    Noise,
    /// Rows copied from the next variant (the other one of a pair) at the same positions.
    Transplant,
}

impl SweepOp {
    /// Every choice, in the order the app lists them.
    pub const ALL: [SweepOp; 5] = [
        SweepOp::Zero,
        SweepOp::Remove,
        SweepOp::Mean,
        SweepOp::Noise,
        SweepOp::Transplant,
    ];

    /// The name shown and typed (`--op`).
    pub fn label(self) -> &'static str {
        match self {
            SweepOp::Zero => "zero",
            SweepOp::Remove => "remove",
            SweepOp::Mean => "mean",
            SweepOp::Noise => "noise",
            SweepOp::Transplant => "transplant",
        }
    }

    /// The intervention for a sweep over `variant`'s prompt in `spec`. Transplant takes the
    /// variant after it (wrapping round), so in a pair each variant gets the other's rows; it
    /// needs a second variant. `from` names another donor instead.
    pub fn op(
        self,
        spec: &ExperimentSpec,
        variant: &str,
        from: Option<&str>,
    ) -> Result<Op, String> {
        Ok(match self {
            SweepOp::Zero => Op::Zero,
            SweepOp::Remove => Op::Remove,
            SweepOp::Mean => Op::Mean { over: Vec::new() },
            SweepOp::Noise => Op::Noise {
                scale: super::spec::DEFAULT_NOISE_SCALE,
                seed: 0,
            },
            SweepOp::Transplant => {
                let from = match from {
                    Some(f) => f.to_string(),
                    None => {
                        let names: Vec<&str> =
                            spec.variants.iter().map(|v| v.name.as_str()).collect();
                        let i = names.iter().position(|n| *n == variant).ok_or_else(|| {
                            format!("the experiment has no variant named {variant:?}")
                        })?;
                        if names.len() < 2 {
                            return Err(
                                "a transplant sweep needs a second variant to take rows from"
                                    .into(),
                            );
                        }
                        names[(i + 1) % names.len()].to_string()
                    }
                };
                if from == variant {
                    return Err(format!(
                        "a transplant into {variant:?} needs another variant's rows"
                    ));
                }
                Op::Transplant { from }
            }
        })
    }
}

/// One item of a sweep: what it is, and the condition that realizes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepItem {
    /// A short label: "pos 6", "6..9", "layer 3", "layers 0-3".
    pub label: String,
    /// The position (position sweeps), extra tokens (span sweeps) or layer index (layer sweeps).
    pub index: usize,
    /// The layer, for position × layer sweeps.
    pub layer: Option<u32>,
    /// The equivalent grid condition.
    pub condition: Condition,
}

impl SweepSpec {
    /// Expands the sweep for a prompt of `prompt_len` tokens, a model of `n_layer` layers and the
    /// needle span.
    pub fn items(&self, prompt_len: usize, n_layer: u32, needle: Span) -> Vec<SweepItem> {
        // The positions an item may touch: the cache, but for remove not its last one (the
        // prompt's last token must follow a cached position).
        let cached = prompt_len.saturating_sub(if self.op == Op::Remove { 2 } else { 1 });
        let cond = |span: Span, layers: LayerSet| {
            Condition::new(self.variant.clone(), self.op.clone()).at(Site {
                span: Some(span),
                layers,
                part: self.part,
                heads: None,
            })
        };
        match &self.kind {
            SweepKind::Position { range } => {
                let r = range.unwrap_or(Span {
                    start: 0,
                    end: cached,
                });
                (r.start..r.end.min(cached))
                    .map(|p| SweepItem {
                        label: format!("pos {p}"),
                        index: p,
                        layer: None,
                        condition: cond(
                            Span {
                                start: p,
                                end: p + 1,
                            },
                            self.layers.clone(),
                        ),
                    })
                    .collect()
            }
            // Spans only grow: stop at the first that leaves the prompt (a huge max_extra
            // must not be counted through).
            SweepKind::Span { max_extra } => (0..=*max_extra)
                .map_while(|k| {
                    let end = needle.end.checked_add(k).filter(|&e| e <= cached)?;
                    Some(Span {
                        start: needle.start,
                        end,
                    })
                })
                .enumerate()
                .map(|(k, s)| SweepItem {
                    label: format!("{}..{}", s.start, s.end),
                    index: k,
                    layer: None,
                    condition: cond(s, self.layers.clone()),
                })
                .collect(),
            SweepKind::Layer => {
                let mut out = Vec::new();
                let set = |text: String| LayerSet::parse(&text).unwrap_or_default();
                for l in 0..n_layer {
                    out.push(SweepItem {
                        label: format!("layer {l}"),
                        index: l as usize,
                        layer: Some(l),
                        condition: cond(needle, set(l.to_string())),
                    });
                }
                for l in 0..n_layer {
                    out.push(SweepItem {
                        label: format!("layers 0-{l}"),
                        index: l as usize,
                        layer: None,
                        condition: cond(needle, set(format!("0-{l}"))),
                    });
                }
                for l in (0..n_layer).rev() {
                    out.push(SweepItem {
                        label: format!("layers {l}-{}", n_layer - 1),
                        index: l as usize,
                        layer: None,
                        condition: cond(needle, set(format!("{l}-{}", n_layer - 1))),
                    });
                }
                out
            }
            SweepKind::PositionLayer { range } => {
                let r = range.unwrap_or(Span {
                    start: 0,
                    end: cached,
                });
                let mut out = Vec::new();
                for p in r.start..r.end.min(cached) {
                    for l in 0..n_layer {
                        out.push(SweepItem {
                            label: format!("pos {p}, layer {l}"),
                            index: p,
                            layer: Some(l),
                            condition: cond(
                                Span {
                                    start: p,
                                    end: p + 1,
                                },
                                LayerSet::parse(&l.to_string()).unwrap_or_default(),
                            ),
                        });
                    }
                }
                out
            }
        }
    }
}

/// The measurement of one sweep item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The item's label.
    pub label: String,
    /// Its index (position, extra tokens or layer).
    pub index: usize,
    /// The layer, for position × layer sweeps.
    #[serde(default)]
    pub layer: Option<u32>,
    /// Own variant's expected-answer score minus the best other's (when answers exist).
    #[serde(default, with = "crate::experiment::floats")]
    pub preference: Option<f64>,
    /// Sum of log-probs of each variant's measured continuation, in variant order.
    #[serde(with = "crate::experiment::floats")]
    pub scores: Vec<f64>,
    /// Log-prob of each probe's token at the first generated step.
    #[serde(with = "crate::experiment::floats")]
    pub first_step_probes: Vec<f32>,
}

/// A sweep's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResults {
    /// The sweep.
    pub sweep: SweepSpec,
    /// What was scored: "expected answers" or "baseline continuations (N tokens)".
    pub measure: String,
    /// The same measurement with no intervention, for reference.
    pub reference: SweepPoint,
    /// One per item, in order; fewer when stopped.
    pub points: Vec<SweepPoint>,
    /// False when stopped before the end.
    pub complete: bool,
    /// The experiment it was measured on (`None` in files older than session format 2, which
    /// did not record it: such a sweep cannot be shown as current).
    #[serde(default)]
    pub spec: Option<ExperimentSpec>,
    /// The swept variant's prompt tokens, so that items are always labelled with the prompt
    /// they were measured on (empty in older files).
    #[serde(default)]
    pub tokens: Vec<TokenPiece>,
    /// The model's sliding-window layers (empty: none, or a file from before they were
    /// recorded), so that single-layer items can say they only see the last
    /// [`Self::sliding_window`] tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sliding_layers: Vec<u32>,
    /// The sliding window in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<u32>,
    /// Whether items shared the prompt's cache cells (`runner::SweepCaches::Shared`): their
    /// edited cells then sit in another order than in a grid, which moves results a little.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_cache: bool,
}

impl SweepResults {
    /// Whether `p` edits one layer only, and that layer slides.
    pub fn slides(&self, p: &SweepPoint) -> bool {
        p.layer.is_some_and(|l| self.sliding_layers.contains(&l))
    }

    /// The effect of each point: its preference (or own-variant score) minus the reference's.
    pub fn effects(&self, own_variant_index: usize) -> Vec<f64> {
        let value = |p: &SweepPoint| {
            p.preference
                .unwrap_or_else(|| p.scores.get(own_variant_index).copied().unwrap_or(0.0))
        };
        let r = value(&self.reference);
        self.points.iter().map(|p| value(p) - r).collect()
    }
}

/// A terminal table: each item's effect on the measure, with a bar.
pub fn to_table(r: &SweepResults, own_variant_index: usize) -> String {
    use std::fmt::Write as _;
    let effects = r.effects(own_variant_index);
    let max = effects.iter().map(|e| e.abs()).fold(1e-9, f64::max);
    let mut out = format!(
        "{} sweep of {} on {} — measure: {}{}\n",
        r.sweep.kind.name(),
        r.sweep.op.short(),
        r.sweep.variant,
        r.measure,
        if r.complete {
            ""
        } else {
            " (STOPPED EARLY: partial)"
        }
    );
    let _ = writeln!(
        out,
        "effect = change of {} against no intervention",
        if r.reference.preference.is_some() {
            "the preference"
        } else {
            "the own-variant log-prob"
        }
    );
    for (p, e) in r.points.iter().zip(&effects) {
        let n = ((e.abs() / max) * 30.0).round() as usize;
        let bar = if *e < 0.0 {
            "▇".repeat(n)
        } else {
            "░".repeat(n)
        };
        let label = if r.slides(p) {
            format!("{} (sliding)", p.label)
        } else {
            p.label.clone()
        };
        let _ = writeln!(out, "{label:>24}  {e:>+9.3}  {bar}");
    }
    if let Some(w) = r.sliding_window
        && r.points.iter().any(|p| r.slides(p))
    {
        let _ = writeln!(
            out,
            "(sliding): a sliding-window layer, which attends to the last {w} tokens only"
        );
    }
    if r.shared_cache {
        let _ = writeln!(out, "{SHARED_CACHE_NOTE}");
    }
    out
}

/// What a sweep whose items shared the prompt's cache cells says about its numbers.
pub const SHARED_CACHE_NOTE: &str = "items shared the prompt's cache cells (fast at large \
     caches): an edited cell is seen after the prompt's, not in its place, which moves results \
     slightly against the same condition in a grid (see the README's Sweeps section)";

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(kind: SweepKind) -> SweepSpec {
        SweepSpec {
            kind,
            variant: "SF".into(),
            op: Op::Zero,
            layers: LayerSet::All,
            part: KvPart::Both,
        }
    }

    #[test]
    fn position_sweep_visits_every_cached_position() {
        let items =
            sweep(SweepKind::Position { range: None }).items(10, 4, Span { start: 3, end: 4 });
        assert_eq!(items.len(), 9);
        assert_eq!(
            items[6].condition.site.span,
            Some(Span { start: 6, end: 7 })
        );
        let items = sweep(SweepKind::Position {
            range: Some(Span { start: 2, end: 50 }),
        })
        .items(10, 4, Span { start: 3, end: 4 });
        assert_eq!(items.first().unwrap().index, 2);
        assert_eq!(items.last().unwrap().index, 8);
    }

    /// A remove item may not take the cache's last position (the prompt's last token must
    /// follow a cached one): remove sweeps stop one position earlier.
    #[test]
    fn remove_sweeps_leave_the_last_cached_position() {
        let remove = |kind| SweepSpec {
            op: Op::Remove,
            ..sweep(kind)
        };
        let items =
            remove(SweepKind::Position { range: None }).items(10, 4, Span { start: 3, end: 4 });
        assert_eq!(
            items.last().unwrap().index,
            7,
            "positions 0..=7 of the cached 0..=8"
        );
        let spans =
            remove(SweepKind::Span { max_extra: 20 }).items(10, 4, Span { start: 3, end: 4 });
        assert_eq!(
            spans.last().unwrap().condition.site.span,
            Some(Span { start: 3, end: 8 })
        );
    }

    #[test]
    fn span_sweep_grows_from_the_needle() {
        let items =
            sweep(SweepKind::Span { max_extra: 20 }).items(10, 4, Span { start: 3, end: 4 });
        assert_eq!(items.len(), 6, "3..4 up to 3..9");
        assert_eq!(
            items[2].condition.site.span,
            Some(Span { start: 3, end: 6 })
        );
        // The largest number a user can type ends at once, with the same items.
        let items = sweep(SweepKind::Span {
            max_extra: usize::MAX,
        })
        .items(10, 4, Span { start: 3, end: 4 });
        assert_eq!(items.len(), 6);
    }

    #[test]
    fn position_layer_sweep_covers_the_grid() {
        let items = sweep(SweepKind::PositionLayer {
            range: Some(Span { start: 2, end: 4 }),
        })
        .items(10, 3, Span { start: 3, end: 4 });
        assert_eq!(items.len(), 6);
        assert_eq!(items[4].index, 3);
        assert_eq!(items[4].layer, Some(1));
        assert_eq!(items[4].condition.site.layers.to_string(), "1");
    }

    #[test]
    fn layer_sweep_has_single_and_cumulative_ranges() {
        let items = sweep(SweepKind::Layer).items(10, 4, Span { start: 3, end: 4 });
        assert_eq!(items.len(), 12);
        assert_eq!(items[1].condition.site.layers.to_string(), "1");
        assert_eq!(items[5].condition.site.layers.to_string(), "0-1");
        assert_eq!(items[8].condition.site.layers.to_string(), "3");
        assert_eq!(items[11].condition.site.layers.to_string(), "0-3");
    }

    #[test]
    fn sweep_ops_become_the_interventions_they_name() {
        let spec = ExperimentSpec::seed();
        let names: Vec<String> = spec.variants.iter().map(|v| v.name.clone()).collect();
        let (a, b) = (names[0].as_str(), names[1].as_str());
        assert_eq!(SweepOp::Zero.op(&spec, a, None), Ok(Op::Zero));
        assert_eq!(SweepOp::Remove.op(&spec, a, None), Ok(Op::Remove));
        assert_eq!(
            SweepOp::Mean.op(&spec, a, None),
            Ok(Op::Mean { over: Vec::new() })
        );
        assert_eq!(
            SweepOp::Noise.op(&spec, a, None),
            Ok(Op::Noise {
                scale: 3.0,
                seed: 0
            })
        );
        // In a pair each variant takes the other's rows; a named donor wins.
        let from = |v: &str, f: Option<&str>| SweepOp::Transplant.op(&spec, v, f);
        assert_eq!(from(a, None), Ok(Op::Transplant { from: b.into() }));
        assert_eq!(from(b, None), Ok(Op::Transplant { from: a.into() }));
        assert!(from(a, Some(a)).unwrap_err().contains("another variant"));
        let mut one = spec.clone();
        one.variants.truncate(1);
        assert!(
            SweepOp::Transplant
                .op(&one, a, None)
                .unwrap_err()
                .contains("second variant")
        );
        let labels: Vec<_> = SweepOp::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(labels, ["zero", "remove", "mean", "noise", "transplant"]);
    }

    /// The table marks single sliding layers (and only those) and says what that means.
    #[test]
    fn the_table_marks_sliding_layers() {
        let point = |label: &str, layer: Option<u32>, p: f64| SweepPoint {
            label: label.into(),
            index: 0,
            layer,
            preference: Some(p),
            scores: vec![],
            first_step_probes: vec![],
        };
        let mut r = SweepResults {
            sweep: sweep(SweepKind::Layer),
            measure: "expected answers".into(),
            reference: point("no intervention", None, 1.0),
            points: vec![
                point("layer 0", Some(0), 0.5),
                point("layer 1", Some(1), -1.0),
                point("layers 0-1", None, -2.0),
            ],
            complete: true,
            spec: None,
            tokens: Vec::new(),
            sliding_layers: vec![0],
            sliding_window: Some(512),
            shared_cache: false,
        };
        let t = to_table(&r, 0);
        assert!(t.contains("layer 0 (sliding)"), "{t}");
        assert!(
            !t.contains("layer 1 (sliding)") && !t.contains("0-1 (sliding)"),
            "{t}"
        );
        assert!(t.contains("attends to the last 512 tokens only"), "{t}");
        r.sliding_layers.clear();
        assert!(!to_table(&r, 0).contains("sliding"));
    }
}
