//! The document the window edits: what a `.kvlab` session file holds, and nothing else.
//!
//! Opening a file, restoring the autosave and "Seed experiment" all replace the document
//! through [`Document::from_session`] or [`Document::seed`], and saving and autosaving go
//! through [`Document::to_session`]: one mapping each way. Three hand-written copies of
//! "session → app" used to drift apart (the autosave forgot the sweep; the seed reset kept a
//! stale one), which is why there is exactly one now.

use std::path::PathBuf;

use crate::experiment::dataset::DatasetResults;
use crate::experiment::sweep::SweepResults;
use crate::experiment::{ExperimentSpec, RunResults};
use crate::session::{ModelRef, Session};

/// The experiment being edited, with its results and where it is saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The experiment.
    pub spec: ExperimentSpec,
    /// The user's notes, saved with the session.
    pub notes: String,
    /// The last run's results (possibly partial: see `RunResults::complete`).
    pub results: Option<RunResults>,
    /// The last sweep's results.
    pub sweep: Option<SweepResults>,
    /// The last dataset run's results (every finished wave's grid).
    pub dataset: Option<DatasetResults>,
    /// The model the results came from (may differ from the loaded one).
    pub results_model: Option<ModelRef>,
    /// The session file this document is saved to, once saved or opened.
    pub path: Option<PathBuf>,
    /// When the session was first saved (kept across saves).
    pub created: Option<String>,
    /// Bumped whenever results or the sweep change, so that unsaved changes are noticed
    /// without hashing whole result sets every frame.
    pub revision: u64,
}

impl Document {
    /// The seed experiment, with no results, not saved anywhere.
    pub fn seed() -> Document {
        Document::new(ExperimentSpec::seed())
    }

    /// A new, unsaved document for an experiment.
    pub fn new(spec: ExperimentSpec) -> Document {
        Document {
            spec,
            notes: String::new(),
            results: None,
            sweep: None,
            dataset: None,
            results_model: None,
            path: None,
            created: None,
            revision: 0,
        }
    }

    /// The document a session holds; `path` is the file it is saved to (`None` for an
    /// autosave that belonged to no file).
    pub fn from_session(s: Session, path: Option<PathBuf>) -> Document {
        Document {
            spec: s.spec,
            notes: s.notes,
            results: s.results,
            sweep: s.sweep,
            dataset: s.dataset,
            results_model: s.model,
            path,
            created: (!s.created.is_empty()).then_some(s.created),
            revision: 0,
        }
    }

    /// The session as it would be saved. `loaded` names the loaded model, recorded when the
    /// document has no results of its own to tie it to a model.
    pub fn to_session(&self, loaded: Option<ModelRef>) -> Session {
        let mut s = Session::new(self.spec.clone());
        s.notes = self.notes.clone();
        s.results = self.results.clone();
        s.sweep = self.sweep.clone();
        s.dataset = self.dataset.clone();
        s.model = self.results_model.clone().or(loaded);
        if let Some(c) = &self.created {
            s.created = c.clone();
        }
        s
    }

    /// Whether the results were measured on the experiment as it is now. Anything that changes
    /// what a run does (prompt, variants, needle, conditions, generation settings, probes)
    /// makes them stale; renaming the experiment does not.
    pub fn results_are_current(&self) -> bool {
        self.results
            .as_ref()
            .is_none_or(|r| same_experiment(&r.spec, &self.spec))
    }

    /// Whether the sweep was measured on the experiment as it is now (same rule as results).
    /// A sweep from a file older than session format 2 did not record its experiment and never
    /// counts as current.
    pub fn sweep_is_current(&self) -> bool {
        self.sweep.as_ref().is_none_or(|s| {
            s.spec
                .as_ref()
                .is_some_and(|spec| same_experiment(spec, &self.spec))
        })
    }

    /// Whether the dataset results were measured on the experiment as it is now (same rule as
    /// results).
    pub fn dataset_is_current(&self) -> bool {
        self.dataset
            .as_ref()
            .is_none_or(|d| same_experiment(&d.spec, &self.spec))
    }

    /// Marks results or the sweep as changed.
    pub fn touch(&mut self) {
        self.revision += 1;
    }

    /// A hash of what the file would hold (spec, notes, results revision): equal hashes mean
    /// nothing to save.
    pub fn content_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&self.spec)
            .unwrap_or_default()
            .hash(&mut h);
        self.notes.hash(&mut h);
        self.revision.hash(&mut h);
        h.finish()
    }

    /// The file name shown in the title: the experiment's name.
    pub fn title(&self) -> &str {
        &self.spec.name
    }
}

