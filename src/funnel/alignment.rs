//! Word alignment from the model's token states (BERTScore-like): how well each content word
//! of one text is matched by some content word of the other, in context.
//!
//! The string alignment of `funnel::features` sees "woman" / "lady" as a substituted word,
//! like "man" / "woman"; the token states tell them apart (a synonym in the same context lies
//! closer than a word of another meaning). The features are pure functions of the two texts'
//! word vectors (`embed::WordVectors`, from the same forward pass as the sentence embedding)
//! and cost microseconds: a cosine per pair of content words.

use serde::{Deserialize, Serialize};

use super::features::is_function;
use crate::embed::WordVectors;

/// Names of the alignment features, in model order.
pub const ALIGN_FEATURES: [&str; N_ALIGN] = ["align_min", "align_mean", "align_low", "align_order"];

/// Number of alignment features.
pub const N_ALIGN: usize = 4;

/// A content word whose best match on the other side is below this cosine counts as
/// unmatched (`align_low`).
pub const LOW_FLOOR: f64 = 0.5;

/// Most unmatched words counted.
const LOW_CAP: f64 = 4.0;

/// Range of each feature (low, high): the judge's best probability over all values of the
/// features is at a corner of this box.
pub const ALIGN_RANGE: [(f64, f64); N_ALIGN] =
    [(-1.0, 1.0), (-1.0, 1.0), (0.0, LOW_CAP), (0.0, 1.0)];

/// The content words of two texts and the cosine of every pair of them: all the alignment
/// features need, computed once from the word vectors (training stores it beside each pair).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordSims {
    /// Content words of a, in order.
    pub a: Vec<String>,
    /// Content words of b, in order.
    pub b: Vec<String>,
    /// Row-major `a.len() x b.len()` cosines.
    pub sims: Vec<f32>,
}

/// Whether the alignment looks at `word` (a content word, not a function word): the only
/// words whose vectors are worth keeping.
pub fn is_content_word(word: &str) -> bool {
    !is_function(word)
}

impl WordSims {
    /// The cosines between the content words of `a` and of `b`.
    pub fn between(a: &WordVectors, b: &WordVectors) -> Self {
        let ia: Vec<usize> = (0..a.len()).filter(|&i| !is_function(a.word(i))).collect();
        let ib: Vec<usize> = (0..b.len()).filter(|&j| !is_function(b.word(j))).collect();
        let mut sims = Vec::with_capacity(ia.len() * ib.len());
        for &i in &ia {
            for &j in &ib {
                sims.push(a.cosine(i, b, j));
            }
        }
        Self {
            a: ia.iter().map(|&i| a.word(i).to_string()).collect(),
            b: ib.iter().map(|&j| b.word(j).to_string()).collect(),
            sims,
        }
    }

    fn sim(&self, i: usize, j: usize) -> f64 {
        f64::from(self.sims.get(i * self.b.len() + j).copied().unwrap_or(0.0))
    }

    /// The same pair seen from b.
    pub fn reversed(&self) -> Self {
        let mut sims = Vec::with_capacity(self.sims.len());
        for j in 0..self.b.len() {
            for i in 0..self.a.len() {
                sims.push(self.sim(i, j) as f32);
            }
        }
        Self {
            a: self.b.clone(),
            b: self.a.clone(),
            sims,
        }
    }
}

/// The alignment features of a pair, and the word that matched worst (for explanations).
#[derive(Debug, Clone, PartialEq)]
pub struct Alignment {
    /// Values in the order of `ALIGN_FEATURES`.
    pub x: [f64; N_ALIGN],
    /// The content word with the lowest best match, and that cosine.
    pub worst: Option<(String, f64)>,
}

