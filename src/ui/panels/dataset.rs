//! The Dataset tab: a dataset run's aggregates (the same numbers `kvlab run` prints), drawn as
//! bars with their 95 % intervals, a dot per item, and the tables overall, by prompt template
//! and by needle.

use egui::{Color32, RichText, Ui};
use egui_plot::{Bar, BarChart, Legend, Line, Plot, PlotPoints, Points};

use super::{WARN, hint};
use crate::experiment::dataset::{self, Aggregate, Aggregates, DatasetResults, HEADER, ItemRow};
use crate::ui::document::Document;

/// What the Dataset tab shows when there is nothing to show.
pub const NO_DATASET_TEXT: &str = "No dataset results. A dataset experiment (a needle table with \
     prompt templates, e.g. assets/experiments/cities.json) runs many items at once: open it from \
     a session (kvlab run cities.json --model M --session out.kvlab) or run it here with Run.";

/// The Dataset tab, with its aggregates computed once per dataset (the bootstrap is not free).
#[derive(Debug, Default)]
pub struct DatasetTab {
    cache: Option<(u64, Aggregates, Vec<ItemRow>)>,
    /// The item whose grid is shown (picked from the list or by clicking its dot).
    selected: Option<usize>,
}

impl DatasetTab {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, doc: &Document) {
        let Some(d) = &doc.dataset else {
            hint(ui, NO_DATASET_TEXT);
            return;
        };
        if !doc.dataset_is_current() {
            ui.label(RichText::new(super::STALE_TEXT).color(WARN));
        }
        if self
            .cache
            .as_ref()
            .is_none_or(|(rev, ..)| *rev != doc.revision)
        {
            self.cache = Some((doc.revision, dataset::aggregates(d), d.rows()));
        }
        let Some((_, a, rows)) = &self.cache else {
            return;
        };
        ui.label(RichText::new(dataset::title(d)).strong());
        let selected = &mut self.selected;
        ui.add_enabled_ui(doc.dataset_is_current(), |ui| {
            if let Some(item) = charts(ui, a, rows) {
                *selected = Some(item);
            }
            item_detail(ui, d, selected);
            table(ui, "overall", &a.overall);
            for (title, groups) in [
                ("By prompt template", &a.by_template),
                ("By needle", &a.by_needle),
            ] {
                egui::CollapsingHeader::new(title).show(ui, |ui| {
                    for (name, aggs) in groups {
                        table(ui, name, aggs);
                    }
                });
            }
            ui.label(RichText::new(reading(d)).small().weak());
        });
    }
}

/// How to read the numbers.
fn reading(d: &DatasetResults) -> String {
    let (cells, runs, baselines) = d.waves.iter().fold((0, 0, 0), |(c, r, b), w| {
        let variants = w.results.variants.len();
        let sequences = w.results.settings.n_seq as usize;
        (
            c + w.results.conditions.len(),
            r + sequences.saturating_sub(variants),
            b + variants,
        )
    });
    format!(
        "Each item is one prompt template with one pair of needles; a flip means the edited cache \
         prefers the partner's expected answers. Flip rates carry Wilson 95 % intervals; Δpref is the \
         change of preference against the same item's none row, with a bootstrap 95 % interval over \
         items (fixed seed). {} wave(s): {cells} cells in {runs} condition runs (cells that start \
         from the same cache run once) and {baselines} baselines, {:.0} s.",
        d.waves.len(),
        d.seconds
    )
}

