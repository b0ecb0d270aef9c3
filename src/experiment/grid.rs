//! The outcome grid: rows are conditions (by label), columns are variants; each cell shows the
//! start of the generated text and how strongly the cache prefers each variant's answer.

use std::fmt::Write as _;

use super::results::{ConditionResult, RunResults, Verdict};

/// How many characters of generated text a cell shows.
pub const CELL_CHARS: usize = 120;

/// One row of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRow<'a> {
    /// The row label.
    pub label: String,
    /// One entry per variant (in spec order); `None` where no condition fills the cell.
    pub cells: Vec<Option<&'a ConditionResult>>,
}

/// The grid of a run: a "baseline" row is not included (the `none` condition is the control).
pub fn rows(results: &RunResults) -> Vec<GridRow<'_>> {
    let mut rows: Vec<GridRow<'_>> = Vec::new();
    for c in &results.conditions {
        let col = results
            .variants
            .iter()
            .position(|v| v.name == c.variant)
            .unwrap_or(0);
        let row = match rows
            .iter_mut()
            .find(|r| r.label == c.label && r.cells[col].is_none())
        {
            Some(r) => r,
            None => {
                rows.push(GridRow {
                    label: c.label.clone(),
                    cells: vec![None; results.variants.len()],
                });
                rows.last_mut().expect("just pushed")
            }
        };
        row.cells[col] = Some(c);
    }
    rows
}

/// The text shown in a cell: newlines as `⏎`, cut at `max` characters.
pub fn preview(text: &str, max: usize) -> String {
    let flat: String = text
        .trim_start()
        .chars()
        .map(|c| if c == '\n' { '⏎' } else { c })
        .collect();
    if flat.chars().count() > max {
        flat.chars().take(max - 1).collect::<String>() + "…"
    } else {
        flat
    }
}

/// How the preference is computed, in words (tooltips, report footnotes).
pub const PREFERENCE_HELP: &str = "Each variant's expected answers are scored teacher-forced \
    under the edited cache: log P(answer) is the sum of the answer's token log-probs, and a \
    variant's score is the log of the total probability of its answers. The preference is the \
    row's own variant's score minus the best other variant's: above 0 the cache keeps its own \
    needle, below 0 it flips to the other.";

/// The log-probability of a variant's expected answers under a condition's cache: the number
/// its verdict compares (`None` when the variant has no expected answer or the run was not
/// scored).
pub fn answer_score(c: &ConditionResult, variant: &str) -> Option<f64> {
    super::outcome::variant_score(&c.expected, variant)
}

/// The measurements of a cell: the verdict (when expected answers exist) with the answer
/// scores it compares, the mean per-token log-prob of each variant's baseline continuation
/// under its cache, the keyword tally, and where the text departs from the baseline (marked
/// fragile at a near-tie).
pub fn score_line(results: &RunResults, c: &ConditionResult) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(v) = &c.verdict {
        parts.push(v.to_string());
    }
    if c.scores.is_empty() {
        parts.push("(not scored)".into());
    }
    let answers: Vec<String> = results
        .variants
        .iter()
        .filter_map(|v| answer_score(c, &v.name).map(|s| format!("{} {s:.2}", v.name)))
        .collect();
    if !answers.is_empty() {
        parts.push(format!("log P(answers) {}", answers.join(", ")));
    }
    let lps: Vec<String> = results
        .variants
        .iter()
        .filter_map(|v| c.score_of(&v.name))
        .map(|s| format!("{} {:.3}", s.of_variant, s.mean))
        .collect();
    if !lps.is_empty() {
        parts.push(format!("baseline texts, mean lp/token {}", lps.join(", ")));
    }
    if !c.keywords.is_empty() {
        let k: Vec<String> = c
            .keywords
            .iter()
            .map(|k| format!("{}×{}", k.variant, k.count))
            .collect();
        parts.push(format!("keywords {}", k.join(" ")));
    }
    parts.push(match c.first_divergence {
        None => "same as baseline".to_string(),
        Some(i) if c.fragile => format!("departs at token {i} (near-tie: fragile)"),
        Some(i) => format!("departs at token {i}"),
    });
    parts.join(" · ")
}

/// Wraps a cell's measurement line in ANSI colors by its verdict: green when the cache keeps
/// its own city, red when it flips, yellow when undecided.
fn colorize(line: String, c: &ConditionResult) -> String {
    let code = match &c.verdict {
        Some(Verdict::Keeps { .. }) => "32",
        Some(Verdict::FlipsTo { .. }) => "31",
        Some(Verdict::Undecided { .. }) => "33",
        None => return line,
    };
    format!("\x1b[{code}m{line}\x1b[0m")
}

