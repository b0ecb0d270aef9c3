//! A run's plan: everything the spec leaves implicit, resolved and checked once, before any
//! context is created. Names become indices (variant, donor), default spans become spans,
//! layer sets become layer lists, and every condition gets its sequence. The later steps index
//! into the plan and never look a name up again, so a spec that resolved cannot fail halfway
//! through a run for a reason the spec could have told.

use crate::engine::{KvPart, LabOptions, LoadedModel};
use crate::experiment::needle::check_span_in_cache;
use crate::experiment::spec::{
    Condition, ExperimentSpec, Op, Sampling, Span, SpecError, shared_runs,
};

use super::prompts::{Prepared, PreparedPrompt, prepare_prompts};
use super::{RunError, RunOptions};

/// The cache's shape as a plan needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    /// Layers.
    pub n_layer: u32,
    /// KV heads per layer (a K or V row holds this many heads).
    pub n_head_kv: u32,
}

/// What a condition does to its variant's cache, with names resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Edit {
    /// Nothing: the copy path alone.
    None,
    /// The span's rows set to zero.
    Zero,
    /// The span's rows copied from variant `donor`'s cache.
    Transplant {
        /// The donor's variant index.
        donor: usize,
    },
    /// The span's cells taken out of the sequence.
    Remove,
    /// The span's rows replaced by the mean of these variants' rows at the same positions.
    Mean {
        /// The variants averaged, by index.
        over: Vec<usize>,
    },
    /// Gaussian noise of `scale` × each layer's standard deviation added to the span's rows.
    Noise {
        /// σ in units of the layer's standard deviation (over the prompt).
        scale: f32,
        /// The random seed.
        seed: u64,
    },
}

/// One condition, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedCondition {
    /// Its index in the spec's conditions.
    pub index: usize,
    /// The variant whose prompt it starts from.
    pub variant: usize,
    /// What is done to the cache.
    pub edit: Edit,
    /// The positions touched (the condition's own span or the needle).
    pub span: Span,
    /// The layers touched, in increasing order.
    pub layers: Vec<u32>,
    /// K, V or both.
    pub part: KvPart,
    /// The KV heads touched (`None`: all) and how many a row holds.
    pub heads: Option<(Vec<u32>, u32)>,
    /// The sequence it generates in (grid runs: after the variants' baselines), shared with
    /// the conditions it runs as.
    pub seq: i32,
    /// The index of the first condition it runs as (its own when it is the first): only first
    /// conditions are made, generated and scored; the others read their results (see
    /// [`Condition::runs_as`]).
    pub runs_as: usize,
}

/// Everything a grid run needs, resolved (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Plan<'s> {
    /// The spec as given.
    pub spec: &'s ExperimentSpec,
    /// One per variant, in spec order; variant i's baseline runs in sequence i.
    pub prompts: Vec<PreparedPrompt>,
    /// The needle span (given or found).
    pub needle: Span,
    /// What the user should know about the rendering.
    pub warnings: Vec<String>,
    /// One per spec condition, in spec order.
    pub conditions: Vec<PlannedCondition>,
    /// Sequences a grid run uses: the baselines, then the conditions.
    pub n_seq: u32,
    /// Cells per sequence: the longest prompt, the generation and a margin.
    pub n_ctx_per_seq: u32,
}

impl<'s> Plan<'s> {
    /// Renders and tokenizes the prompts with `model`, then resolves the spec against them.
    /// Refuses, before anything is allocated, a spec whose run would not fit the model's
    /// context or this machine's memory.
    pub fn new(model: &LoadedModel, spec: &'s ExperimentSpec) -> Result<Plan<'s>, RunError> {
        not_a_dataset(spec)?;
        super::fits::check(model, spec)?;
        let Prepared {
            prompts,
            span,
            warnings,
        } = prepare_prompts(model, spec)?;
        let info = model.info();
        let shape = CacheShape {
            n_layer: info.n_layer,
            n_head_kv: info.n_head_kv,
        };
        let mut plan = Plan::resolve(spec, prompts, span, shape)?;
        plan.warnings = warnings;
        Ok(plan)
    }

    /// Resolves `spec` against already prepared prompts (one per variant) for a model of
    /// `n_layer` layers: checks every condition's span against its prompt's cache, its layers
    /// against the model, a transplant's prompts for alignment. Needs no model.
    pub fn resolve(
        spec: &'s ExperimentSpec,
        prompts: Vec<PreparedPrompt>,
        needle: Span,
        shape: CacheShape,
    ) -> Result<Plan<'s>, SpecError> {
        spec.validate()?;
        not_a_dataset(spec)?;
        check_prompts(spec, &prompts)?;
        let n_var = prompts.len();
        let runs = shared_runs(&spec.conditions);
        // A first condition's sequence follows the baselines and the first conditions before it.
        let mut seqs = vec![0i32; runs.len()];
        let mut next = n_var as i32;
        for (i, &first) in runs.iter().enumerate() {
            seqs[i] = if first == i { next } else { seqs[first] };
            next += i32::from(first == i);
        }
        let conditions = spec
            .conditions
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let mut planned =
                    resolve_condition(spec, &prompts, needle, shape, index, c, seqs[index])?;
                planned.runs_as = runs[index];
                Ok(planned)
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        let max_prompt = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
        // A sequence holds its prompt, then either its generation or an expected answer.
        let continuation = spec.continuation_cells();
        Ok(Plan {
            spec,
            // The baselines and one sequence per first condition (`spec.n_sequences()`).
            n_seq: next as u32,
            n_ctx_per_seq: (max_prompt + continuation + 8) as u32,
            prompts,
            needle,
            warnings: Vec::new(),
            conditions,
        })
    }

