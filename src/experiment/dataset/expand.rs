//! A dataset as ordinary grids. Per prompt template, items are packed into waves: one grid
//! whose variants are the needles the wave's items use and whose conditions are, per item and
//! condition template, the op on the item's needle, judged against its partner only. A wave
//! holds at most `max_sequences` sequences (variants + distinct conditions), so it fits one
//! context; every sequence of a wave shares each decode step, and the items of one needle share
//! the sequences of the edits that do not name their partner (none, zero, remove, mean, noise):
//! that is where a dataset's speed comes from. Condition `k` of a wave belongs to item
//! `items[k / n]`, condition template `k % n` (`n` condition templates): the map back from grid
//! cells to items is arithmetic, whichever cells share a sequence.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{DatasetSpec, PARTNER, RANDOM};
use crate::experiment::spec::{
    Condition, ExperimentSpec, MAX_CONDITIONS, Op, PromptSpec, SpecError, Variant,
};

/// One item: a prompt template and an ordered pair of needles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetItem {
    /// Its index in the dataset's item order (template-major, then pairs).
    pub index: usize,
    /// The prompt template's index.
    pub template: usize,
    /// The needle whose cache is edited (its name).
    pub needle: String,
    /// The needle it is judged against (its name).
    pub partner: String,
}

/// One wave: a grid and the items it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Wave {
    /// The prompt template's index.
    pub template: usize,
    /// The items, by index; item `items[k / n]` owns the grid's condition `k`.
    pub items: Vec<usize>,
    /// The grid to run.
    pub spec: ExperimentSpec,
}

/// Every item of the dataset, template-major.
pub fn items(data: &DatasetSpec) -> Vec<DatasetItem> {
    let pairs = data.pair_indices();
    (0..data.templates.len())
        .flat_map(|template| pairs.iter().map(move |&(a, b)| (template, a, b)))
        .enumerate()
        .map(|(index, (template, a, b))| DatasetItem {
            index,
            template,
            needle: data.needles[a].name().to_string(),
            partner: data.needles[b].name().to_string(),
        })
        .collect()
}

/// The needles an item's grid needs besides its own two: every needle for a mean over all,
/// a mean's listed needles, a transplant's named donor.
fn extra_needles(data: &DatasetSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in &data.conditions {
        match &c.op {
            Op::Mean { over } if over.is_empty() => {
                out.extend(data.needles.iter().map(|n| n.name().to_string()))
            }
            Op::Mean { over } => out.extend(over.iter().cloned()),
            Op::Transplant { from } if from == RANDOM => {
                out.extend(data.needles.iter().map(|n| n.name().to_string()))
            }
            Op::Transplant { from } if from != PARTNER => {
                out.insert(from.clone());
            }
            _ => {}
        }
    }
    out
}

/// The donor `{random}` stands for in `item`: one of the needles that are neither its needle nor
/// its partner, drawn from a SplitMix64 seeded by the item's index (validation ensures there is
/// one to draw).
pub fn random_donor(data: &DatasetSpec, item: &DatasetItem) -> String {
    let others: Vec<&str> = data
        .needles
        .iter()
        .map(|n| n.name())
        .filter(|n| *n != item.needle && *n != item.partner)
        .collect();
    let draw = crate::experiment::stats::SplitMix64(item.index as u64).next_u64();
    others
        .get((draw % others.len().max(1) as u64) as usize)
        .map_or_else(|| item.partner.clone(), |n| n.to_string())
}

