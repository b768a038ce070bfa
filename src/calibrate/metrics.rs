//! Confusion counts, threshold sweeps and the recommendation.

use serde::Serialize;

use super::Scored;

/// Confusion counts and the rates derived from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Confusion {
    /// Duplicates called duplicate.
    pub tp: u64,
    /// Distinct pairs called duplicate (the error that drops real work).
    pub fp: u64,
    /// Distinct pairs called new.
    pub tn: u64,
    /// Duplicates missed.
    pub fn_: u64,
}

impl Confusion {
    /// Counts `predicted` against the labels.
    pub fn of<'a>(items: impl IntoIterator<Item = (&'a Scored, bool)>) -> Self {
        Self::from_labels(
            items
                .into_iter()
                .map(|(s, predicted)| (s.duplicate, predicted)),
        )
    }

    /// Counts (label, predicted) pairs.
    pub fn from_labels(items: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut c = Confusion::default();
        for (duplicate, predicted) in items {
            match (duplicate, predicted) {
                (true, true) => c.tp += 1,
                (true, false) => c.fn_ += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
            }
        }
        c
    }

    /// TP / (TP + FP); 1 when nothing was called duplicate.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp, 1.0)
    }
    /// TP / (TP + FN).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_, 0.0)
    }
    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    /// Distinct pairs called duplicate / all distinct pairs.
    pub fn false_duplicate_rate(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn, 0.0)
    }

    /// The figures as JSON.
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn_,
            "precision": self.precision(), "recall": self.recall(), "f1": self.f1(),
            "false_duplicate_rate": self.false_duplicate_rate(),
        })
    }
}

fn ratio(a: u64, b: u64, empty: f64) -> f64 {
    if b == 0 { empty } else { a as f64 / b as f64 }
}

/// One point of the threshold sweep.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SweepPoint {
    pub fuzzy_threshold: f64,
    pub semantic_duplicate: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub false_duplicate_rate: f64,
    /// Upper end of the 95% (Wilson) interval of the false-duplicate rate: what the rate may
    /// be on data the bench has not seen.
    pub false_duplicate_rate_upper95: f64,
}

/// Upper end of the Wilson score interval (95%) of a proportion `k / n`.
pub fn wilson_upper(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (k, n, z) = (k as f64, n as f64, 1.96f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = p + z * z / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre + margin) / denom).min(1.0)
}

/// Fuzzy thresholds swept (1.0 keeps only identical text).
pub fn fuzzy_grid() -> Vec<f64> {
    (0..=20)
        .map(|i| round(0.80 + 0.01 * f64::from(i)))
        .collect()
}

/// Judge probability thresholds swept: coarse from 0.3, fine (0.005) from 0.7. The judge's
/// probabilities for near-copies crowd just under its ceiling (about 0.85-0.93 for the shipped
/// model), so a coarse step there leaves recall on the table: the best threshold that holds
/// the bound can fall between two coarse points.
pub fn semantic_grid() -> Vec<f64> {
    let coarse = (0..8).map(|i| 0.30 + 0.05 * f64::from(i));
    let fine = (0..60).map(|i| 0.70 + 0.005 * f64::from(i));
    coarse
        .chain(fine)
        .chain([0.998, 0.999])
        .map(round)
        .collect()
}