    /// The shape of a grid run's context.
    pub fn lab_options(&self, options: &RunOptions) -> LabOptions {
        LabOptions {
            n_seq: self.n_seq,
            n_ctx_per_seq: self.n_ctx_per_seq,
            threads: options.threads,
            n_batch: options.n_batch,
            cache: self.spec.cache,
        }
    }

    /// The conditions a run makes, generates and scores: the first of each kind (in spec order;
    /// the others run as one of these).
    pub fn computed(&self) -> impl Iterator<Item = &PlannedCondition> {
        self.conditions.iter().filter(|c| c.runs_as == c.index)
    }

    /// The conditions that run as first condition `first` (itself included), in spec order.
    pub fn sharing(&self, first: usize) -> impl Iterator<Item = &PlannedCondition> {
        self.conditions.iter().filter(move |c| c.runs_as == first)
    }

    /// The spec's condition behind a planned one.
    pub fn condition(&self, c: &PlannedCondition) -> &'s Condition {
        &self.spec.conditions[c.index]
    }

    /// The seed every sequence's random generator starts from (0 when greedy).
    pub fn sampling_seed(&self) -> u64 {
        match self.spec.generation.sampling {
            Sampling::Sample { seed, .. } => seed,
            Sampling::Greedy => 0,
        }
    }
}

/// A dataset is many grids (its waves), never one: its spec has no variants of its own.
fn not_a_dataset(spec: &ExperimentSpec) -> Result<(), SpecError> {
    if spec.dataset.is_some() {
        return Err(SpecError::Dataset(
            "this experiment is a dataset: it runs as waves of grids (`kvlab run`), not as one grid"
                .into(),
        ));
    }
    Ok(())
}

/// One prompt per variant, each with a token to cache and a last token to feed.
fn check_prompts(spec: &ExperimentSpec, prompts: &[PreparedPrompt]) -> Result<(), SpecError> {
    if prompts.len() != spec.variants.len() {
        return Err(SpecError::Variants(format!(
            "{} prompts were prepared for {} variants",
            prompts.len(),
            spec.variants.len()
        )));
    }
    if let Some(p) = prompts.iter().find(|p| p.tokens.len() < 2) {
        return Err(SpecError::Span(format!(
            "the prompt of {} has {} token(s); it needs at least 2",
            p.name,
            p.tokens.len()
        )));
    }
    Ok(())
}