/// A terminal-friendly rendering; `color` adds ANSI colors by verdict.
pub fn to_table(results: &RunResults, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — needle at token {} ({} variants, {} conditions{})",
        results.spec.name,
        results.needle_span,
        results.variants.len(),
        results.conditions.len(),
        if results.complete {
            ""
        } else {
            ", STOPPED EARLY"
        }
    );
    let name_w = results
        .variants
        .iter()
        .map(|v| v.name.chars().count())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "\nbaseline");
    for v in &results.variants {
        let _ = writeln!(
            out,
            "  {:name_w$} │ {}",
            v.name,
            preview(&v.baseline.text, CELL_CHARS)
        );
    }
    for row in rows(results) {
        let _ = writeln!(out, "\n{}", row.label);
        for (v, cell) in results.variants.iter().zip(&row.cells) {
            match cell {
                Some(c) => {
                    let _ = writeln!(
                        out,
                        "  {:name_w$} │ {}\n  {:name_w$} │   {}",
                        v.name,
                        preview(&c.generation.text, CELL_CHARS),
                        "",
                        if color {
                            colorize(score_line(results, c), c)
                        } else {
                            score_line(results, c)
                        }
                    );
                }
                None => {
                    let _ = writeln!(out, "  {:name_w$} │ —", v.name);
                }
            }
        }
    }
    let noise = super::samples::noise_summaries(results);
    if !noise.is_empty() {
        let _ = writeln!(out, "\nnoise draws");
        for s in noise {
            let _ = writeln!(out, "  {s}");
        }
    }
    if let Some(w) = super::window::describe(results) {
        let _ = writeln!(out, "\n{w}");
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('<', "&lt;")
}

/// A Markdown table.
pub fn to_markdown(results: &RunResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "**{}** — needle at token {}\n",
        md_escape(&results.spec.name),
        results.needle_span
    );
    let header: Vec<String> = results
        .variants
        .iter()
        .map(|v| md_escape(&v.name))
        .collect();
    let _ = writeln!(out, "| condition | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(header.len()));
    let base: Vec<String> = results
        .variants
        .iter()
        .map(|v| md_escape(&preview(&v.baseline.text, CELL_CHARS)))
        .collect();
    let _ = writeln!(out, "| baseline | {} |", base.join(" | "));
    for row in rows(results) {
        let cells: Vec<String> = row
            .cells
            .iter()
            .map(|c| match c {
                Some(c) => format!(
                    "{}<br>*{}*",
                    md_escape(&preview(&c.generation.text, CELL_CHARS)),
                    md_escape(&score_line(results, c))
                ),
                None => "—".into(),
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", md_escape(&row.label), cells.join(" | "));
    }
    for s in super::samples::noise_summaries(results) {
        let _ = writeln!(out, "\n- {}", md_escape(&s.to_string()));
    }
    if let Some(w) = super::window::describe(results) {
        let _ = writeln!(out, "\n{}", md_escape(&w));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_flattens_and_cuts() {
        assert_eq!(preview("  a\nb", 10), "a⏎b");
        let long = "x".repeat(200);
        let p = preview(&long, 120);
        assert_eq!(p.chars().count(), 120);
        assert!(p.ends_with('…'));
    }

    /// The numbers shown beside a verdict are the ones it was computed from: own answers'
    /// score minus the best other's equals the preference, in every scored cell of a real run.
    #[test]
    fn the_answer_scores_shown_add_up_to_the_preference() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/results-v0.json"
        ));
        let r = crate::session::Session::from_json(text, "results-v0.json")
            .unwrap()
            .results
            .unwrap();
        // The fixture predates expected answers: give each condition some, scored as a run
        // scores them.
        let mut r = r;
        let names: Vec<String> = r.variants.iter().map(|v| v.name.clone()).collect();
        for (i, c) in r.conditions.iter_mut().enumerate() {
            let e = |variant: &str, answer: &str, sum: f64| super::super::outcome::ExpectedScore {
                variant: variant.into(),
                answer: answer.into(),
                sum,
                mean: sum / 3.0,
                per_token: vec![(sum / 3.0) as f32; 3],
            };
            c.expected = vec![
                e(&names[0], "a", -1.5 - i as f64),
                e(&names[0], "b", -2.0),
                e(&names[1], "c", -3.0 + 0.7 * i as f64),
            ];
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let (p, other) =
                super::super::outcome::preference(&c.expected, &c.variant, &refs).unwrap();
            c.preference = Some(p);
            c.verdict = Some(Verdict::new(&c.variant, p, &other));
        }
        let mut checked = 0;
        for c in &r.conditions {
            let Some(pref) = c.preference else { continue };
            let own = answer_score(c, &c.variant).unwrap();
            let best_other = r
                .variants
                .iter()
                .filter(|v| v.name != c.variant)
                .filter_map(|v| answer_score(c, &v.name))
                .fold(f64::NEG_INFINITY, f64::max);
            assert!((own - best_other - pref).abs() < 1e-9, "{}", c.label);
            let line = score_line(&r, c);
            assert!(line.contains(&format!("{} {own:.2}", c.variant)), "{line}");
            assert!(line.contains("log P(answers)") && line.contains("mean lp/token"));
            checked += 1;
        }
        assert!(checked > 0, "the fixture has scored cells");
    }
}
