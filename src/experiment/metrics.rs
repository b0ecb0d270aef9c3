//! Numbers computed from logits and cache rows: log-probabilities, top-k, sampling,
//! divergence, distances. Pure functions, deterministic.

use super::spec::Sampling;

/// Log-probabilities of a logit vector, via a numerically stable log-sum-exp (in f64).
#[derive(Debug, Clone)]
pub struct LogProbs {
    max: f32,
    log_sum: f64,
}

impl LogProbs {
    /// Prepares log-probabilities for `logits`. The exponentials are taken in f32 (relative
    /// error ~1e-7, far below what matters for log-probs) and summed in f64; this runs on every
    /// vocabulary entry at every step, so it is kept to one tight pass.
    pub fn new(logits: &[f32]) -> LogProbs {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for chunk in logits.chunks(64) {
            let part: f32 = chunk.iter().map(|&l| (l - max).exp()).sum();
            sum += part as f64;
        }
        LogProbs {
            max,
            log_sum: sum.ln(),
        }
    }

    /// The log-probability of token `id`.
    pub fn of(&self, logits: &[f32], id: usize) -> f32 {
        match logits.get(id) {
            Some(&l) => ((l - self.max) as f64 - self.log_sum) as f32,
            None => f32::NEG_INFINITY,
        }
    }
}

/// The `k` most likely tokens as (id, log-prob), most likely first; ties by lower id.
/// One pass over the logits with a small sorted buffer (k is small, the vocabulary large).
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    top_k_with(logits, k, &LogProbs::new(logits))
}

/// [`top_k`] with the log-probabilities already prepared.
pub fn top_k_with(logits: &[f32], k: usize, lp: &LogProbs) -> Vec<(usize, f32)> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    // Sorted best first; an entry beats another with a larger logit or an equal one and lower id.
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, &l) in logits.iter().enumerate() {
        if best.len() == k && l <= best[k - 1].1 {
            continue;
        }
        let at = best.partition_point(|&(_, b)| b >= l);
        best.insert(at, (i, l));
        best.truncate(k);
    }
    best.into_iter()
        .map(|(i, _)| (i, lp.of(logits, i)))
        .collect()
}

/// The index of the largest logit (the lowest index among equals).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// A small deterministic random generator (SplitMix64), one per sequence, all seeded alike so
/// that a sequence whose logits equal another's makes the same choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Chooses the next token from logits.
pub fn choose(logits: &[f32], sampling: &Sampling, rng: &mut Rng) -> usize {
    match *sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Sample {
            temperature, top_p, ..
        } => {
            let t = temperature.max(1e-6) as f64;
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let mut probs: Vec<(usize, f64)> = logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i, ((l as f64 - max) / t).exp()))
                .collect();
            probs.sort_by(|a, b| {
                b.1.partial_cmp(&a.1)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.0.cmp(&b.0))
            });
            let total: f64 = probs.iter().map(|p| p.1).sum();
            let mut kept = 0.0;
            let mut n = 0;
            for p in &probs {
                kept += p.1 / total;
                n += 1;
                if kept >= top_p as f64 {
                    break;
                }
            }
            let nucleus = &probs[..n.max(1)];
            let mass: f64 = nucleus.iter().map(|p| p.1).sum();
            let mut x = rng.next_f64() * mass;
            for p in nucleus {
                x -= p.1;
                if x < 0.0 {
                    return p.0;
                }
            }
            nucleus[nucleus.len() - 1].0
        }
    }
}

/// The first index where two token sequences differ (a shorter one differs where it ends);
/// `None` when they are equal.
pub fn first_divergence(a: &[i32], b: &[i32]) -> Option<usize> {
    let n = a.len().min(b.len());
    (0..n)
        .find(|&i| a[i] != b[i])
        .or(if a.len() != b.len() { Some(n) } else { None })
}

/// Euclidean norm of the difference of two rows.
pub fn l2_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum::<f64>()
        .sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probs_normalize() {
        let logits = [1.0f32, 2.0, 3.0, -50.0];
        let lp = LogProbs::new(&logits);
        let total: f64 = (0..4).map(|i| (lp.of(&logits, i) as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(lp.of(&logits, 2) > lp.of(&logits, 1));
        assert_eq!(lp.of(&logits, 9), f32::NEG_INFINITY);
    }

    #[test]
    fn top_k_is_sorted_and_breaks_ties_by_id() {
        let logits = [0.5f32, 3.0, 3.0, 1.0, -1.0];
        let t = top_k(&logits, 3);
        assert_eq!(t.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(argmax(&logits), 1);
        assert_eq!(top_k(&logits, 10).len(), 5);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_p() {
        let logits = [10.0f32, 9.0, -5.0, -5.0];
        let s = Sampling::Sample {
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
        };
        // top_p 0.5 keeps only the most likely token.
        let mut r = Rng::new(7);
        assert!((0..50).all(|_| choose(&logits, &s, &mut r) == 0));
        let s = Sampling::Sample {
            temperature: 5.0,
            top_p: 1.0,
            seed: 7,
        };
        let run = || {
            let mut r = Rng::new(7);
            (0..20)
                .map(|_| choose(&logits, &s, &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        assert!(
            run().iter().any(|&t| t != 0),
            "high temperature should vary"
        );
    }

    #[test]
    fn divergence_and_distance() {
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 5, 3]), Some(1));
        assert_eq!(first_divergence(&[1, 2], &[1, 2, 3]), Some(2));
        assert_eq!(l2_diff(&[3.0, 0.0], &[0.0, 4.0]), 5.0);
    }
}
