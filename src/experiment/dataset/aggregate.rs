//! A dataset's rows summarized per condition: how often the answer flips to the partner (with
//! a Wilson 95 % interval) and how far the preference moves from the same item's `none` (with
//! a bootstrap 95 % interval over items), overall and split by prompt template and by needle.
//! Each row of one condition is one item, so resampling a condition's values resamples items.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::results::{DatasetResults, ItemRow};
use crate::experiment::stats::{
    BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Interval, Z95, bootstrap_mean_ci, mean, wilson,
};

/// One condition over a set of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The condition's label.
    pub condition: String,
    /// Items with a verdict.
    pub n: usize,
    /// Of those, items whose verdict flips to the partner.
    pub flips: usize,
    /// flips / n (`None` for no item).
    #[serde(with = "crate::experiment::floats")]
    pub flip_rate: Option<f64>,
    /// Its Wilson 95 % interval.
    pub flip_ci: Option<Interval>,
    /// Items with a change of preference against `none`.
    pub n_delta: usize,
    /// The mean change of preference against the same item's `none`.
    #[serde(with = "crate::experiment::floats")]
    pub mean_delta: Option<f64>,
    /// Its bootstrap 95 % interval (fixed seed: the same rows give the same interval).
    pub delta_ci: Option<Interval>,
}

/// The aggregates of a dataset: overall, and split by prompt template and by needle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregates {
    /// Items finished, of items planned.
    pub items: (usize, usize),
    /// Per condition, every item.
    pub overall: Vec<Aggregate>,
    /// Per prompt template (by name), per condition.
    pub by_template: Vec<(String, Vec<Aggregate>)>,
    /// Per needle (by name), per condition.
    pub by_needle: Vec<(String, Vec<Aggregate>)>,
}

/// The aggregate of each of `labels` (condition templates, in order) over `rows`.
pub fn aggregate<'a>(
    rows: impl IntoIterator<Item = &'a ItemRow>,
    labels: &[String],
) -> Vec<Aggregate> {
    let rows: Vec<&ItemRow> = rows.into_iter().collect();
    labels
        .iter()
        .enumerate()
        .map(|(ci, label)| {
            let of: Vec<&&ItemRow> = rows.iter().filter(|r| r.condition == ci).collect();
            let judged: Vec<&&&ItemRow> = of.iter().filter(|r| r.verdict.is_some()).collect();
            let flips = judged.iter().filter(|r| r.flips()).count();
            let n = judged.len();
            let deltas: Vec<f64> = of
                .iter()
                .filter_map(|r| r.delta)
                .filter(|d| d.is_finite())
                .collect();
            Aggregate {
                condition: label.clone(),
                n,
                flips,
                flip_rate: (n > 0).then(|| flips as f64 / n as f64),
                flip_ci: wilson(flips, n, Z95),
                n_delta: deltas.len(),
                mean_delta: mean(&deltas),
                delta_ci: bootstrap_mean_ci(&deltas, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED),
            }
        })
        .collect()
}

/// Every aggregate of a dataset's results.
pub fn aggregates(results: &DatasetResults) -> Aggregates {
    let rows = results.rows();
    let Some(data) = results.spec.dataset.as_ref() else {
        return Aggregates {
            items: (0, 0),
            overall: Vec::new(),
            by_template: Vec::new(),
            by_needle: Vec::new(),
        };
    };
    let labels: Vec<String> = data.conditions.iter().map(|c| c.row_label()).collect();
    let by_template = data
        .templates
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let of = rows.iter().filter(|r| r.template == ti);
            (t.name.clone(), aggregate(of, &labels))
        })
        .collect();
    let by_needle = data
        .needles
        .iter()
        .map(|n| {
            let of = rows.iter().filter(|r| r.needle == n.name());
            (n.name().to_string(), aggregate(of, &labels))
        })
        .collect();
    Aggregates {
        items: (results.finished_items(), results.items.len()),
        overall: aggregate(&rows, &labels),
        by_template,
        by_needle,
    }
}

