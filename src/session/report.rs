//! Shareable reports of a session: one self-contained HTML file (inline CSS and SVG, no network),
//! Markdown (the grid as a table) and CSV (per-step probabilities).

use std::fmt::Write as _;

use super::Session;
use crate::experiment::RunResults;
use crate::experiment::grid::{self, preview};
use crate::experiment::results::Verdict;

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn verdict_class(v: Option<&Verdict>) -> &'static str {
    v.map_or("", Verdict::class)
}

fn verdict_text(v: Option<&Verdict>, none: &str) -> String {
    v.map_or(none.to_string(), Verdict::to_string)
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.4em .6em;vertical-align:top;text-align:left}
th{background:#f3f3f3}.gen{font-family:ui-monospace,monospace;font-size:.85em;white-space:pre-wrap;max-width:44em}
.needle{background:#ffd54f;font-weight:bold}.tok{font-family:ui-monospace,monospace;border:1px solid #ddd;margin:1px;padding:0 2px;display:inline-block}
.keeps{color:#1b7f3b;font-weight:bold}.flips{color:#c62828;font-weight:bold}.undecided{color:#b7791f;font-weight:bold}
.div{background:#c62828;color:#fff}.small{color:#666;font-size:.85em}.kv td{border:0;padding:0}
.attrow{display:flex;flex-wrap:wrap;gap:1em}.att{margin:0}";

/// The prompt of the first variant as token chips, the needle highlighted.
fn prompt_html(r: &RunResults) -> String {
    let mut out = String::new();
    for v in &r.variants {
        let _ = write!(out, "<p><b>{}</b><br>", esc(&v.name));
        for (i, t) in v.tokens.iter().enumerate() {
            let cls = if r.needle_span.positions().contains(&i) {
                "tok needle"
            } else {
                "tok"
            };
            let _ = write!(
                out,
                "<span class=\"{cls}\" title=\"position {i}, id {}\">{}</span>",
                t.id,
                esc(&t.piece).replace('\n', "⏎")
            );
        }
        out.push_str("</p>");
    }
    out
}

/// A generation with the first departing token marked.
fn generation_html(g: &crate::experiment::results::Generation, diverge: Option<usize>) -> String {
    let mut out = String::from("<div class=\"gen\">");
    for (i, s) in g.steps.iter().enumerate() {
        let piece = esc(&s.token.piece);
        if diverge == Some(i) {
            let _ = write!(out, "<span class=\"div\">{piece}</span>");
        } else {
            out.push_str(&piece);
        }
    }
    out.push_str("</div>");
    out
}

/// Probe probability per step as an SVG line chart, one line per condition.
fn probe_svg(r: &RunResults, probe: usize) -> String {
    let (w, h, pad) = (720.0, 240.0, 30.0);
    let steps = r
        .conditions
        .iter()
        .map(|c| c.generation.steps.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\"><rect width=\"{w}\" height=\"{h}\" fill=\"#fff\" stroke=\"#ccc\"/>"
    );
    for (ci, c) in r.conditions.iter().enumerate() {
        let pts: Vec<String> = c
            .generation
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = s.probes.get(probe).map_or(0.0, |lp| lp.exp()) as f64;
                let x = pad + (w - 2.0 * pad) * i as f64 / (steps - 1) as f64;
                let y = h - pad - (h - 2.0 * pad) * p;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let color = palette[ci % palette.len()];
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"><title>{} ({})</title></polyline>",
            pts.join(" "),
            esc(&c.label),
            esc(&c.variant)
        );
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"{color}\">{} ({})</text>",
            w - 170.0,
            14.0 + 12.0 * ci as f64,
            esc(&c.label),
            esc(&c.variant)
        );
    }
    out.push_str("</svg>");
    out
}

/// A layer × position heatmap as SVG.
/// A layer × position heatmap; rows in `sliding` (sliding-window layers) get an orange mark on
/// the left.
fn heatmap_svg(rows: &[Vec<f32>], title: &str, sliding: &[u32]) -> String {
    let (cw, ch) = (4.0, 6.0);
    let left = if sliding.is_empty() { 0.0 } else { 5.0 };
    let n_cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let max = rows
        .iter()
        .flatten()
        .copied()
        .fold(0f32, f32::max)
        .max(1e-12);
    let mut out = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">",
        esc(title),
        left + n_cols as f64 * cw,
        rows.len() as f64 * ch
    );
    for &ri in sliding.iter().filter(|&&r| (r as usize) < rows.len()) {
        let _ = write!(
            out,
            "<rect class=\"sliding\" x=\"0\" y=\"{}\" width=\"3\" height=\"{ch}\" fill=\"rgb(235,170,60)\"><title>layer {ri}: sliding window</title></rect>",
            ri as f64 * ch
        );
    }
    for (ri, row) in rows.iter().enumerate() {
        for (ci, &v) in row.iter().enumerate() {
            let t = (v / max).clamp(0.0, 1.0);
            let c = |a: f32, b: f32| (a + (b - a) * t) as u8;
            let _ = write!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{cw}\" height=\"{ch}\" fill=\"rgb({},{},{})\"/>",
                left + ci as f64 * cw,
                ri as f64 * ch,
                c(20.0, 255.0),
                c(24.0, 200.0),
                c(60.0, 40.0)
            );
        }
    }
    out.push_str("</svg></figure>");
    out
}