/// Measures the alignment of a pair from its word cosines.
///
/// For each content word on either side, its best cosine to a content word of the other side;
/// `align_min` is the lowest (a word the other text has nothing close to), `align_mean` their
/// mean, `align_low` how many fall below `LOW_FLOOR`; `align_order` is the share of discordant
/// pairs among a's words' best matches in b (a swap of two words keeps every match and breaks
/// their order). With no content word on a side, the features say "fully aligned".
pub fn align(s: &WordSims) -> Alignment {
    let (na, nb) = (s.a.len(), s.b.len());
    if na == 0 || nb == 0 {
        let empty = na == 0 && nb == 0;
        return Alignment {
            x: if empty {
                [1.0, 1.0, 0.0, 0.0]
            } else {
                [0.0, 0.0, (na + nb).min(4) as f64, 0.0]
            },
            worst: None,
        };
    }
    // Best match of each word of a (in b) and of each word of b (in a).
    let best_a: Vec<(usize, f64)> = (0..na)
        .map(|i| {
            (0..nb)
                .map(|j| (j, s.sim(i, j)))
                .fold((0, f64::NEG_INFINITY), |m, x| if x.1 > m.1 { x } else { m })
        })
        .collect();
    let best_b: Vec<f64> = (0..nb)
        .map(|j| {
            (0..na)
                .map(|i| s.sim(i, j))
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();
    let all: Vec<(&str, f64)> = best_a
        .iter()
        .enumerate()
        .map(|(i, (_, c))| (s.a[i].as_str(), *c))
        .chain(
            best_b
                .iter()
                .enumerate()
                .map(|(j, c)| (s.b[j].as_str(), *c)),
        )
        .collect();
    let worst = all
        .iter()
        .fold(None::<(&str, f64)>, |m, &(w, c)| match m {
            Some((_, mc)) if mc <= c => m,
            _ => Some((w, c)),
        })
        .map(|(w, c)| (w.to_string(), c));
    let min = worst.as_ref().map_or(1.0, |w| w.1);
    let mean = all.iter().map(|x| x.1).sum::<f64>() / all.len() as f64;
    let low = all.iter().filter(|x| x.1 < LOW_FLOOR).count() as f64;
    let seq: Vec<usize> = best_a.iter().map(|(j, _)| *j).collect();
    let (mut discordant, mut pairs) = (0usize, 0usize);
    for i in 0..seq.len() {
        for k in i + 1..seq.len() {
            if seq[i] != seq[k] {
                pairs += 1;
                discordant += usize::from(seq[i] > seq[k]);
            }
        }
    }
    let order = if pairs == 0 {
        0.0
    } else {
        discordant as f64 / pairs as f64
    };
    Alignment {
        x: [min, mean, low.min(LOW_CAP), order],
        worst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sims(a: &[&str], b: &[&str], m: &[f32]) -> WordSims {
        WordSims {
            a: a.iter().map(|s| s.to_string()).collect(),
            b: b.iter().map(|s| s.to_string()).collect(),
            sims: m.to_vec(),
        }
    }

    #[test]
    fn the_worst_matched_word_decides_the_minimum() {
        // woman/lady 0.8, slicing/slicing 0.95, onion/onion 0.97.
        let s = sims(
            &["woman", "slicing", "onion"],
            &["lady", "slicing", "onion"],
            &[0.8, 0.3, 0.2, 0.3, 0.95, 0.4, 0.2, 0.4, 0.97],
        );
        let a = align(&s);
        assert!((a.x[0] - 0.8).abs() < 1e-6);
        assert_eq!(a.x[2], 0.0);
        assert_eq!(a.x[3], 0.0);
        assert_eq!(a.worst.as_ref().map(|w| w.0.as_str()), Some("woman"));
        // Symmetric in the two sides.
        assert_eq!(align(&s.reversed()).x, a.x);
    }

    #[test]
    fn a_swap_keeps_the_matches_and_breaks_their_order() {
        let s = sims(
            &["dog", "bit", "man"],
            &["man", "bit", "dog"],
            &[0.2, 0.3, 0.9, 0.3, 0.9, 0.3, 0.9, 0.3, 0.2],
        );
        let a = align(&s);
        assert!(a.x[0] > 0.85);
        assert_eq!(a.x[3], 1.0);
    }

    #[test]
    fn unmatched_words_are_counted_and_empty_texts_align() {
        let s = sims(&["cat", "sleeps"], &["truck"], &[0.1, 0.2]);
        let a = align(&s);
        assert_eq!(a.x[2], 3.0);
        assert!(a.x[0] < 0.2);
        assert_eq!(align(&sims(&[], &[], &[])).x, [1.0, 1.0, 0.0, 0.0]);
        assert_eq!(align(&sims(&["cat"], &[], &[])).x[2], 1.0);
    }
}