/// Resolves and checks one condition; errors name it.
fn resolve_condition(
    spec: &ExperimentSpec,
    prompts: &[PreparedPrompt],
    needle: Span,
    shape: CacheShape,
    index: usize,
    c: &Condition,
    seq: i32,
) -> Result<PlannedCondition, SpecError> {
    let err = |reason: String| SpecError::Condition {
        index,
        label: c.row_label(),
        reason,
    };
    let variant_index = |name: &str, role: &str| {
        spec.variant_index(name)
            .ok_or_else(|| err(format!("there is no {role}variant named {name:?}")))
    };
    let n_layer = shape.n_layer;
    let variant = variant_index(&c.variant, "")?;
    let span = c.site.span.unwrap_or(needle);
    let prompt_len = prompts[variant].tokens.len();
    check_span_in_cache(span, prompt_len, "the span").map_err(|e| err(e.to_string()))?;
    if c.op == Op::Remove && span.end + 1 >= prompt_len {
        // llama.cpp feeds the next token only right after the sequence's last cached position.
        return Err(err(format!(
            "remove {}..{} would take out the cache's last position ({}): the prompt's last \
             token must follow a cached one, so remove at most up to position {}",
            span.start,
            span.end,
            prompt_len.saturating_sub(2),
            prompt_len.saturating_sub(3)
        )));
    }
    if let Some(max) = c.site.layers.max()
        && max >= n_layer
    {
        return Err(err(format!(
            "layer {max} is out of range: the model has {n_layer} layers (0..{})",
            n_layer.saturating_sub(1)
        )));
    }
    let edit = match &c.op {
        Op::None => Edit::None,
        Op::Zero => Edit::Zero,
        Op::Remove => Edit::Remove,
        Op::Transplant { from } => {
            let donor = variant_index(from, "donor ")?;
            check_aligned(&prompts[variant], &prompts[donor]).map_err(err)?;
            Edit::Transplant { donor }
        }
        Op::Mean { over } => {
            let over = if over.is_empty() {
                (0..prompts.len()).collect::<Vec<_>>()
            } else {
                over.iter()
                    .map(|v| variant_index(v, ""))
                    .collect::<Result<_, _>>()?
            };
            for &o in &over {
                check_aligned(&prompts[variant], &prompts[o]).map_err(err)?;
            }
            Edit::Mean { over }
        }
        Op::Noise { scale, seed } => Edit::Noise {
            scale: *scale,
            seed: *seed,
        },
    };
    let heads = match &c.site.heads {
        None => None,
        Some(h) => {
            if let Some(&max) = h.iter().next_back()
                && max >= shape.n_head_kv
            {
                return Err(err(format!(
                    "KV head {max} is out of range: the model has {} KV heads (0..{})",
                    shape.n_head_kv,
                    shape.n_head_kv.saturating_sub(1)
                )));
            }
            Some((h.iter().copied().collect(), shape.n_head_kv))
        }
    };
    Ok(PlannedCondition {
        index,
        variant,
        edit,
        span,
        layers: c.site.layers.resolve(n_layer),
        part: c.site.part,
        heads,
        seq,
        runs_as: index,
    })
}