/// Flip rate and Δpref per condition: bars, their intervals as whiskers, a dot per item; returns
/// the item whose dot was clicked.
fn charts(ui: &mut Ui, a: &Aggregates, rows: &[ItemRow]) -> Option<usize> {
    let labels: Vec<String> = a.overall.iter().map(|g| g.condition.clone()).collect();
    let x_label = move |x: f64| -> String {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let height = 220.0;
    let mut clicked = None;
    ui.columns(2, |cols| {
        let flips: Vec<Estimate> = a
            .overall
            .iter()
            .map(|g| (g.flip_rate, g.flip_ci.map(|c| (c.low, c.high))))
            .collect();
        Plot::new("dataset-flips")
            .height(height)
            .legend(Legend::default())
            .x_axis_formatter({
                let f = x_label.clone();
                move |m, _| f(m.value)
            })
            .y_axis_label("flip rate")
            .include_y(0.0)
            .include_y(1.0)
            .show(&mut cols[0], |p| {
                bars_with_ci(
                    p,
                    "flip rate, Wilson 95 % CI",
                    &flips,
                    Color32::from_rgb(225, 95, 85),
                );
            });
        let deltas: Vec<Estimate> = a
            .overall
            .iter()
            .map(|g| (g.mean_delta, g.delta_ci.map(|c| (c.low, c.high))))
            .collect();
        let shown = Plot::new("dataset-deltas")
            .height(height)
            .legend(Legend::default())
            .x_axis_formatter(move |m, _| x_label(m.value))
            .y_axis_label("Δ preference vs none")
            .show(&mut cols[1], |p| {
                bars_with_ci(
                    p,
                    "mean Δpref, bootstrap 95 % CI",
                    &deltas,
                    Color32::from_rgb(90, 140, 220),
                );
                let dots: Vec<[f64; 2]> = rows
                    .iter()
                    .filter_map(|r| Some([r.condition as f64 + jitter(r.item), r.delta?]))
                    .collect();
                p.points(Points::new("items", PlotPoints::from(dots)).radius(1.5));
                p.pointer_coordinate()
            });
        // A click picks the nearest item's dot (within a few points on screen).
        if shown.response.clicked()
            && let Some(at) = shown.inner
        {
            let to_screen = shown.transform;
            let click = to_screen.position_from_point(&at);
            clicked = nearest_dot(rows, |p| to_screen.position_from_point(&p), click);
        }
    });
    clicked
}

/// The item list and the chosen item's grid: each condition's verdict, preference and text.
fn item_detail(ui: &mut Ui, d: &DatasetResults, selected: &mut Option<usize>) {
    let name = |i: usize| -> String {
        let Some(item) = d.items.get(i) else {
            return String::new();
        };
        let template = d
            .spec
            .dataset
            .as_ref()
            .and_then(|s| s.templates.get(item.template))
            .map_or(String::new(), |t| t.name.clone());
        format!("item {i}: {template}, {} vs {}", item.needle, item.partner)
    };
    ui.horizontal(|ui| {
        egui::ComboBox::new("dataset-item", "item (or click a dot)")
            .selected_text(selected.map_or("none shown".to_string(), name))
            .show_ui(ui, |ui| {
                for item in &d.items {
                    if d.item_conditions(item.index).is_some() {
                        ui.selectable_value(selected, Some(item.index), name(item.index));
                    }
                }
            });
        if selected.is_some() && ui.button("Hide").clicked() {
            *selected = None;
        }
    });
    let Some(cells) = selected.and_then(|i| d.item_conditions(i)) else {
        return;
    };
    egui::Grid::new("dataset-item-grid")
        .striped(true)
        .show(ui, |ui| {
            for c in cells {
                ui.label(RichText::new(&c.label).strong());
                match &c.verdict {
                    Some(v) => {
                        ui.label(RichText::new(v.to_string()).color(super::verdict_color(v)))
                    }
                    None => ui.label("not scored"),
                };
                ui.label(RichText::new(super::ui_preview(&c.generation.text)).monospace());
                ui.end_row();
            }
        });
}

/// A condition's value and its 95 % interval, when there are items to compute them.
type Estimate = (Option<f64>, Option<(f64, f64)>);

/// The item whose dot is nearest to a click at screen position `click`, if one lies within a
/// few points of it; `to_screen` maps plot coordinates to the screen.
fn nearest_dot(
    rows: &[ItemRow],
    to_screen: impl Fn(egui_plot::PlotPoint) -> egui::Pos2,
    click: egui::Pos2,
) -> Option<usize> {
    rows.iter()
        .filter_map(|r| {
            let dot = egui_plot::PlotPoint::new(r.condition as f64 + jitter(r.item), r.delta?);
            let d = to_screen(dot).distance(click);
            (d < DOT_REACH).then_some((d, r.item))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, item)| item)
}

/// How far from a dot (in points) a click still picks it.
const DOT_REACH: f32 = 8.0;

/// A small, fixed horizontal offset per item so that its dots do not hide each other.
fn jitter(item: usize) -> f64 {
    ((item * 37) % 21) as f64 / 21.0 * 0.5 - 0.25
}

/// One bar per condition (at x = its index) and its interval as a vertical line.
fn bars_with_ci(p: &mut egui_plot::PlotUi<'_>, name: &str, values: &[Estimate], color: Color32) {
    let bars: Vec<Bar> = values
        .iter()
        .enumerate()
        .filter_map(|(i, (v, _))| Some(Bar::new(i as f64, (*v)?).width(0.6)))
        .collect();
    p.bar_chart(BarChart::new(name, bars).color(color.gamma_multiply(0.6)));
    for (i, (_, ci)) in values.iter().enumerate() {
        if let Some((lo, hi)) = ci {
            let x = i as f64;
            p.line(
                Line::new("", PlotPoints::from(vec![[x, *lo], [x, *hi]]))
                    .color(color)
                    .width(2.0),
            );
        }
    }
}

/// One aggregate table.
fn table(ui: &mut Ui, name: &str, aggs: &[Aggregate]) {
    ui.label(RichText::new(name).strong());
    egui::Grid::new(("dataset-table", name))
        .striped(true)
        .show(ui, |ui| {
            for h in HEADER {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for a in aggs {
                for c in dataset::cells(a) {
                    ui.label(c);
                }
                ui.end_row();
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(item: usize, condition: usize, delta: Option<f64>) -> ItemRow {
        ItemRow {
            item,
            template: 0,
            needle: "SF".into(),
            partner: "NY".into(),
            condition,
            label: String::new(),
            preference: None,
            verdict: None,
            delta,
        }
    }

    /// A click picks the dot under it: the nearest within reach, never an unscored item, and
    /// nothing when it lands between dots.
    #[test]
    fn a_click_picks_the_nearest_dot_within_reach() {
        // 100 screen points per plot unit, y pointing down as on screen.
        let to_screen =
            |p: egui_plot::PlotPoint| egui::pos2(100.0 * p.x as f32, -100.0 * p.y as f32);
        let rows = [
            row(0, 0, Some(-1.0)),
            row(1, 0, Some(-1.03)),
            row(2, 1, Some(2.0)),
            row(3, 1, None),
        ];
        let at = |r: &ItemRow| {
            to_screen(egui_plot::PlotPoint::new(
                r.condition as f64 + jitter(r.item),
                r.delta.unwrap_or(0.0),
            ))
        };
        // On a dot: that item, even with a neighbour 3 points away.
        assert_eq!(nearest_dot(&rows, to_screen, at(&rows[0])), Some(0));
        assert_eq!(nearest_dot(&rows, to_screen, at(&rows[1])), Some(1));
        assert_eq!(
            nearest_dot(&rows, to_screen, at(&rows[2]) + egui::vec2(5.0, 0.0)),
            Some(2)
        );
        // Where the unscored item would be, and far from everything: nothing.
        assert_eq!(nearest_dot(&rows, to_screen, at(&rows[3])), None);
        assert_eq!(
            nearest_dot(
                &rows,
                to_screen,
                at(&rows[2]) + egui::vec2(0.0, DOT_REACH + 1.0)
            ),
            None
        );
    }
}
