//! *Where* an intervention applies: token positions ([`Span`]), layers ([`LayerSet`]) and the
//! half of the cache ([`KvPart`]), together a [`Site`].

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::SpecError;
use crate::engine::KvPart;

/// A half-open range of token positions `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// First position.
    pub start: usize,
    /// One past the last position.
    pub end: usize,
}

impl Span {
    /// The positions in the span.
    pub fn positions(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
    /// Number of positions.
    pub fn len(self) -> usize {
        self.end.saturating_sub(self.start)
    }
    /// Whether the span holds no position.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len() == 1 {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}..{}", self.start, self.end)
        }
    }
}

/// Which layers an intervention touches: all, or a set. Written as `"all"`, `"0-15"`,
/// `"0,3,7-9"` or a JSON list of numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LayerSet {
    /// Every layer.
    #[default]
    All,
    /// These layers (sorted, no repeats).
    Some(BTreeSet<u32>),
}

impl LayerSet {
    /// Parses `"all"`, `"3"`, `"0-15"`, `"0,3,7-9"`.
    pub fn parse(text: &str) -> Result<LayerSet, SpecError> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("all") || t.is_empty() {
            return Ok(LayerSet::All);
        }
        let bad = || SpecError::Layers(text.to_string());
        let mut set = BTreeSet::new();
        for part in t.split(',') {
            let part = part.trim();
            if let Some((a, b)) = part.split_once('-') {
                let a: u32 = a.trim().parse().map_err(|_| bad())?;
                let b: u32 = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 100_000 {
                    return Err(bad());
                }
                set.extend(a..=b);
            } else {
                set.insert(part.parse().map_err(|_| bad())?);
            }
        }
        Ok(LayerSet::Some(set))
    }

    /// The layers, given how many the model has.
    pub fn resolve(&self, n_layer: u32) -> Vec<u32> {
        match self {
            LayerSet::All => (0..n_layer).collect(),
            LayerSet::Some(s) => s.iter().copied().collect(),
        }
    }

    /// Whether every layer of a model with `n_layer` layers is selected.
    pub fn covers_all(&self, n_layer: u32) -> bool {
        match self {
            LayerSet::All => true,
            LayerSet::Some(s) => (0..n_layer).all(|l| s.contains(&l)),
        }
    }

    /// The largest layer named, if any.
    pub fn max(&self) -> Option<u32> {
        match self {
            LayerSet::All => None,
            LayerSet::Some(s) => s.iter().next_back().copied(),
        }
    }
}

impl fmt::Display for LayerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let LayerSet::Some(set) = self else {
            return write!(f, "all");
        };
        let v: Vec<u32> = set.iter().copied().collect();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            parts.push(if i == j {
                v[i].to_string()
            } else {
                format!("{}-{}", v[i], v[j])
            });
            i = j + 1;
        }
        write!(f, "{}", parts.join(","))
    }
}

impl Serialize for LayerSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for LayerSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<u32>),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => LayerSet::parse(&t).map_err(serde::de::Error::custom),
            Raw::List(l) => Ok(LayerSet::Some(l.into_iter().collect())),
        }
    }
}

impl LayerSet {
    /// Whether this is [`LayerSet::All`] (the default, left out of files).
    pub fn is_all(&self) -> bool {
        *self == LayerSet::All
    }
}

fn both() -> KvPart {
    KvPart::Both
}

fn is_both(part: &KvPart) -> bool {
    *part == KvPart::Both
}

/// Where an op applies: positions, layers, K/V.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Positions touched (default: the needle span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
    /// Layers touched (default all).
    #[serde(default, skip_serializing_if = "LayerSet::is_all")]
    pub layers: LayerSet,
    /// K, V or both (default both).
    #[serde(default = "both", skip_serializing_if = "is_both")]
    pub part: KvPart,
    /// KV heads touched (default all): a K or V row is `n_head_kv` heads of `head_dim`
    /// values, and per-head surgery edits only these heads' values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<BTreeSet<u32>>,
}

impl Default for Site {
    /// The needle, every layer, K and V.
    fn default() -> Site {
        Site {
            span: None,
            layers: LayerSet::All,
            part: KvPart::Both,
            heads: None,
        }
    }
}

impl Site {
    /// Whether this is the default site (left out of files).
    pub fn is_default(&self) -> bool {
        *self == Site::default()
    }

    /// The needle in some layers and part.
    pub fn layers(layers: LayerSet, part: KvPart) -> Site {
        Site {
            layers,
            part,
            ..Site::default()
        }
    }

    /// One prompt position (instead of the needle), in every layer, K and V: what a position
    /// sweep item edits, as a grid condition.
    pub fn position(pos: usize) -> Site {
        Site {
            span: Some(Span {
                start: pos,
                end: pos + 1,
            }),
            ..Site::default()
        }
    }

    /// What a row label adds to the op's name: " [layers 0-4] [K] @6..9"; empty by default.
    pub fn suffix(&self) -> String {
        let mut s = String::new();
        if !self.layers.is_all() {
            s.push_str(&format!(" [layers {}]", self.layers));
        }
        match self.part {
            KvPart::K => s.push_str(" [K]"),
            KvPart::V => s.push_str(" [V]"),
            KvPart::Both => {}
        }
        if let Some(heads) = &self.heads {
            let list: Vec<String> = heads.iter().map(u32::to_string).collect();
            s.push_str(&format!(" [heads {}]", list.join(",")));
        }
        if let Some(span) = self.span {
            s.push_str(&format!(" @{span}"));
        }
        s
    }
}