/// Copying or averaging rows across variants needs the same positions in each: the prompts must
/// tokenize to the same length.
fn check_aligned(a: &PreparedPrompt, b: &PreparedPrompt) -> Result<(), String> {
    if a.tokens.len() == b.tokens.len() {
        return Ok(());
    }
    Err(format!(
        "the prompts of {} ({} tokens) and {} ({} tokens) do not align: a transplant or a mean \
         uses other variants' caches at the same positions, so the variants must tokenize to the \
         same length",
        a.name,
        a.tokens.len(),
        b.name,
        b.tokens.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TokenPiece;
    use crate::experiment::LayerSet;

    /// A prompt of `n` tokens; `needle` goes at position 2.
    fn prompt(name: &str, n: usize, needle: i32) -> PreparedPrompt {
        PreparedPrompt {
            name: name.into(),
            text: String::new(),
            tokens: (0..n)
                .map(|i| TokenPiece {
                    id: if i == 2 { needle } else { i as i32 + 100 },
                    piece: String::new(),
                })
                .collect(),
        }
    }

    fn condition(variant: &str, op: Op) -> Condition {
        Condition::new(variant, op)
    }

    /// The seed's spec (variants SF and NY) with the given conditions.
    fn spec(conditions: Vec<Condition>) -> ExperimentSpec {
        ExperimentSpec {
            conditions,
            ..ExperimentSpec::seed()
        }
    }

    const NEEDLE: Span = Span { start: 2, end: 3 };
    const SHAPE: CacheShape = CacheShape {
        n_layer: 4,
        n_head_kv: 2,
    };

    fn resolve(spec: &ExperimentSpec, sf_len: usize) -> Result<Plan<'_>, SpecError> {
        let prompts = vec![prompt("SF", sf_len, 1), prompt("NY", 10, 2)];
        Plan::resolve(spec, prompts, NEEDLE, SHAPE)
    }

    #[test]
    fn conditions_that_run_as_one_share_a_sequence() {
        let against = |c: Condition, v: &str| Condition {
            against: vec![v.into()],
            ..c
        };
        let s = spec(vec![
            against(condition("SF", Op::Zero), "NY"),
            condition("SF", Op::Remove),
            condition("SF", Op::Zero).labelled("zeroed again"),
            condition("NY", Op::Zero),
            condition("SF", Op::Remove),
        ]);
        let plan = resolve(&s, 10).unwrap();
        assert_eq!(plan.n_seq, 2 + 3);
        let c = &plan.conditions;
        assert_eq!(c.iter().map(|c| c.seq).collect::<Vec<_>>(), [2, 3, 2, 4, 3]);
        assert_eq!(
            c.iter().map(|c| c.runs_as).collect::<Vec<_>>(),
            [0, 1, 0, 3, 1]
        );
        let computed: Vec<usize> = plan.computed().map(|c| c.index).collect();
        assert_eq!(computed, [0, 1, 3]);
        let sharing: Vec<usize> = plan.sharing(1).map(|c| c.index).collect();
        assert_eq!(sharing, [1, 4]);
    }

    /// The error is about condition `index` and says `what`.
    fn assert_condition_error(e: SpecError, index: usize, what: &str) {
        let msg = e.to_string();
        assert!(
            matches!(e, SpecError::Condition { index: i, .. } if i == index),
            "{msg}"
        );
        assert!(msg.contains(what), "{msg}");
    }

    #[test]
    fn a_good_spec_resolves_indices_spans_layers_and_sequences() {
        let mut zero_k = condition("NY", Op::Zero);
        zero_k.site.layers = LayerSet::parse("1,3").unwrap();
        zero_k.site.part = KvPart::K;
        zero_k.site.span = Some(Span { start: 4, end: 6 });
        let s = spec(vec![
            condition("SF", Op::None),
            condition("SF", Op::Transplant { from: "NY".into() }),
            zero_k,
            condition("NY", Op::Remove),
        ]);
        let plan = resolve(&s, 10).unwrap();
        assert_eq!(plan.n_seq, 6);
        assert_eq!(plan.n_ctx_per_seq, 10 + 100 + 8);
        let c = &plan.conditions;
        assert_eq!(c[0].edit, Edit::None);
        assert_eq!(c[1].edit, Edit::Transplant { donor: 1 });
        assert_eq!(c[2].edit, Edit::Zero);
        assert_eq!(c[3].edit, Edit::Remove);
        assert_eq!(
            c.iter().map(|c| c.variant).collect::<Vec<_>>(),
            [0, 0, 1, 1]
        );
        assert_eq!(c.iter().map(|c| c.seq).collect::<Vec<_>>(), [2, 3, 4, 5]);
        assert_eq!(c.iter().map(|c| c.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(c[0].span, NEEDLE);
        assert_eq!(c[0].layers, [0, 1, 2, 3]);
        assert_eq!(c[2].span, Span { start: 4, end: 6 });
        assert_eq!(c[2].layers, [1, 3]);
        assert_eq!(c[2].part, KvPart::K);
        assert_eq!(
            plan.condition(&c[2]).row_label(),
            s.conditions[2].row_label()
        );
    }

    #[test]
    fn a_layer_out_of_range_names_the_condition() {
        let mut c = condition("SF", Op::Zero);
        c.site.layers = LayerSet::parse("2-4").unwrap();
        let s = spec(vec![condition("SF", Op::None), c]);
        let e = resolve(&s, 10).unwrap_err();
        assert_condition_error(
            e,
            1,
            "layer 4 is out of range: the model has 4 layers (0..3)",
        );
    }

    #[test]
    fn a_span_beyond_the_cache_names_the_condition() {
        let mut c = condition("NY", Op::Zero);
        // The NY prompt has 10 tokens; positions 0..9 are cached.
        c.site.span = Some(Span { start: 8, end: 10 });
        let e = resolve(&spec(vec![c]), 10).unwrap_err();
        assert_condition_error(e, 0, "outside the prompt's cache");
    }

    /// llama.cpp feeds the prompt's last token only right after the sequence's last cached
    /// position, so a remove may not take that position (the run would fail at its first
    /// evaluation); one before it is fine.
    #[test]
    fn a_remove_of_the_last_cached_position_names_the_condition() {
        let mut c = condition("NY", Op::Remove);
        // The NY prompt has 10 tokens: positions 0..=8 are cached.
        c.site.span = Some(Span { start: 7, end: 9 });
        let e = resolve(&spec(vec![c.clone()]), 10).unwrap_err();
        assert_condition_error(e, 0, "would take out the cache's last position (8)");
        c.site.span = Some(Span { start: 7, end: 8 });
        assert!(resolve(&spec(vec![c]), 10).is_ok());
    }

    #[test]
    fn a_transplant_between_unaligned_prompts_names_the_condition() {
        let s = spec(vec![condition("SF", Op::Transplant { from: "NY".into() })]);
        let e = resolve(&s, 11).unwrap_err();
        assert_condition_error(e, 0, "SF (11 tokens) and NY (10 tokens) do not align");
    }

    #[test]
    fn an_unknown_variant_names_the_condition() {
        let s = spec(vec![condition("LA", Op::Zero)]);
        let e = resolve(&s, 10).unwrap_err();
        assert_condition_error(e, 0, "there is no variant named \"LA\"");
        let s = spec(vec![condition("SF", Op::Transplant { from: "LA".into() })]);
        let e = resolve(&s, 10).unwrap_err();
        assert_condition_error(e, 0, "there is no donor variant named \"LA\"");
    }

    #[test]
    fn prompts_must_match_the_variants() {
        let s = spec(Vec::new());
        let e = Plan::resolve(&s, vec![prompt("SF", 10, 1)], NEEDLE, SHAPE).unwrap_err();
        assert!(matches!(e, SpecError::Variants(_)), "{e}");
        let e = resolve(&s, 1).unwrap_err();
        assert!(e.to_string().contains("needs at least 2"), "{e}");
    }
}
