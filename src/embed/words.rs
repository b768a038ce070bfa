//! Word vectors: one unit vector per word of a text, from the model's token states.
//!
//! The forward pass that makes a sentence embedding computes a state per word piece (the last
//! hidden layer, which the sentence vector is the mean of). A word's vector is the mean of its
//! pieces' states, kept as int8 (one scale per word, folded into its inverse norm): about 400
//! bytes a word, against 1.5 KB in f32, and cosines within about 1e-2 of the f32 ones. The
//! judge aligns the words of two texts with them (`funnel::alignment`).

/// The words of one text with their vectors (int8, `dim` values each).
#[derive(Debug, Clone, PartialEq)]
pub struct WordVectors {
    dim: usize,
    /// Lowercased words, in text order.
    words: Vec<Box<str>>,
    /// `dim` quantised values per word, word after word.
    values: Vec<i8>,
    /// Per word, 1 / the L2 norm of its quantised values (0 for a zero vector).
    inv_norms: Vec<f32>,
}

impl WordVectors {
    /// Words and their f32 vectors (any norm), `dim` values each; the vectors are quantised.
    pub fn new(dim: usize, words: Vec<Box<str>>, vectors: &[f32]) -> Self {
        debug_assert_eq!(vectors.len(), words.len() * dim);
        let mut values = Vec::with_capacity(words.len() * dim);
        let mut inv_norms = Vec::with_capacity(words.len());
        for v in vectors.chunks_exact(dim.max(1)).take(words.len()) {
            let peak = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let scale = if peak > 0.0 && peak.is_finite() {
                127.0 / peak
            } else {
                0.0
            };
            let start = values.len();
            values.extend(
                v.iter()
                    .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8),
            );
            let norm = values[start..]
                .iter()
                .map(|&q| f32::from(q) * f32::from(q))
                .sum::<f32>()
                .sqrt();
            inv_norms.push(if norm > 0.0 { 1.0 / norm } else { 0.0 });
        }
        Self {
            dim,
            words,
            values,
            inv_norms,
        }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.inv_norms.len()
    }

    /// Whether there is no word.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Word `i`, lowercased.
    pub fn word(&self, i: usize) -> &str {
        &self.words[i]
    }

    fn row(&self, i: usize) -> &[i8] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Cosine of word `i` here and word `j` of `other` (0 when a vector is zero or the
    /// dimensions differ).
    pub fn cosine(&self, i: usize, other: &WordVectors, j: usize) -> f32 {
        if self.dim != other.dim {
            return 0.0;
        }
        let dot: i32 = self
            .row(i)
            .iter()
            .zip(other.row(j))
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        dot as f32 * self.inv_norms[i] * other.inv_norms[j]
    }

    /// Keeps only the words for which `keep` holds (the judge keeps content words).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let (mut words, mut values, mut inv) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.len() {
            if keep(&self.words[i]) {
                words.push(self.words[i].clone());
                values.extend_from_slice(self.row(i));
                inv.push(self.inv_norms[i]);
            }
        }
        self.words = words;
        self.values = values;
        self.inv_norms = inv;
    }

    /// Heap bytes held (for the cache's documented cost).
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity()
            + self.inv_norms.capacity() * 4
            + self.words.capacity() * std::mem::size_of::<Box<str>>()
            + self.words.iter().map(|w| w.len()).sum::<usize>()
    }
}

/// Mean of the word-piece states per word: `states` holds `dim` values per piece, `word_of`
/// the word index of each piece (`None` for special tokens and padding), `spans` each word's
/// byte range in `text`. Words without a letter or digit (punctuation) are dropped.
pub fn pool_words(
    text: &str,
    dim: usize,
    states: &[f32],
    word_of: &[Option<u32>],
    spans: &[(usize, usize)],
) -> WordVectors {
    // Words in order of first appearance, with their byte span and piece sum.
    let mut order: Vec<u32> = Vec::new();
    let mut sums: Vec<Vec<f32>> = Vec::new();
    let mut counts: Vec<u32> = Vec::new();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (p, w) in word_of.iter().enumerate() {
        let Some(w) = *w else { continue };
        let Some(state) = states.get(p * dim..(p + 1) * dim) else {
            break;
        };
        let k = match order.iter().position(|&x| x == w) {
            Some(k) => k,
            None => {
                order.push(w);
                sums.push(vec![0.0; dim]);
                counts.push(0);
                ranges.push(spans.get(p).copied().unwrap_or((0, 0)));
                order.len() - 1
            }
        };
        for (s, x) in sums[k].iter_mut().zip(state) {
            *s += x;
        }
        counts[k] += 1;
        if let Some(&(_, end)) = spans.get(p) {
            ranges[k].1 = ranges[k].1.max(end);
        }
    }
    let mut words = Vec::new();
    let mut flat = Vec::new();
    for k in 0..order.len() {
        let (start, end) = ranges[k];
        let word = text.get(start..end).unwrap_or("").to_lowercase();
        if !word.chars().any(char::is_alphanumeric) {
            continue;
        }
        let n = counts[k].max(1) as f32;
        flat.extend(sums[k].iter().map(|s| s / n));
        words.push(word.into_boxed_str());
    }
    WordVectors::new(dim, words, &flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantised_cosines_stay_close_to_f32() {
        let dim = 384;
        let a: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..dim)
            .map(|i| (i as f32 * 0.37).sin() + 0.5 * (i as f32 * 0.11).cos())
            .collect();
        let exact = {
            let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (n(&a) * n(&b))
        };
        let flat: Vec<f32> = a.iter().chain(&b).copied().collect();
        let w = WordVectors::new(dim, vec!["a".into(), "b".into()], &flat);
        assert!((w.cosine(0, &w, 1) - exact).abs() < 1e-2, "{exact}");
        assert!((w.cosine(0, &w, 0) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn pieces_pool_into_words_and_punctuation_is_dropped() {
        // "Hi, unbelievable": [CLS] hi , un ##believ ##able [SEP]
        let text = "Hi, unbelievable";
        let states: Vec<f32> = [0., 0., 1., 0., 0., 1., 2., 4., 3., 6., 5., 8., 0., 0.].to_vec();
        let word_of = [None, Some(0), Some(1), Some(2), Some(2), Some(2), None];
        let spans = [(0, 0), (0, 2), (2, 3), (4, 6), (6, 11), (11, 16), (0, 0)];
        let w = pool_words(text, 2, &states, &word_of, &spans);
        assert_eq!(w.len(), 2);
        assert_eq!(w.word(0), "hi");
        assert_eq!(w.word(1), "unbelievable");
        // Mean of (2,4), (3,6), (5,8) = (3.33, 6): the direction of (1, 1.8).
        let probe = WordVectors::new(2, vec!["p".into()], &[1.0, 1.8]);
        assert!((w.cosine(1, &probe, 0) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn retain_keeps_the_chosen_words_and_their_vectors() {
        let flat = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut w = WordVectors::new(2, vec!["the".into(), "cat".into(), "sat".into()], &flat);
        let before = w.cosine(1, &w, 2);
        w.retain(|x| x != "the");
        assert_eq!(w.len(), 2);
        assert_eq!(w.word(0), "cat");
        assert!((w.cosine(0, &w, 1) - before).abs() < 1e-6);
    }
}