/// A dataset's aggregates: the flip rate per condition as bars with Wilson 95 % whiskers, then
/// the tables overall, by prompt template and by needle (the numbers `kvlab run` prints).
fn dataset_html(out: &mut String, d: &crate::experiment::dataset::DatasetResults) {
    use crate::experiment::dataset::{self, Aggregate, HEADER};
    let a = dataset::aggregates(d);
    let _ = write!(out, "<h2>Dataset</h2><p>{}</p>", esc(&dataset::title(d)));
    let (w, h, slot) = (640.0, 200.0, 640.0 / a.overall.len().max(1) as f64);
    let _ = write!(
        out,
        "<figure><svg viewBox=\"0 0 {w} {}\" width=\"{w}\" role=\"img\" aria-label=\"flip rate per condition\">",
        h + 40.0
    );
    let y = |v: f64| h - v.clamp(0.0, 1.0) * (h - 10.0);
    for (i, g) in a.overall.iter().enumerate() {
        let x = i as f64 * slot;
        if let Some(rate) = g.flip_rate {
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#e15f55\" opacity=\"0.6\"/>",
                x + slot * 0.2,
                y(rate),
                slot * 0.6,
                h - y(rate)
            );
        }
        if let Some(ci) = g.flip_ci {
            let _ = write!(
                out,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#a02c22\" stroke-width=\"2\"/>",
                x + slot / 2.0,
                y(ci.low),
                y(ci.high)
            );
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x + slot / 2.0,
            h + 16.0,
            esc(&g.condition)
        );
    }
    out.push_str("</svg><figcaption>Flip rate per condition (bars) with Wilson 95 % intervals.</figcaption></figure>");
    let table = |out: &mut String, name: &str, rows: &[Aggregate]| {
        let _ = write!(out, "<h3>{}</h3><table><tr>", esc(name));
        for h in HEADER {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out.push_str("</tr>");
        for g in rows {
            out.push_str("<tr>");
            for c in dataset::cells(g) {
                let _ = write!(out, "<td>{}</td>", esc(&c));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
    };
    table(out, "All items", &a.overall);
    for (name, rows) in &a.by_template {
        table(out, &format!("Template {name}"), rows);
    }
    for (name, rows) in &a.by_needle {
        table(out, &format!("Needle {name}"), rows);
    }
}

/// The self-contained HTML report.
pub fn html(s: &Session) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} — kvlab report</title><style>{CSS}</style></head><body>",
        esc(s.name())
    );
    let _ = write!(
        out,
        "<h1>{}</h1><p class=\"sub\">{}</p>",
        esc(s.name()),
        esc(&s.spec.description)
    );
    if !s.notes.is_empty() {
        let _ = write!(
            out,
            "<h2>Notes</h2><p>{}</p>",
            esc(&s.notes).replace('\n', "<br>")
        );
    }
    if let Some(d) = &s.dataset {
        dataset_html(&mut out, d);
    }
    let Some(r) = &s.results else {
        if s.dataset.is_none() {
            out.push_str("<p>This session has no results yet.</p>");
        }
        out.push_str("</body></html>");
        return out;
    };
    let _ = write!(
        out,
        "<h2>Prompt</h2><p class=\"small\">needle at token {} (highlighted)</p>{}",
        r.needle_span,
        prompt_html(r)
    );
    grid_html(&mut out, r);
    if let Some(w) = crate::experiment::window::describe(r) {
        let _ = write!(out, "<p>{}</p>", esc(&w));
    }
    if !r.complete {
        out.push_str("<p class=\"undecided\">The run was stopped early: partial results.</p>");
    }
    scores_html(&mut out, r);
    if let Some(probe) = r.spec.probes.first() {
        let _ = write!(
            out,
            "<h2>Probability of {:?} per step</h2>{}",
            probe,
            probe_svg(r, 0)
        );
    }
    if let Some(d) = &r.kv_delta {
        let _ = write!(
            out,
            "<h2>K/V difference, {} vs {}</h2><p class=\"small\">L2 norm per layer (rows) and position (columns)</p><table class=\"kv\"><tr><td>{}</td><td>{}</td></tr></table>",
            esc(&d.variant_a),
            esc(&d.variant_b),
            heatmap_svg(&d.k_l2, "K", &r.model_info.sliding_layers),
            heatmap_svg(&d.v_l2, "V", &r.model_info.sliding_layers)
        );
        if let Some(w) = r.model_info.sliding_window {
            let _ = write!(
                out,
                "<p class=\"small\">Rows marked orange are sliding-window layers: they attend to the last {w} tokens only.</p>"
            );
        }
    }
    super::attention_report::html(&mut out, r);
    model_html(&mut out, s, r);
    out.push_str("</body></html>");
    out
}

