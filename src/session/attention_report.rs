//! The HTML report's attention section (runs with `--attention`): per condition a layer × step
//! heatmap of attention to the needle, its baseline's and their difference, and per variant
//! the prompt tokens coloured by how much they read the needle. Self-contained SVG.

use std::fmt::Write as _;

use super::report::esc;
use crate::experiment::RunResults;
use crate::experiment::attention::{AttentionResults, Measure, Scale, difference};

/// Cell size and margins of a heatmap, in pixels.
const CW: f64 = 16.0;
const CH: f64 = 9.0;
const LEFT: f64 = 34.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 74.0;
const BAR: f64 = 70.0;

fn rgb(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Short, printable text of a token for an axis label.
fn label(piece: &str) -> String {
    let s: String = piece
        .chars()
        .map(|c| if c.is_control() { '·' } else { c })
        .take(10)
        .collect();
    esc(&s)
}

/// A `[layer][step]` heatmap with layer numbers on the left, the query tokens below, and the
/// colour scale with its values on the right.
fn heatmap(grid: &[Vec<f32>], steps: &[String], scale: Scale, title: &str) -> String {
    let n_layer = grid.len();
    let n_step = grid.first().map_or(0, Vec::len);
    let (w, h) = (n_step as f64 * CW, n_layer as f64 * CH);
    let mut out = format!(
        "<figure class=\"att\"><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-size=\"8\" font-family=\"sans-serif\">",
        esc(title),
        LEFT + w + BAR,
        TOP + h + BOTTOM
    );
    let _ = write!(
        out,
        "<text x=\"0\" y=\"10\">layer</text><text x=\"{LEFT}\" y=\"{}\">step: query token →</text>",
        TOP + h + BOTTOM - 2.0
    );
    for (l, row) in grid.iter().enumerate() {
        let y = TOP + l as f64 * CH;
        if l % 5 == 0 || l + 1 == n_layer {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{l}</text>",
                LEFT - 3.0,
                y + CH - 1.0
            );
        }
        for (s, &v) in row.iter().enumerate() {
            let _ = write!(
                out,
                "<rect x=\"{}\" y=\"{y}\" width=\"{CW}\" height=\"{CH}\" fill=\"{}\"><title>L{l} s{s}: {v:.4}</title></rect>",
                LEFT + s as f64 * CW,
                rgb(scale.rgb(v))
            );
        }
    }
    for (s, piece) in steps.iter().enumerate().take(n_step) {
        let x = LEFT + s as f64 * CW + CW * 0.7;
        let y = TOP + h + 4.0;
        let _ = write!(
            out,
            "<text transform=\"translate({x},{y}) rotate(60)\">{s} {}</text>",
            label(piece)
        );
    }
    // The colour scale: a bar from the top (highest) to the bottom (lowest), with values.
    let (lo, hi) = scale.range();
    let bx = LEFT + w + 8.0;
    for i in 0..20 {
        let v = hi - (hi - lo) * (i as f32 + 0.5) / 20.0;
        let _ = write!(
            out,
            "<rect x=\"{bx}\" y=\"{}\" width=\"10\" height=\"{}\" fill=\"{}\"/>",
            TOP + h * i as f64 / 20.0,
            h / 20.0 + 0.5,
            rgb(scale.rgb(v))
        );
    }
    let mid = (lo + hi) / 2.0;
    for (v, y) in [(hi, TOP + 7.0), (mid, TOP + h / 2.0 + 3.0), (lo, TOP + h)] {
        let _ = write!(out, "<text x=\"{}\" y=\"{y}\">{v:.3}</text>", bx + 13.0);
    }
    out.push_str("</svg></figure>");
    out
}

/// The query token of each step of a row: the last prompt token, then the generated tokens.
fn query_tokens(
    r: &RunResults,
    variant: usize,
    steps: &[crate::experiment::results::Step],
) -> Vec<String> {
    let last = r.variants[variant]
        .tokens
        .last()
        .map(|t| t.piece.clone())
        .unwrap_or_default();
    std::iter::once(last)
        .chain(steps.iter().map(|s| s.token.piece.clone()))
        .collect()
}

/// The prompt's carriers as chips coloured by their weight on the needle (mean over heads,
/// summed over layers).
fn strip(out: &mut String, r: &RunResults, a: &AttentionResults, vi: usize) {
    let pass = &a.variants[vi];
    let values = pass.strip(a.n_head, None);
    let scale = Scale::weights([&values]);
    let (_, hi) = scale.range();
    let _ = write!(
        out,
        "<p class=\"small\">{}: each prompt token after the needle, coloured by its attention to the needle while the prompt was read (mean over heads, summed over layers; scale 0 to {hi:.3})</p><p>",
        esc(&r.variants[vi].name)
    );
    let tokens = &r.variants[vi].tokens;
    for (i, t) in tokens.iter().enumerate() {
        let style = if a.needle.positions().contains(&i) {
            " class=\"tok needle\"".to_string()
        } else if let Some(v) = i
            .checked_sub(pass.carriers.start)
            .and_then(|k| values.get(k))
        {
            let c = scale.rgb(*v);
            let fg = if c.iter().map(|&x| x as u32).sum::<u32>() > 400 {
                "#000"
            } else {
                "#fff"
            };
            format!(
                " class=\"tok\" style=\"background:{};color:{fg}\" title=\"{v:.4}\"",
                rgb(c)
            )
        } else {
            " class=\"tok\"".to_string()
        };
        let _ = write!(out, "<span{style}>{}</span>", esc(&t.piece));
    }
    out.push_str("</p>");
}

/// The attention section, when the run captured it.
pub(super) fn html(out: &mut String, r: &RunResults) {
    let Some(a) = &r.attention else {
        return;
    };
    out.push_str("<h2>Attention to the needle</h2><p class=\"small\">Captured with flash attention off. Heatmaps: the weight each step's query token (the last prompt token, then each generated token) pays to the needle's cells, mean over heads, per layer (rows) and step (columns); the difference is condition minus baseline. Hover a cell for its value (L: layer, s: step).</p>");
    for vi in 0..r.variants.len() {
        strip(out, r, a, vi);
    }
    for (c, row) in r.conditions.iter().zip(&a.conditions) {
        let Some(vi) = r.variants.iter().position(|v| v.name == c.variant) else {
            continue;
        };
        let base = a.baselines[vi].layer_by_step(Measure::Needle, a.n_head, None);
        let cond = row.layer_by_step(Measure::Needle, a.n_head, None);
        let diff = difference(&cond, &base);
        let scale = Scale::weights(base.iter().chain(&cond));
        let baseline_steps = query_tokens(r, vi, &r.variants[vi].baseline.steps);
        let _ = write!(
            out,
            "<h3>{} ({})</h3><div class=\"attrow\">{}{}{}</div>",
            esc(&c.label),
            esc(&c.variant),
            heatmap(
                &cond,
                &query_tokens(r, vi, &c.generation.steps),
                scale,
                &c.label
            ),
            heatmap(
                &base,
                &baseline_steps,
                scale,
                &format!("baseline {}", r.variants[vi].name)
            ),
            heatmap(
                &diff,
                &baseline_steps,
                Scale::differences(&diff),
                "condition − baseline"
            )
        );
    }
}