/// Every (fuzzy, semantic) threshold pair of the grids.
pub fn sweep(scored: &[Scored]) -> Vec<SweepPoint> {
    let mut out = Vec::new();
    for f in fuzzy_grid() {
        for s in semantic_grid() {
            let c = Confusion::of(scored.iter().map(|x| (x, x.at(f, s))));
            out.push(SweepPoint {
                fuzzy_threshold: round(f),
                semantic_duplicate: round(s),
                precision: c.precision(),
                recall: c.recall(),
                f1: c.f1(),
                false_duplicate_rate: c.false_duplicate_rate(),
                false_duplicate_rate_upper95: wilson_upper(c.fp, c.fp + c.tn),
            });
        }
    }
    out
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The point with the best recall whose false-duplicate rate stays within `target` with 95%
/// confidence (the Wilson upper bound, so the promise holds beyond the pairs measured); among
/// equal recall, the lowest rate; among those, the middle of the plateau (thresholds at a
/// plateau's edge fit this data's quirks). `None` when no point meets the target.
pub fn recommend(points: &[SweepPoint], target: f64) -> Option<SweepPoint> {
    let ok: Vec<&SweepPoint> = points
        .iter()
        .filter(|p| p.false_duplicate_rate_upper95 <= target + 1e-12)
        .collect();
    let best_recall = ok
        .iter()
        .map(|p| p.recall)
        .fold(f64::NEG_INFINITY, f64::max);
    let top: Vec<&&SweepPoint> = ok
        .iter()
        .filter(|p| p.recall >= best_recall - 1e-12)
        .collect();
    let best_fdr = top
        .iter()
        .map(|p| p.false_duplicate_rate)
        .fold(f64::INFINITY, f64::min);
    let mut ties: Vec<SweepPoint> = top
        .into_iter()
        .filter(|p| p.false_duplicate_rate <= best_fdr + 1e-12)
        .map(|p| **p)
        .collect();
    // The middle of the plateau, one dimension at a time.
    let mut sem: Vec<f64> = ties.iter().map(|p| p.semantic_duplicate).collect();
    sem.sort_by(f64::total_cmp);
    sem.dedup();
    let s_mid = *sem.get(sem.len() / 2)?;
    ties.retain(|p| p.semantic_duplicate == s_mid);
    ties.sort_by(|a, b| a.fuzzy_threshold.total_cmp(&b.fuzzy_threshold));
    ties.get(ties.len() / 2).copied()
}

/// Confusion of the single-score rule `score >= t` over (label, score) pairs.
pub fn at_threshold(scores: &[(bool, f64)], t: f64) -> Confusion {
    Confusion::from_labels(scores.iter().map(|(d, s)| (*d, *s >= t)))
}

/// Best recall of a single-score rule (score >= t) within `target`, over thresholds 0.5..=1.
pub fn best_single_threshold(scores: &[(bool, f64)], target: f64) -> Option<(f64, Confusion)> {
    let mut best: Option<(f64, Confusion)> = None;
    for i in 0..=500 {
        let t = 0.5 + 0.001 * f64::from(i);
        let c = at_threshold(scores, t);
        if c.false_duplicate_rate() <= target + 1e-12
            && best.is_none_or(|(_, b)| c.recall() > b.recall())
        {
            best = Some((round(t), c));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(dup: bool, fuzzy: Option<f64>, semantic: Option<f64>) -> Scored {
        Scored {
            id: String::new(),
            duplicate: dup,
            group: None,
            predicted: false,
            stage: None,
            certain: false,
            fuzzy,
            semantic,
            cosine: None,
            explain: None,
            naive_cosine: None,
        }
    }

    #[test]
    fn recommendation_respects_the_target_on_its_data() {
        let mut data = Vec::new();
        for i in 0..100 {
            data.push(s(true, None, Some(0.90 + 0.001 * f64::from(i))));
            data.push(s(false, None, Some(0.30 + 0.0069 * f64::from(i))));
        }
        let points = sweep(&data);
        for target in [0.05, 0.2, 0.5] {
            let r = recommend(&points, target).expect("some point meets the target");
            let c = Confusion::of(
                data.iter()
                    .map(|x| (x, x.at(r.fuzzy_threshold, r.semantic_duplicate))),
            );
            assert!(
                c.false_duplicate_rate() <= target + 1e-12,
                "{target}: {r:?}"
            );
            assert!((c.recall() - r.recall).abs() < 1e-12);
        }
    }

    #[test]
    fn recommendation_holds_the_bound_on_a_known_answer() {
        // 1,000 distinct pairs spread evenly over (0.3, 0.985]; 500 duplicates at 0.995. Exactly
        // those distinct pairs at or above the threshold are false duplicates, so the
        // recommended threshold is the lowest grid point whose Wilson bound stays <= 0.5 %.
        let mut data = Vec::new();
        for i in 0..1000 {
            data.push(s(
                false,
                None,
                Some(0.3 + 0.685 * f64::from(i + 1) / 1000.0),
            ));
        }
        for _ in 0..500 {
            data.push(s(true, None, Some(0.995)));
        }
        let points = sweep(&data);
        let r = recommend(&points, 0.005).expect("a point meets the target");
        let fp = |t: f64| data.iter().filter(|x| !x.duplicate && x.at(1.1, t)).count() as u64;
        assert!(wilson_upper(fp(r.semantic_duplicate), 1000) <= 0.005);
        assert_eq!(r.recall, 1.0);
        // The known answer: exactly 0.99 and 0.995 hold the bound with full recall (at 0.985
        // the top distinct pair is a false duplicate: Wilson bound 0.56 %), and the
        // recommendation is the middle of that plateau.
        let holding: Vec<f64> = semantic_grid()
            .into_iter()
            .filter(|t| *t <= 0.995 && wilson_upper(fp(*t), 1000) <= 0.005)
            .collect();
        assert_eq!(holding, vec![0.99, 0.995]);
        assert_eq!(r.semantic_duplicate, 0.995);
    }

    #[test]
    fn wilson_bound_is_above_the_estimate_and_shrinks_with_n() {
        assert!(wilson_upper(0, 100) > 0.0);
        assert!(wilson_upper(2, 2000) > 0.001);
        assert!(wilson_upper(20, 20_000) < wilson_upper(2, 2000));
        assert_eq!(wilson_upper(0, 0), 0.0);
    }

    #[test]
    fn confusion_rates() {
        let c = Confusion {
            tp: 8,
            fp: 1,
            tn: 9,
            fn_: 2,
        };
        assert!((c.precision() - 8.0 / 9.0).abs() < 1e-12);
        assert!((c.recall() - 0.8).abs() < 1e-12);
        assert!((c.false_duplicate_rate() - 0.1).abs() < 1e-12);
    }
}
