//! The judge: a learned pair scorer turning what the stages measured into the probability
//! that b repeats a's action.
//!
//! A logistic model over the cosine and the text features (`funnel::features`), then Platt
//! scaling fitted on a separate split, so the output is a calibrated probability that
//! `idem calibrate` can put thresholds on. The coefficients ship as JSON in the repository
//! (`judge_model.json`, made by `idem train-scorer`). The score is affine in the cosine before
//! the (monotone) sigmoid, so the best probability any cosine could give is known before an
//! embedding exists: that is `may_match`, which lets the engine skip the embedding.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::alignment::{ALIGN_FEATURES, ALIGN_RANGE, Alignment, N_ALIGN};
use super::features::{N_TEXT, TEXT_FEATURES, TextFeatures, measure_prepared};
use super::text::PreparedText;
use crate::config::SessionSettings;

/// The shipped model, made by `idem train-scorer` (see README, Calibration).
const SHIPPED_MODEL: &str = include_str!("judge_model.json");

/// Name of the cosine feature (the first one).
pub const COSINE: &str = "cosine";

/// Knots of the cosine's piecewise-linear terms: `cosine_over_<k>` = max(0, cosine - k). They
/// let the score rise steeply where paraphrases and near-misses meet (cosines above 0.8)
/// while staying piecewise linear in the cosine, so its maximum over all cosines is at a knot
/// or an end of [-1, 1] (what `best_probability` evaluates).
pub const COSINE_KNOTS: [f64; 3] = [0.8, 0.9, 0.95];

/// Names of the cosine terms.
const COSINE_TERMS: [&str; 4] = [COSINE, "cosine_over_80", "cosine_over_90", "cosine_over_95"];

/// Number of cosine terms.
const N_COS: usize = 4;

fn cosine_terms(cos: f64) -> [f64; N_COS] {
    let c = cos.clamp(-1.0, 1.0);
    [
        c,
        (c - COSINE_KNOTS[0]).max(0.0),
        (c - COSINE_KNOTS[1]).max(0.0),
        (c - COSINE_KNOTS[2]).max(0.0),
    ]
}

/// The model's full feature vector for a pair: the cosine terms, then the text features.
pub fn feature_vector(t: &TextFeatures, cosine: f64) -> Vec<f64> {
    cosine_terms(cosine)
        .into_iter()
        .chain(t.x.iter().copied())
        .collect()
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// The JSON does not parse.
    #[error("judge model is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The model names other features than this build computes.
    #[error("judge model features {found:?} do not match this build's {expected:?}")]
    Features {
        /// What the model names.
        found: Vec<String>,
        /// What this build computes.
        expected: Vec<String>,
    },
    /// Weights and features differ in number, or a coefficient is not finite.
    #[error("judge model is malformed: {0}")]
    Malformed(String),
}

/// Platt scaling of the raw logistic score: p = sigmoid(a * z + b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

/// The model as stored: coefficients per named feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Format version (1).
    pub version: u32,
    /// Feature names: the cosine terms, then `features::TEXT_FEATURES` in order.
    pub features: Vec<String>,
    /// One weight per feature.
    pub weights: Vec<f64>,
    pub bias: f64,
    pub platt: Platt,
    /// What it was trained on (free-form provenance: files, counts, hashes).
    #[serde(default)]
    pub trained_on: serde_json::Value,
    /// The variant that also reads the word alignment (`funnel::alignment`), used when both
    /// texts' word vectors are at hand; the model above judges the pairs without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aligned: Option<AlignedModel>,
}

/// The judge's variant with the word-alignment features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignedModel {
    /// Feature names: those of the base model, then `alignment::ALIGN_FEATURES`.
    pub features: Vec<String>,
    /// One weight per feature.
    pub weights: Vec<f64>,
    pub bias: f64,
    pub platt: Platt,
}

/// Feature names in model order.
pub fn feature_names() -> Vec<String> {
    COSINE_TERMS
        .iter()
        .chain(TEXT_FEATURES.iter())
        .copied()
        .map(str::to_string)
        .collect()
}

/// Feature names of the aligned variant, in model order.
pub fn aligned_feature_names() -> Vec<String> {
    let mut names = feature_names();
    names.extend(ALIGN_FEATURES.iter().map(|n| (*n).to_string()));
    names
}

/// One loaded linear score with its calibration.
#[derive(Debug, Clone)]
struct Linear {
    w_cos: [f64; N_COS],
    w: [f64; N_TEXT],
    /// Zero for the base model.
    w_align: [f64; N_ALIGN],
    bias: f64,
    platt: Platt,
}

/// A loaded, validated model: the base judgement, and the aligned variant when the model
/// has one.
#[derive(Debug, Clone)]
pub struct Judge {
    base: Linear,
    aligned: Option<Linear>,
}