/// "0.30 [0.11, 0.60]", or "—".
fn with_ci(value: Option<f64>, ci: Option<Interval>, signed: bool) -> String {
    match (value, ci) {
        (Some(v), Some(i)) if signed => format!("{v:+.2} [{:+.2}, {:+.2}]", i.low, i.high),
        (Some(v), Some(i)) => format!("{v:.2} [{:.2}, {:.2}]", i.low, i.high),
        _ => "—".into(),
    }
}

/// The cells of one aggregate's row: condition, n, flips, flip rate [CI], mean Δ [CI].
pub fn cells(a: &Aggregate) -> [String; 5] {
    [
        a.condition.clone(),
        a.n.to_string(),
        a.flips.to_string(),
        with_ci(a.flip_rate, a.flip_ci, false),
        with_ci(a.mean_delta, a.delta_ci, true),
    ]
}

/// The column titles of an aggregate table (the CLI's and the app's).
pub const HEADER: [&str; 5] = [
    "condition",
    "n",
    "flips",
    "flip rate [95% CI]",
    "Δpref vs none [95% CI]",
];

/// The title line (the app shows it too): name, items finished, and whether the run was stopped.
pub fn title(results: &DatasetResults) -> String {
    let (done, all) = (results.finished_items(), results.items.len());
    let stopped = if results.complete {
        ""
    } else {
        ", STOPPED EARLY (partial)"
    };
    format!("{} — {done} of {all} items{stopped}", results.spec.name)
}

/// Aligned text for a terminal: the overall table, then the splits.
pub fn to_table(results: &DatasetResults) -> String {
    let a = aggregates(results);
    let mut out = title(results) + "\n";
    let mut section = |name: &str, rows: &[Aggregate]| {
        let all: Vec<[String; 5]> = std::iter::once(HEADER.map(String::from))
            .chain(rows.iter().map(cells))
            .collect();
        let w: Vec<usize> = (0..5)
            .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let _ = writeln!(out, "\n{name}");
        for r in &all {
            let line: Vec<String> = r
                .iter()
                .zip(&w)
                .enumerate()
                .map(|(i, (c, w))| match i {
                    0 => format!("{c:<w$}"),
                    _ => format!("{c:>w$}"),
                })
                .collect();
            let _ = writeln!(out, "  {}", line.join("  "));
        }
    };
    section("all items", &a.overall);
    for (name, rows) in &a.by_template {
        section(&format!("template {name}"), rows);
    }
    for (name, rows) in &a.by_needle {
        section(&format!("needle {name}"), rows);
    }
    out
}

/// Markdown: one table per section.
pub fn to_markdown(results: &DatasetResults) -> String {
    let a = aggregates(results);
    let mut out = format!("**{}**\n", title(results).replace('|', "\\|"));
    let mut section = |name: &str, rows: &[Aggregate]| {
        let _ = writeln!(out, "\n### {name}\n\n| {} |", HEADER.join(" | "));
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for r in rows {
            let c = cells(r).map(|c| c.replace('|', "\\|"));
            let _ = writeln!(out, "| {} |", c.join(" | "));
        }
    };
    section("All items", &a.overall);
    for (name, rows) in &a.by_template {
        section(&format!("Template {name}"), rows);
    }
    for (name, rows) in &a.by_needle {
        section(&format!("Needle {name}"), rows);
    }
    out
}

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV with one row per item × condition.
pub fn to_csv(results: &DatasetResults) -> String {
    let templates: Vec<&str> = results
        .spec
        .dataset
        .as_ref()
        .map(|d| d.templates.iter().map(|t| t.name.as_str()).collect())
        .unwrap_or_default();
    let mut out =
        String::from("item,template,needle,partner,condition,preference,verdict,delta_vs_none\n");
    let num = |x: Option<f64>| x.map(|v| format!("{v}")).unwrap_or_default();
    for r in results.rows() {
        let fields = [
            r.item.to_string(),
            templates.get(r.template).unwrap_or(&"").to_string(),
            r.needle.clone(),
            r.partner.clone(),
            r.label.clone(),
            num(r.preference),
            r.verdict.as_ref().map_or("", |v| v.class()).to_string(),
            num(r.delta),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        let _ = writeln!(out, "{}", line.join(","));
    }
    out
}