/// Whether two specs describe the same experiment (names aside).
fn same_experiment(a: &ExperimentSpec, b: &ExperimentSpec) -> bool {
    if a.name == b.name {
        return a == b;
    }
    let mut a = a.clone();
    a.name.clone_from(&b.name);
    &a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::sweep::{SweepKind, SweepPoint, SweepSpec};
    use crate::experiment::{LayerSet, Op};

    fn a_sweep() -> SweepResults {
        let point = |label: &str| SweepPoint {
            label: label.into(),
            index: 0,
            layer: None,
            preference: Some(1.5),
            scores: vec![-1.0, -2.5],
            first_step_probes: vec![],
        };
        SweepResults {
            sweep: SweepSpec {
                kind: SweepKind::Layer,
                variant: "SF".into(),
                op: Op::Zero,
                layers: LayerSet::All,
                part: crate::experiment::spec::KvPart::Both,
            },
            measure: "expected answers".into(),
            reference: point("no intervention"),
            points: vec![point("layer 0")],
            complete: true,
            spec: None,
            tokens: Vec::new(),
            sliding_layers: Vec::new(),
            sliding_window: None,
            shared_cache: false,
        }
    }

    /// Everything a session holds survives session → document → session, the sweep included
    /// (the autosave used to drop it).
    #[test]
    fn a_session_round_trips_through_the_document() {
        let mut s = Session::new(ExperimentSpec::seed());
        s.notes = "zero keeps it".into();
        s.sweep = Some(a_sweep());
        s.dataset = Some(DatasetResults {
            spec: ExperimentSpec::seed(),
            items: Vec::new(),
            max_sequences: 64,
            waves: Vec::new(),
            complete: false,
            seconds: 1.5,
        });
        s.created = "2026-01-02T03:04:05Z".into();
        let doc = Document::from_session(s.clone(), Some("/x/a.kvlab".into()));
        assert_eq!(doc.sweep, s.sweep);
        assert_eq!(
            doc.dataset, s.dataset,
            "a dataset survives the app (it used to be dropped)"
        );
        assert_eq!(doc.path, Some(PathBuf::from("/x/a.kvlab")));
        let back = doc.to_session(None);
        assert_eq!(back.spec, s.spec);
        assert_eq!(back.notes, s.notes);
        assert_eq!(back.sweep, s.sweep);
        assert_eq!(back.dataset, s.dataset);
        assert_eq!(back.results, s.results);
        assert_eq!(back.created, s.created, "the first save's date is kept");
    }

    #[test]
    fn the_seed_document_has_no_results_and_no_file() {
        let d = Document::seed();
        assert!(d.results.is_none() && d.sweep.is_none() && d.results_model.is_none());
        assert!(d.path.is_none());
        assert_eq!(d.spec, ExperimentSpec::seed());
    }

    #[test]
    fn results_go_stale_when_the_experiment_changes_but_not_when_renamed() {
        let mut d = Document::seed();
        assert!(d.results_are_current(), "no results: nothing stale");
        // A real run's results (a version-0 file, migrated as the app would read it).
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/results-v0.json"
        ));
        let results = Session::from_json(text, "results-v0.json")
            .unwrap()
            .results
            .unwrap();
        d.spec = results.spec.clone();
        d.results = Some(results);
        assert!(d.results_are_current());
        d.spec.name = "renamed".into();
        assert!(d.results_are_current(), "a new name is the same experiment");
        d.spec.conditions.pop();
        assert!(!d.results_are_current(), "one condition fewer");
        let mut d2 = d.clone();
        d2.spec = d2.results.as_ref().unwrap().spec.clone();
        d2.spec.needle_span = Some(crate::experiment::Span {
            start: 99,
            end: 100,
        });
        assert!(!d2.results_are_current(), "another needle");
    }

    #[test]
    fn edits_and_new_results_change_the_content_hash() {
        let mut d = Document::seed();
        let h0 = d.content_hash();
        d.notes.push('x');
        let h1 = d.content_hash();
        assert_ne!(h0, h1);
        d.touch();
        assert_ne!(h1, d.content_hash());
        d.spec.generation.max_tokens += 1;
        let h2 = d.content_hash();
        assert_eq!(h2, d.content_hash(), "stable while nothing changes");
    }
}