/// The judge's view of one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Calibrated probability that b repeats a's action (0 on a hard conflict).
    pub probability: f64,
    /// The two or three features that moved the score most, with their signed share.
    pub deciding: Vec<(&'static str, f64)>,
}

impl Judgement {
    /// One line for reports: `negation_mismatch -7.9, cosine +6.1`.
    pub fn explain(&self) -> String {
        self.deciding
            .iter()
            .map(|(n, c)| format!("{n} {c:+.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Validates one linear score's names and coefficients.
fn linear(
    features: &[String],
    weights: &[f64],
    bias: f64,
    platt: Platt,
    with_alignment: bool,
) -> Result<Linear, JudgeError> {
    let expected = if with_alignment {
        aligned_feature_names()
    } else {
        feature_names()
    };
    if features != expected {
        return Err(JudgeError::Features {
            found: features.to_vec(),
            expected,
        });
    }
    let n = expected.len();
    if weights.len() != n {
        return Err(JudgeError::Malformed(format!(
            "{} weights for {n} features",
            weights.len()
        )));
    }
    let mut all = weights.iter().chain([&bias, &platt.a, &platt.b]);
    if all.any(|x| !x.is_finite()) {
        return Err(JudgeError::Malformed("a coefficient is not finite".into()));
    }
    let mut w_cos = [0.0; N_COS];
    w_cos.copy_from_slice(&weights[..N_COS]);
    let mut w = [0.0; N_TEXT];
    w.copy_from_slice(&weights[N_COS..N_COS + N_TEXT]);
    let mut w_align = [0.0; N_ALIGN];
    if with_alignment {
        w_align.copy_from_slice(&weights[N_COS + N_TEXT..]);
    }
    Ok(Linear {
        w_cos,
        w,
        w_align,
        bias,
        platt,
    })
}

impl Linear {
    fn text_score(&self, t: &TextFeatures) -> f64 {
        self.bias
            + self
                .w
                .iter()
                .zip(t.x.iter())
                .map(|(w, x)| w * x)
                .sum::<f64>()
    }

    fn align_score(&self, a: &Alignment) -> f64 {
        self.w_align
            .iter()
            .zip(a.x.iter())
            .map(|(w, x)| w * x)
            .sum()
    }

    /// The highest alignment score any alignment could give: a linear score over a box is
    /// highest at a corner.
    fn best_align_score(&self) -> f64 {
        self.w_align
            .iter()
            .zip(ALIGN_RANGE)
            .map(|(w, (lo, hi))| (w * lo).max(w * hi))
            .sum()
    }

    fn cosine_score(&self, cosine: f64) -> f64 {
        self.w_cos
            .iter()
            .zip(cosine_terms(cosine))
            .map(|(w, x)| w * x)
            .sum()
    }

    /// The best cosine score over [-1, 1]: at a knot or an end (piecewise linear).
    fn best_cosine_score(&self) -> f64 {
        [-1.0, 1.0]
            .into_iter()
            .chain(COSINE_KNOTS)
            .map(|c| self.cosine_score(c))
            .fold(f64::NEG_INFINITY, f64::max)
    }

    fn calibrated(&self, z: f64) -> f64 {
        1.0 / (1.0 + (-(self.platt.a * z + self.platt.b)).exp())
    }

    /// Each feature's contribution to the raw score (the cosine terms as one).
    fn parts(
        &self,
        t: &TextFeatures,
        cosine: f64,
        a: Option<&Alignment>,
    ) -> Vec<(&'static str, f64)> {
        std::iter::once((COSINE, self.cosine_score(cosine)))
            .chain(
                TEXT_FEATURES
                    .iter()
                    .zip(self.w.iter().zip(t.x.iter()))
                    .map(|(n, (w, x))| (*n, w * x)),
            )
            .chain(a.into_iter().flat_map(|a| {
                ALIGN_FEATURES
                    .iter()
                    .zip(self.w_align.iter().zip(a.x.iter()))
                    .map(|(n, (w, x))| (*n, w * x))
            }))
            .collect()
    }
}

impl Judge {
    /// Loads and validates a model.
    pub fn from_model(m: &Model) -> Result<Self, JudgeError> {
        let base = linear(&m.features, &m.weights, m.bias, m.platt, false)?;
        let aligned = m
            .aligned
            .as_ref()
            .map(|a| linear(&a.features, &a.weights, a.bias, a.platt, true))
            .transpose()?;
        Ok(Self { base, aligned })
    }

    /// Parses a model from JSON text.
    pub fn from_json(text: &str) -> Result<Self, JudgeError> {
        Self::from_model(&serde_json::from_str(text)?)
    }

    /// The model shipped in the repository, parsed once.
    pub fn shipped() -> Result<&'static Judge, &'static JudgeError> {
        static SHIPPED: OnceLock<Result<Judge, JudgeError>> = OnceLock::new();
        SHIPPED
            .get_or_init(|| Judge::from_json(SHIPPED_MODEL))
            .as_ref()
    }

    /// Whether the model has the aligned variant.
    pub fn has_alignment(&self) -> bool {
        self.aligned.is_some()
    }

    /// The score used for a pair: the aligned variant when it exists and the pair's
    /// alignment is known, else the base model.
    fn pick<'a>(&self, a: Option<&'a Alignment>) -> (&Linear, Option<&'a Alignment>) {
        match (&self.aligned, a) {
            (Some(m), Some(a)) => (m, Some(a)),
            _ => (&self.base, None),
        }
    }

    /// Probability that the pair repeats one action, given its text features and cosine
    /// (the base model: no word alignment).
    pub fn probability(&self, t: &TextFeatures, cosine: f64) -> f64 {
        self.probability_aligned(t, cosine, None)
    }

    /// [`Judge::probability`] with the pair's word alignment when known.
    pub fn probability_aligned(&self, t: &TextFeatures, cosine: f64, a: Option<&Alignment>) -> f64 {
        if t.conflict.is_some() {
            return 0.0;
        }
        let (m, a) = self.pick(a);
        m.calibrated(m.text_score(t) + m.cosine_score(cosine) + a.map_or(0.0, |a| m.align_score(a)))
    }

    /// The highest probability any cosine in [-1, 1] (and any word alignment) could give
    /// this pair, under either variant. Each score is piecewise linear in the cosine (knots
    /// `COSINE_KNOTS`), linear in the alignment features over their box (`ALIGN_RANGE`), and
    /// the calibration monotone, so the maximum is at a knot or an end, and a corner.
    pub fn best_probability(&self, t: &TextFeatures) -> f64 {
        if t.conflict.is_some() {
            return 0.0;
        }
        std::iter::once(&self.base)
            .chain(self.aligned.as_ref())
            .map(|m| m.calibrated(m.text_score(t) + m.best_cosine_score() + m.best_align_score()))
            .fold(0.0, f64::max)
    }

    /// The probability and the features that decided it (the base model).
    pub fn judge(&self, t: &TextFeatures, cosine: f64) -> Judgement {
        self.judge_aligned(t, cosine, None)
    }

    /// The probability and the features that decided it, with the word alignment when known
    /// (then the aligned variant judges, and its features may be named).
    pub fn judge_aligned(&self, t: &TextFeatures, cosine: f64, a: Option<&Alignment>) -> Judgement {
        if let Some(c) = t.conflict {
            return Judgement {
                probability: 0.0,
                deciding: vec![(c.as_str(), f64::NEG_INFINITY)],
            };
        }
        let probability = self.probability_aligned(t, cosine, a);
        let (m, a) = self.pick(a);
        let mut parts: Vec<(&'static str, f64)> = m
            .parts(t, cosine, a)
            .into_iter()
            .filter(|(_, c)| c.abs() >= 0.05)
            .collect();
        parts.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        parts.truncate(3);
        Judgement {
            probability,
            deciding: parts,
        }
    }
}

/// Whether a stored call's free text could still be judged a duplicate of, or borderline to,
/// the query's, whatever the cosine of their embeddings: a pure, cheap (microseconds) test the
/// engine runs before computing an embedding, to skip it when no candidate may match.
///
/// Contract: `false` only when the pair cannot reach the session's borderline threshold (nor
/// the fuzzy stage's match) for any cosine: a hard conflict (a changed number, id, amount,
/// quoted value, swapped direction), or the judge's probability at the best possible cosine
/// below `semantic_borderline`. It never says `false` for a pair the full judge could call a
/// duplicate. Without a loadable model it says `true` (the embedding is then never skipped).
pub fn may_match(query_text: &str, candidate_text: &str, settings: &SessionSettings) -> bool {
    MatchFilter::new(&PreparedText::new(query_text), settings)
        .may_match(&PreparedText::new(candidate_text))
}

/// [`may_match`] for one query against many candidates, on prepared texts: the query is split
/// once, each candidate's text comes prepared from the text cache.
pub struct MatchFilter<'q> {
    query: &'q PreparedText,
    settings: &'q SessionSettings,
}

impl<'q> MatchFilter<'q> {
    /// A filter for `query` under `settings`' thresholds.
    pub fn new(query: &'q PreparedText, settings: &'q SessionSettings) -> Self {
        Self { query, settings }
    }

    /// Whether `candidate` may be the query's original (see [`may_match`]).
    pub fn may_match(&self, candidate: &PreparedText) -> bool {
        // The hard conflicts first: they need only the prepared values and roles, not the
        // whole measurement, and they rule out most candidates of a call that names other
        // values.
        if self.query.conflict_with(candidate).is_some() {
            return false;
        }
        let t = measure_prepared(self.query, candidate);
        if t.conflict.is_some() {
            return false;
        }
        if t.verbatim() && t.x[0] >= self.settings.fuzzy_threshold {
            return true;
        }
        match Judge::shipped() {
            Ok(j) => j.best_probability(&t) >= self.settings.semantic_borderline,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funnel::features::measure;

    fn judge() -> &'static Judge {
        Judge::shipped().expect("the shipped model parses (checked by this test)")
    }

    fn p(a: &str, b: &str, cos: f64) -> f64 {
        judge().probability(&measure(a, b), cos)
    }

    #[test]
    fn shipped_model_loads() {
        assert!(Judge::shipped().is_ok(), "{:?}", Judge::shipped().err());
    }

    // The cosines below are what the shipped embedding model (models/, all-MiniLM-L6-v2) gives
    // these pairs; tests/semantic.rs checks the same cases end to end with the model itself.

    #[test]
    fn moved_phrases_are_repeats_both_ways() {
        let d = SessionSettings::default().semantic_duplicate;
        for (a, b, cos) in [
            (
                "Nightly backup job failed on the billing database",
                "The billing database nightly backup job has failed",
                0.986907,
            ),
            (
                "Please send me the final report for the Q3 audit by Friday",
                "Please send me the Q3 audit final report by Friday",
                0.98088,
            ),
        ] {
            assert!(p(a, b, cos) >= d, "{a} / {b}: {}", p(a, b, cos));
            assert!(p(b, a, cos) >= d, "{b} / {a}: {}", p(b, a, cos));
        }
    }

    #[test]
    fn negation_is_never_a_repeat_both_ways() {
        let s = SessionSettings::default();
        let a = "Please cancel my subscription at the end of this month";
        let b = "Please do not cancel my subscription at the end of this month";
        assert!(p(a, b, 0.983975) < s.semantic_borderline);
        assert!(p(b, a, 0.983975) < s.semantic_borderline);
        // Not even the best possible cosine makes it a duplicate.
        assert!(judge().best_probability(&measure(a, b)) < s.semantic_duplicate);
    }

    #[test]
    fn a_changed_search_term_is_not_a_repeat_both_ways() {
        let s = SessionSettings::default();
        let a = "best libraries and patterns for go connection pooling in production services";
        let b = "best libraries and patterns for onnx connection pooling in production services";
        for (x, y) in [(a, b), (b, a)] {
            let t = measure(x, y);
            // Not settled by the fuzzy ratio: the one content word that differs is judged.
            assert!(!t.verbatim());
            assert!(
                p(x, y, 0.678195) < s.semantic_borderline,
                "{}",
                p(x, y, 0.678195)
            );
        }
    }

    #[test]
    fn a_reworded_phrase_is_judged_not_vetoed_both_ways() {
        let d = SessionSettings::default().semantic_duplicate;
        for (a, b, cos) in [
            (
                "Summarise the best practices for rotating database credentials in our cluster",
                "Summarise the recommended practices for rotating database credentials in our cluster",
                0.993006,
            ),
            (
                "The nightly export to the warehouse stopped without an error. Please investigate.",
                "The nightly export to the warehouse stopped without an error. Please look into it.",
                0.98359,
            ),
        ] {
            assert!(measure(a, b).conflict.is_none());
            assert!(p(a, b, cos) >= d, "{a} / {b}: {}", p(a, b, cos));
            assert!(p(b, a, cos) >= d, "{b} / {a}: {}", p(b, a, cos));
        }
    }

    #[test]
    fn explain_names_the_deciding_feature() {
        let j = judge().judge(
            &measure("cancel my subscription", "do not cancel my subscription"),
            0.97,
        );
        assert!(j.explain().contains("negation_mismatch"), "{}", j.explain());
        let j = judge().judge(&measure("refund order 1234", "refund order 1235"), 0.99);
        assert_eq!(j.probability, 0.0);
        assert!(j.explain().contains("values_differ"));
    }

    proptest::proptest! {
        /// may_match false => no cosine takes the judge to the borderline threshold.
        #[test]
        fn may_match_false_means_never_borderline(
            a in "[a-e ]{0,6}(not |go |to x from y |from y to x |1 |2 )?[a-e ]{0,12}",
            b in "[a-e ]{0,6}(not |go |to x from y |from y to x |1 |2 )?[a-e ]{0,12}",
            cos in -1.0f64..=1.0,
            border in 0.0f64..=1.0,
        ) {
            let s = SessionSettings { semantic_borderline: border, ..SessionSettings::default() };
            if !may_match(&a, &b, &s) {
                let t = measure(&a, &b);
                proptest::prop_assert!(judge().probability(&t, cos) < border);
                proptest::prop_assert!(!(t.verbatim() && t.x[0] >= s.fuzzy_threshold));
            }
        }
    }
}
