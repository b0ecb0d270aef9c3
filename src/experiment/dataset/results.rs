//! What a dataset run produces: every finished wave's full grid results (so a session keeps
//! everything and `verify` can re-run each wave), the items they hold, and one row per
//! item × condition, derived from the grids on demand (never stored twice, so never out of
//! step).

use serde::{Deserialize, Serialize};

use super::expand::DatasetItem;
use crate::experiment::outcome::Verdict;
use crate::experiment::results::RunResults;
use crate::experiment::spec::{ExperimentSpec, Op};

/// One finished wave: the items it held and its grid's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetWave {
    /// The prompt template's index.
    pub template: usize,
    /// The items, by index; item `items[k / n]` owns condition `k` (`n` condition templates).
    pub items: Vec<usize>,
    /// The grid's results (its spec is the wave's grid).
    pub results: RunResults,
}

/// Everything a dataset run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetResults {
    /// The experiment as run (with its dataset).
    pub spec: ExperimentSpec,
    /// Every planned item, finished or not.
    pub items: Vec<DatasetItem>,
    /// The most sequences a wave held (re-expanding with it gives the same waves).
    pub max_sequences: usize,
    /// The finished waves, in run order.
    pub waves: Vec<DatasetWave>,
    /// False when the run was stopped: only the finished waves' items are kept.
    pub complete: bool,
    /// Wall-clock seconds of the whole run (excluded from reproducibility comparisons).
    #[serde(with = "crate::experiment::floats")]
    pub seconds: f64,
}

/// One item under one condition: the unit the statistics count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRow {
    /// The item's index.
    pub item: usize,
    /// The prompt template's index.
    pub template: usize,
    /// The needle whose cache was edited.
    pub needle: String,
    /// The needle it was judged against.
    pub partner: String,
    /// The condition template's index.
    pub condition: usize,
    /// Its label.
    pub label: String,
    /// Own answers' score minus the partner's (`None`: not scored).
    #[serde(with = "crate::experiment::floats")]
    pub preference: Option<f64>,
    /// The verdict.
    pub verdict: Option<Verdict>,
    /// The preference minus the same item's preference under `none` (`None` without a `none`
    /// condition or a score).
    #[serde(with = "crate::experiment::floats")]
    pub delta: Option<f64>,
}

impl ItemRow {
    /// Whether the verdict flips to the partner.
    pub fn flips(&self) -> bool {
        matches!(self.verdict, Some(Verdict::FlipsTo { .. }))
    }
}

impl DatasetResults {
    /// The number of condition templates.
    fn n_conditions(&self) -> usize {
        self.spec.dataset.as_ref().map_or(0, |d| d.conditions.len())
    }

    /// The finished items (in run order).
    pub fn finished_items(&self) -> usize {
        self.waves.iter().map(|w| w.items.len()).sum()
    }

    /// A finished item's grid cells, one per condition template in order (the texts and
    /// verdicts behind its rows); `None` for an item not finished.
    pub fn item_conditions(
        &self,
        item: usize,
    ) -> Option<&[crate::experiment::results::ConditionResult]> {
        let n = self.n_conditions().max(1);
        self.waves.iter().find_map(|w| {
            let k = w.items.iter().position(|&i| i == item)?;
            w.results.conditions.get(k * n..(k + 1) * n)
        })
    }

    /// A finished item's cells as the item alone makes them, whatever wave held it: keyword
    /// counts of its needle and partner only (a cell counts the keywords of every variant of its
    /// wave, and which needles a wave holds depends on how items were packed). What `kvlab
    /// verify` compares when a re-run packs items into other waves.
    pub fn item_cells(
        &self,
        item: usize,
    ) -> Option<Vec<crate::experiment::results::ConditionResult>> {
        let it = self.items.get(item)?;
        let mut cells = self.item_conditions(item)?.to_vec();
        for c in &mut cells {
            c.keywords
                .retain(|k| k.variant == it.needle || k.variant == it.partner);
        }
        Some(cells)
    }

    /// One row per finished item × condition template, item by item.
    pub fn rows(&self) -> Vec<ItemRow> {
        let n = self.n_conditions();
        let none = self
            .spec
            .dataset
            .as_ref()
            .and_then(|d| d.conditions.iter().position(|c| c.op == Op::None));
        let mut rows = Vec::new();
        for w in &self.waves {
            for (k, chunk) in w.results.conditions.chunks(n.max(1)).enumerate() {
                let Some(item) = w.items.get(k).and_then(|&i| self.items.get(i)) else {
                    continue;
                };
                let base = none.and_then(|i| chunk.get(i)).and_then(|c| c.preference);
                rows.extend(chunk.iter().enumerate().map(|(ci, c)| ItemRow {
                    item: item.index,
                    template: item.template,
                    needle: item.needle.clone(),
                    partner: item.partner.clone(),
                    condition: ci,
                    label: c.label.clone(),
                    preference: c.preference,
                    verdict: c.verdict.clone(),
                    delta: c.preference.zip(base).map(|(p, b)| p - b),
                }));
            }
        }
        rows
    }

    /// Checks results read from a file: a dataset spec, items that agree with it, waves whose
    /// grids are valid and hold one condition per item × condition template.
    pub fn validate(&self) -> Result<(), String> {
        let data = self
            .spec
            .dataset
            .as_ref()
            .ok_or("dataset.spec has no dataset")?;
        self.spec
            .validate()
            .map_err(|e| format!("dataset.spec: {e}"))?;
        if self.items != super::items(data) {
            return Err(
                "dataset.items do not match the dataset's needles, pairs and templates".into(),
            );
        }
        let n = data.conditions.len();
        for (i, w) in self.waves.iter().enumerate() {
            w.results
                .validate()
                .map_err(|e| format!("dataset.waves[{i}].{e}"))?;
            if w.results.conditions.len() != w.items.len() * n {
                return Err(format!(
                    "dataset.waves[{i}] has {} conditions for {} items of {n} conditions",
                    w.results.conditions.len(),
                    w.items.len()
                ));
            }
            if let Some(&bad) = w.items.iter().find(|&&it| {
                self.items
                    .get(it)
                    .is_none_or(|item| item.template != w.template)
            }) {
                return Err(format!(
                    "dataset.waves[{i}] names item {bad}, not of its template"
                ));
            }
        }
        Ok(())
    }
}