/// Splits the dataset of `spec` (which must have one) into waves of at most `max_sequences`
/// sequences each, template by template, items in order. Conditions that run as one (the same
/// edit of the same needle for several partners, see [`Condition::runs_as`]) count once: a
/// needle's items share a wave's sequences, so consecutive items of one needle pack densely.
pub fn expand(spec: &ExperimentSpec, max_sequences: usize) -> Result<Vec<Wave>, SpecError> {
    let data = spec
        .dataset
        .as_ref()
        .ok_or_else(|| SpecError::Dataset("the experiment has no dataset".into()))?;
    let extra = extra_needles(data);
    let all = items(data);
    let too_big = |size: usize| {
        SpecError::Dataset(format!(
            "one item needs {size} sequences, more than the {max_sequences} a context runs"
        ))
    };
    let mut waves = Vec::new();
    for template in 0..data.templates.len() {
        let mut wave_items: Vec<&DatasetItem> = Vec::new();
        let mut cells: Vec<Condition> = Vec::new();
        let mut needles = extra.clone();
        // The wave's first conditions: one sequence each.
        let mut runs: Vec<Condition> = Vec::new();
        for item in all.iter().filter(|i| i.template == template) {
            let own = item_conditions(data, item);
            let mut pair = BTreeSet::from([item.needle.clone(), item.partner.clone()]);
            let new_runs = |runs: &[Condition]| {
                let mut added: Vec<&Condition> = Vec::new();
                for c in &own {
                    if !runs
                        .iter()
                        .chain(added.iter().copied())
                        .any(|r| r.runs_as(c))
                    {
                        added.push(c);
                    }
                }
                added.into_iter().cloned().collect::<Vec<_>>()
            };
            let mut added = new_runs(&runs);
            let size = needles.union(&pair).count() + runs.len() + added.len();
            if size > max_sequences || cells.len() + own.len() > MAX_CONDITIONS {
                if wave_items.is_empty() {
                    return Err(too_big(size));
                }
                let done = std::mem::take(&mut cells);
                waves.push(wave(spec, data, template, &wave_items, &needles, done));
                wave_items.clear();
                runs.clear();
                needles = extra.clone();
                added = new_runs(&runs);
                let size = needles.union(&pair).count() + added.len();
                if size > max_sequences {
                    return Err(too_big(size));
                }
            }
            needles.append(&mut pair);
            runs.extend(added);
            cells.extend(own);
            wave_items.push(item);
        }
        if !wave_items.is_empty() {
            waves.push(wave(spec, data, template, &wave_items, &needles, cells));
        }
    }
    Ok(waves)
}

/// The shape of a dataset's largest wave, (variants, sequences), as [`expand`] packs waves of
/// at most `max_sequences` sequences, without expanding it (the app estimates memory every
/// frame). Every template has the same pairs, so the same shape: a wave holds the needles its
/// items use (every needle when a condition needs them all) and one run per distinct cell — a
/// transplant from the partner or a random donor once per item, any other condition once per
/// edited needle. A dataset larger than one wave fills its waves up to `max_sequences`.
pub fn largest_wave(data: &DatasetSpec, max_sequences: usize) -> (usize, usize) {
    let pairs = data.pair_indices();
    let mut needles = extra_needles(data);
    let mut edited = BTreeSet::new();
    for &(a, b) in &pairs {
        needles.insert(data.needles[a].name().to_string());
        needles.insert(data.needles[b].name().to_string());
        edited.insert(a);
    }
    let runs: usize = (data.conditions.iter())
        .map(|c| match &c.op {
            Op::Transplant { from } if from == PARTNER || from == RANDOM => pairs.len(),
            _ => edited.len(),
        })
        .sum();
    let sequences = (needles.len() + runs).min(max_sequences);
    (needles.len().min(sequences), sequences)
}

/// An item's grid cells, one per condition template: the op on the item's needle (a
/// transplant from `{partner}` or `{random}` with its donor named), judged against its partner
/// only.
fn item_conditions(data: &DatasetSpec, item: &DatasetItem) -> Vec<Condition> {
    data.conditions
        .iter()
        .map(|c| {
            let op = match &c.op {
                Op::Transplant { from } if from == PARTNER => Op::Transplant {
                    from: item.partner.clone(),
                },
                Op::Transplant { from } if from == RANDOM => Op::Transplant {
                    from: random_donor(data, item),
                },
                op => op.clone(),
            };
            Condition {
                label: Some(c.row_label()),
                variant: item.needle.clone(),
                op,
                site: c.site.clone(),
                against: vec![item.partner.clone()],
            }
        })
        .collect()
}

/// The grid of one wave (`conditions`: its items' cells, item by item).
fn wave(
    spec: &ExperimentSpec,
    data: &DatasetSpec,
    template: usize,
    items: &[&DatasetItem],
    needles: &BTreeSet<String>,
    conditions: Vec<Condition>,
) -> Wave {
    let variants = data
        .needles
        .iter()
        .filter(|n| needles.contains(n.name()))
        .map(|n| Variant {
            name: n.name().to_string(),
            needle: n.needle.clone(),
            expected: data.expected.iter().map(|t| n.fill(t)).collect(),
            keywords: data.keywords.iter().map(|t| n.fill(t)).collect(),
        })
        .collect();
    let t = &data.templates[template];
    Wave {
        template,
        items: items.iter().map(|i| i.index).collect(),
        spec: ExperimentSpec {
            name: format!("{} · {}", spec.name, t.name),
            description: spec.description.clone(),
            prompt: PromptSpec {
                mode: spec.prompt.mode,
                turns: t.turns.clone(),
            },
            variants,
            needle_span: spec.needle_span,
            conditions,
            generation: spec.generation.clone(),
            probes: spec.probes.clone(),
            top_k: spec.top_k,
            score_baselines: false,
            dataset: None,
            cache: spec.cache,
        },
    }
}
