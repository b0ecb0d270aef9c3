//! Several draws of a random ablation, summarized. One noise draw is an anecdote; the same
//! noise scale at the same site over several seeds (several conditions of the grid) gives the
//! mean and spread of the preference and how many draws flip the answer.

use std::fmt;

use super::results::{RunResults, Verdict};
use super::spec::{Op, Site};

/// The noise conditions of one variant at one scale and site, taken together.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSummary {
    /// The variant whose cache was edited.
    pub variant: String,
    /// σ in units of each layer's spread.
    pub scale: f32,
    /// Where the noise went.
    pub site: Site,
    /// The seeds drawn, in grid order.
    pub seeds: Vec<u64>,
    /// Mean preference over the draws.
    pub mean: f64,
    /// Its standard deviation over the draws (n − 1 in the denominator).
    pub sd: f64,
    /// Draws whose verdict flips to another variant.
    pub flips: usize,
}

impl fmt::Display for NoiseSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.seeds.len();
        write!(
            f,
            "{}, noise {}σ{} over {n} seeds: preference {:+.2} ± {:.2} (mean ± sd), {} of {n} flip",
            self.variant,
            self.scale,
            self.site.suffix(),
            self.mean,
            self.sd,
            self.flips
        )
    }
}

/// Every group of two or more scored noise conditions sharing variant, scale and site.
pub fn noise_summaries(results: &RunResults) -> Vec<NoiseSummary> {
    let mut groups: Vec<(NoiseSummary, Vec<f64>)> = Vec::new();
    for c in &results.conditions {
        let (Op::Noise { scale, seed }, Some(p)) = (&c.op, c.preference) else {
            continue;
        };
        let flipped = matches!(c.verdict, Some(Verdict::FlipsTo { .. }));
        let at = groups
            .iter()
            .position(|(g, _)| g.variant == c.variant && g.scale == *scale && g.site == c.site);
        let (g, prefs) = match at {
            Some(i) => &mut groups[i],
            None => {
                groups.push((
                    NoiseSummary {
                        variant: c.variant.clone(),
                        scale: *scale,
                        site: c.site.clone(),
                        seeds: Vec::new(),
                        mean: 0.0,
                        sd: 0.0,
                        flips: 0,
                    },
                    Vec::new(),
                ));
                groups.last_mut().expect("just pushed")
            }
        };
        g.seeds.push(*seed);
        g.flips += usize::from(flipped);
        prefs.push(p);
    }
    groups
        .into_iter()
        .filter(|(_, p)| p.len() >= 2)
        .map(|(mut g, p)| {
            let n = p.len() as f64;
            g.mean = p.iter().sum::<f64>() / n;
            g.sd = (p.iter().map(|x| (x - g.mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            g
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_of_one_noise_are_summarized_and_others_kept_apart() {
        let text = include_str!("../../tests/data/results-v0.json");
        let session = crate::session::Session::from_json(text, "results-v0.json").unwrap();
        let mut r = session.results.unwrap();
        r.conditions.truncate(1);
        let template = r.conditions[0].clone();
        let mut add = |variant: &str, scale: f32, seed: u64, pref: f64| {
            let mut c = template.clone();
            c.variant = variant.into();
            c.op = Op::Noise { scale, seed };
            c.preference = Some(pref);
            c.verdict = Some(Verdict::new(variant, pref, "NY"));
            r.conditions.push(c);
        };
        add("SF", 3.0, 1, 1.0);
        add("SF", 3.0, 2, -1.0);
        add("SF", 3.0, 3, 3.0);
        add("SF", 1.0, 1, 2.0); // another scale, alone: not summarized
        let s = noise_summaries(&r);
        assert_eq!(s.len(), 1);
        let g = &s[0];
        assert_eq!(g.seeds, vec![1, 2, 3]);
        assert_eq!(g.flips, 1);
        assert!((g.mean - 1.0).abs() < 1e-12);
        assert!((g.sd - 2.0).abs() < 1e-12);
        assert_eq!(
            g.to_string(),
            "SF, noise 3σ over 3 seeds: preference +1.00 ± 2.00 (mean ± sd), 1 of 3 flip"
        );
    }
}
