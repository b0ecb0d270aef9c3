//! The statistics a dataset's table is read with: a Wilson interval for a rate (it stays inside
//! [0, 1] and is honest at 0 or n successes, where the normal approximation collapses), and a
//! percentile bootstrap for a mean (no assumption about the shape of the changes), drawn from a
//! seeded generator so the same rows always give the same interval.

/// The normal quantile of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Resamples drawn for a bootstrap interval: enough that the 2.5 % and 97.5 % quantiles move by
/// well under the interval's width from one seed to another.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The fixed seed of the bootstrap (reports must not change from one run of the table to the
/// next).
pub const BOOTSTRAP_SEED: u64 = 0x006b_766c_6162;

/// A small, fast, seedable generator (SplitMix64): its output for a seed never changes, so a
/// recorded seed reproduces its draws on any machine and kvlab version.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (> 0), by multiply-shift (bias below 2⁻³² for any n that fits
    /// a table).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// Lower end.
    #[serde(with = "crate::experiment::floats")]
    pub low: f64,
    /// Upper end.
    #[serde(with = "crate::experiment::floats")]
    pub high: f64,
}

/// The Wilson score interval of `k` successes in `n` trials at normal quantile `z` (use
/// [`Z95`]). `None` for no trials.
pub fn wilson(k: usize, n: usize, z: f64) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Some(Interval {
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    })
}

/// The mean of `values` (`None` when empty).
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The percentile bootstrap 95 % interval of the mean of `values`: `resamples` means of `n`
/// values drawn with replacement (from a [`SplitMix64`] seeded with `seed`), sorted; the ends
/// are the means at ranks ⌊0.025·(B−1)⌉ and ⌊0.975·(B−1)⌉ (nearest rank). Each value must be
/// one independent unit (one item), so that resampling values resamples items. `None` when
/// empty or `resamples` is 0.
pub fn bootstrap_mean_ci(values: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    if values.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let n = values.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[(q * (resamples - 1) as f64).round() as usize];
    Some(Interval {
        low: at(0.025),
        high: at(0.975),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-5
    }

    #[test]
    fn wilson_matches_hand_computed_intervals() {
        // 3/10: centre (0.3 + 1.92/10) / 1.384 = 0.3555, half-width 0.2477.
        let i = wilson(3, 10, Z95).unwrap();
        assert!(close(i.low, 0.1078) && close(i.high, 0.6032), "{i:?}");
        // 0/10: [0, z²/(n + z²)] = [0, 3.8415/13.8415].
        let i = wilson(0, 10, Z95).unwrap();
        assert!(close(i.low, 0.0) && close(i.high, 0.2775), "{i:?}");
        // 10/10 mirrors 0/10.
        let i = wilson(10, 10, Z95).unwrap();
        assert!(close(i.low, 0.7225) && close(i.high, 1.0), "{i:?}");
        // 1/2, z = 1: centre 0.5, half-width sqrt(0.125 + 0.0625) / 1.5 = 0.2887.
        let i = wilson(1, 2, 1.0).unwrap();
        assert!(close(i.low, 0.2113) && close(i.high, 0.7887), "{i:?}");
        assert!(wilson(0, 0, Z95).is_none());
    }

    #[test]
    fn the_generator_is_splitmix64() {
        // The reference sequence for seed 0 (Vigna's splitmix64.c).
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut r = SplitMix64(7);
        assert!((0..1000).all(|_| r.below(3) < 3));
    }

    #[test]
    fn bootstrap_of_constant_values_is_that_value() {
        let i = bootstrap_mean_ci(&[2.5; 7], 500, 1).unwrap();
        assert_eq!((i.low, i.high), (2.5, 2.5));
        assert!(bootstrap_mean_ci(&[], 500, 1).is_none());
    }

    #[test]
    fn bootstrap_of_two_values_has_the_binomial_ends() {
        // Means of 10 draws from {0, 1} are k/10, k ~ Binomial(10, ½): P(k ≤ 1) = 1.1 %,
        // P(k ≤ 2) = 5.5 %, so the 2.5 % quantile is 0.2 and the 97.5 % one 0.8.
        let values: Vec<f64> = (0..10).map(|i| (i % 2) as f64).collect();
        let i = bootstrap_mean_ci(&values, 20_000, 3).unwrap();
        assert_eq!((i.low, i.high), (0.2, 0.8));
    }

    #[test]
    fn bootstrap_is_reproducible_and_brackets_the_mean() {
        let values = [-3.0, -1.0, 0.5, 2.0, 4.0, -0.5, 1.5, 0.0];
        let a = bootstrap_mean_ci(&values, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED).unwrap();
        let b = bootstrap_mean_ci(&values, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED).unwrap();
        assert_eq!(a, b);
        let m = mean(&values).unwrap();
        assert!(
            a.low < m && m < a.high && a.low > -3.0 && a.high < 4.0,
            "{a:?}"
        );
    }
}