/// The outcome grid: baselines, then each row's cells with verdict, scores and text.
fn grid_html(out: &mut String, r: &RunResults) {
    out.push_str("<h2>Outcome grid</h2><table id=\"grid\"><tr><th>condition</th>");
    for v in &r.variants {
        let _ = write!(out, "<th>{}</th>", esc(&v.name));
    }
    out.push_str("</tr><tr><th>baseline</th>");
    for v in &r.variants {
        let _ = write!(out, "<td>{}</td>", generation_html(&v.baseline, None));
    }
    out.push_str("</tr>");
    for row in grid::rows(r) {
        let _ = write!(out, "<tr><th>{}</th>", esc(&row.label));
        for cell in &row.cells {
            match cell {
                Some(c) => {
                    let _ = write!(
                        out,
                        "<td><div class=\"{}\">{}</div><div class=\"small\">{}</div>{}</td>",
                        verdict_class(c.verdict.as_ref()),
                        esc(&verdict_text(c.verdict.as_ref(), "")),
                        esc(&grid::score_line(r, c)),
                        generation_html(&c.generation, c.first_divergence)
                    );
                }
                None => out.push_str("<td>—</td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// The score table: what each verdict compares, per condition, and the baseline-text scores.
fn scores_html(out: &mut String, r: &RunResults) {
    out.push_str("<h2>Scores</h2><table id=\"scores\"><tr><th>condition</th><th>prompt</th><th>verdict</th><th>preference</th>");
    for v in &r.variants {
        let _ = write!(out, "<th>log P({} answers)</th>", esc(&v.name));
    }
    for v in &r.variants {
        let _ = write!(
            out,
            "<th>{} baseline text, mean lp/token</th>",
            esc(&v.name)
        );
    }
    out.push_str("</tr>");
    for c in &r.conditions {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td>",
            esc(&c.label),
            esc(&c.variant),
            verdict_class(c.verdict.as_ref()),
            esc(&verdict_text(c.verdict.as_ref(), "—")),
            c.preference.map_or("—".into(), |p| format!("{p:+.3}"))
        );
        for v in &r.variants {
            let _ = write!(
                out,
                "<td>{}</td>",
                grid::answer_score(c, &v.name).map_or("—".into(), |s| format!("{s:.3}"))
            );
        }
        for v in &r.variants {
            let _ = write!(
                out,
                "<td>{}</td>",
                c.score_of(&v.name)
                    .map_or("—".into(), |s| format!("{:.3}", s.mean))
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    let _ = write!(
        out,
        "<p class=\"small\">{} The baseline columns score each variant's unedited greedy text \
         under the edited cache, per token: they are not the answers.</p>",
        esc(grid::PREFERENCE_HELP)
    );
    let noise = crate::experiment::samples::noise_summaries(r);
    if !noise.is_empty() {
        out.push_str("<h3>Noise draws</h3><ul id=\"noise\">");
        for n in noise {
            let _ = write!(out, "<li>{}</li>", esc(&n.to_string()));
        }
        out.push_str(
            "</ul><p class=\"small\">Noise conditions that differ only in their seed, taken \
             together: one draw is an anecdote.</p>",
        );
    }
}

/// The model, the settings and the versions the results came from.
fn model_html(out: &mut String, s: &Session, r: &RunResults) {
    let info = &r.model_info;
    let _ = write!(
        out,
        "<h2>Model and settings</h2><table><tr><th>model</th><td>{} ({} bytes, sha256 of head/tail {})</td></tr>\
         <tr><th>architecture</th><td>{}, {} layers, {}</td></tr><tr><th>generation</th><td>{} tokens, {:?}</td></tr>\
         <tr><th>threads</th><td>{}{}</td></tr><tr><th>kvlab</th><td>{} (llama-cpp-2 {})</td></tr><tr><th>saved</th><td>{}</td></tr></table>",
        esc(&r.model.file_name),
        r.model.file_size,
        esc(&r.model.sha256_head_tail),
        esc(&info.architecture),
        info.n_layer,
        esc(&info.quantization),
        r.spec.generation.max_tokens,
        r.spec.generation.sampling,
        r.settings.threads,
        if r.settings.attention {
            ", attention captured (flash attention off)"
        } else {
            ""
        },
        esc(&r.kvlab_version),
        esc(&r.llama_cpp_2_version),
        esc(&s.modified)
    );
}

/// Markdown: the grid as a table, plus notes.
pub fn markdown(s: &Session) -> String {
    let mut out = format!("# {}\n\n{}\n\n", s.name(), s.spec.description);
    if !s.notes.is_empty() {
        let _ = write!(out, "## Notes\n\n{}\n\n", s.notes);
    }
    if let Some(d) = &s.dataset {
        out.push_str(&crate::experiment::dataset::to_markdown(d));
        out.push('\n');
    }
    match &s.results {
        Some(r) => out.push_str(&grid::to_markdown(r)),
        None if s.dataset.is_some() => {}
        None => out.push_str("No results yet.\n"),
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV: one row per generated step of every baseline and condition, with the chosen token's
/// log-prob, the top-1/top-2 gap and each probe's probability.
pub fn csv(s: &Session) -> String {
    let Some(r) = &s.results else {
        return String::new();
    };
    let mut out = String::from("row,variant,step,token_id,token,logprob,gap");
    for p in &r.spec.probes {
        let _ = write!(out, ",{}", csv_field(&format!("p({p})")));
    }
    out.push('\n');
    let mut emit = |row: &str, variant: &str, g: &crate::experiment::results::Generation| {
        for (i, st) in g.steps.iter().enumerate() {
            let _ = write!(
                out,
                "{},{},{i},{},{},{},{}",
                csv_field(row),
                csv_field(variant),
                st.token.id,
                csv_field(&st.token.piece),
                st.token.logprob,
                st.gap
            );
            for lp in &st.probes {
                let _ = write!(out, ",{}", lp.exp());
            }
            out.push('\n');
        }
    };
    for v in &r.variants {
        emit("baseline", &v.name, &v.baseline);
    }
    for c in &r.conditions {
        emit(&c.label, &c.variant, &c.generation);
    }
    out
}

/// A one-line summary for terminals.
pub fn summary(s: &Session) -> String {
    match &s.results {
        Some(r) => format!(
            "{}: {} conditions on {}, needle at {}: {}",
            s.name(),
            r.conditions.len(),
            r.model.file_name,
            r.needle_span,
            preview(
                &r.conditions
                    .iter()
                    .filter_map(|c| c
                        .verdict
                        .as_ref()
                        .map(|v| format!("{} ({}) {v}", c.label, c.variant)))
                    .collect::<Vec<_>>()
                    .join("; "),
                200
            )
        ),
        None => format!("{}: no results", s.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }

    #[test]
    fn html_escapes_user_text() {
        let mut s = Session::new(crate::experiment::ExperimentSpec::seed());
        s.notes = "<script>alert(1)</script>".into();
        let h = html(&s);
        assert!(!h.contains("<script>"));
        assert!(h.contains("&lt;script&gt;"));
        // Self-contained: nothing is loaded from anywhere.
        assert!(!h.contains("src=") && !h.contains("href="));
    }
}
