//! The outcome grid: rows are conditions (by label), columns are variants; each cell shows the
//! start of the generated text and how strongly the cache prefers each variant's answer.

use std::fmt::Write as _;

use super::results::{ConditionResult, RunResults};

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

/// The measurements of a cell: the verdict (when expected answers exist), the mean log-prob
/// of each variant's baseline answer under its cache, the keyword tally, and where the text
/// departs from the baseline (marked fragile at a near-tie).
pub fn score_line(results: &RunResults, c: &ConditionResult) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(v) = &c.verdict {
        parts.push(v.clone());
    }
    if c.scores.is_empty() {
        parts.push("(not scored)".into());
    }
    let lps: Vec<String> = results
        .variants
        .iter()
        .filter_map(|v| c.score_of(&v.name))
        .map(|s| format!("lp({})={:.3}", s.of_variant, s.mean))
        .collect();
    if !lps.is_empty() {
        parts.push(lps.join(" "));
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
    let code = match c.verdict.as_deref() {
        Some(v) if v.starts_with("keeps") => "32",
        Some(v) if v.starts_with("flips") => "31",
        Some(_) => "33",
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
}
