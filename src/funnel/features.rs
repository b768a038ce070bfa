//! What the judge measures on a pair of free texts, from the two texts alone.
//!
//! Words are aligned one to one (same word, same stem, or a one-letter typo in a long word);
//! the features describe what the alignment leaves: content words on one side only, the order
//! of the aligned words (a move of one block, as when a phrase is fronted, or a swap, as in
//! "the dog bit the man"), negation, antonyms, names, and the values written in the text.
//! Everything here is a pure function of the two strings and costs microseconds: the engine
//! calls it before any embedding exists (`judge::may_match`).

use super::text::{Conflict, PreparedText, Token, similarity};

/// Words that carry no content of their own: articles, pronouns, auxiliaries, politeness and
/// the commonest prepositions. Verbs such as "go" or "need" are content: deleting them from the
/// comparison can erase the one term two calls differ in.
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "please", "kindly", "can", "could", "would", "will", "shall", "you", "me",
    "i", "we", "us", "it", "this", "that", "these", "those", "is", "are", "was", "were", "be",
    "been", "being", "am", "do", "does", "did", "has", "have", "had", "and", "or", "so", "just",
    "hi", "hello", "hey", "thanks", "thank", "pls", "ok", "okay", "there", "here", "for", "to",
    "of", "in", "on", "at", "by", "with", "from", "as", "into", "my", "our", "your", "his", "her",
    "its", "their", "them", "they", "he", "she", "what", "which", "who", "some", "any", "also",
    "i'd", "i'm", "let's", "let", "it's", "there's",
];

/// Words that negate what follows.
const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nobody",
    "nothing",
    "nowhere",
    "neither",
    "nor",
    "without",
    "cannot",
    "can't",
    "don't",
    "doesn't",
    "didn't",
    "won't",
    "isn't",
    "aren't",
    "wasn't",
    "weren't",
    "shouldn't",
    "wouldn't",
    "couldn't",
    "haven't",
    "hasn't",
    "hadn't",
    "mustn't",
    "n't",
    "nope",
    "dont",
    "cant",
    "wont",
];

/// Opposites: one on each side, unaligned, changes the action.
const ANTONYMS: &[(&str, &str)] = &[
    ("enable", "disable"),
    ("start", "stop"),
    ("open", "close"),
    ("add", "remove"),
    ("increase", "decrease"),
    ("buy", "sell"),
    ("lock", "unlock"),
    ("accept", "reject"),
    ("before", "after"),
    ("upload", "download"),
    ("include", "exclude"),
    ("show", "hide"),
    ("allow", "deny"),
    ("win", "lose"),
    ("push", "pull"),
    ("import", "export"),
    ("first", "last"),
    ("minimum", "maximum"),
    ("min", "max"),
    ("public", "private"),
    ("inside", "outside"),
    ("up", "down"),
    ("above", "below"),
    ("old", "new"),
    ("young", "old"),
    ("big", "small"),
    ("large", "small"),
    ("hot", "cold"),
    ("early", "late"),
    ("high", "low"),
    ("long", "short"),
    ("arrive", "depart"),
    ("enter", "leave"),
    ("sit", "stand"),
    ("asc", "desc"),
    ("ascending", "descending"),
    ("north", "south"),
    ("east", "west"),
    ("more", "less"),
    ("subscribe", "unsubscribe"),
    ("follow", "unfollow"),
    ("on", "off"),
    ("in", "out"),
    ("cheap", "expensive"),
    ("cheapest", "expensive"),
    ("true", "false"),
    ("yes", "no"),
    ("connect", "disconnect"),
    ("mute", "unmute"),
    ("install", "uninstall"),
    ("pause", "resume"),
    ("approve", "decline"),
    ("credit", "debit"),
    ("deposit", "withdraw"),
    ("send", "receive"),
    ("give", "take"),
    ("incoming", "outgoing"),
    ("inbound", "outbound"),
    ("men", "women"),
    ("man", "woman"),
    ("boy", "girl"),
    ("day", "night"),
    ("left", "right"),
    ("top", "bottom"),
    ("white", "black"),
    ("empty", "full"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("wet", "dry"),
    ("near", "far"),
    ("front", "behind"),
    ("front", "back"),
    ("under", "over"),
    ("inner", "outer"),
    ("forward", "backward"),
    ("rise", "fall"),
    ("gain", "loss"),
    ("success", "failure"),
    ("succeed", "fail"),
    ("onto", "off"),
    ("into", "out"),
];

/// Feature names, in the order of `TextFeatures::x` (the judge's model names them the same).
pub const TEXT_FEATURES: &[&str] = &[
    "fuzzy",
    "content_aligned",
    "substituted",
    "added",
    "block_move",
    "swap",
    "discordance",
    "negation_mismatch",
    "antonym",
    "names_differ",
    "length_ratio",
    "voice_flip_swap",
    "values_added",
    "swap_alone",
];

/// Number of text features.
pub const N_TEXT: usize = 14;

/// Most one-sided values counted (`values_added`).
const VALUES_CAP: usize = 3;

/// The text features of a pair, and a hard conflict if the texts name different values.
#[derive(Debug, Clone, PartialEq)]
pub struct TextFeatures {
    /// Values in the order of `TEXT_FEATURES`.
    pub x: [f64; N_TEXT],
    /// A reason the two texts cannot be one action whatever the scores: numbers, amounts,
    /// emails, URLs, dates or quoted values changed, or two values swap directional roles.
    /// (Values written on one side only are not a conflict: `values_added` counts them.)
    pub conflict: Option<Conflict>,
}

impl TextFeatures {
    /// Value of the feature named `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        TEXT_FEATURES
            .iter()
            .position(|n| *n == name)
            .map(|i| self.x[i])
    }

    /// Every content word aligned, in the same order, with the same polarity and names: the
    /// texts differ only in function words, punctuation, casing, inflection or a typo. Only
    /// such a pair may be settled by the fuzzy ratio alone, without the judge.
    pub fn verbatim(&self) -> bool {
        self.conflict.is_none()
            && self.x[2] == 0.0
            && self.x[3] == 0.0
            && self.x[4] == 0.0
            && self.x[5] == 0.0
            && self.x[7] == 0.0
            && self.x[8] == 0.0
            && self.x[9] == 0.0
            && self.x[12] == 0.0
    }
}

/// `FUNCTION_WORDS` as a set: every token of every compared text is looked up.
static FUNCTION_SET: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| FUNCTION_WORDS.iter().copied().collect());

pub(super) fn is_function(w: &str) -> bool {
    FUNCTION_SET.contains(w)
}

fn is_negation(w: &str) -> bool {
    NEGATIONS.contains(&w) || w.ends_with("n't")
}

/// A crude suffix stem: enough to align "reports"/"report", "failed"/"fail", "booking"/"book",
/// and, with a doubled final consonant undone, "sitting"/"sit", "stopped"/"stop".
fn stem(w: &str) -> &str {
    for suf in ["ing", "ies", "ed", "es", "ly", "s"] {
        if let Some(s) = w.strip_suffix(suf)
            && s.chars().count() >= 3
        {
            return undouble(s, suf);
        }
    }
    w
}

/// "sitt" (from "sitting") -> "sit": a doubled final consonant before "ing" or "ed".
fn undouble<'a>(s: &'a str, suffix: &str) -> &'a str {
    let b = s.as_bytes();
    let n = b.len();
    if matches!(suffix, "ing" | "ed")
        && n >= 4
        && b[n - 1] == b[n - 2]
        && b[n - 1].is_ascii_alphabetic()
        && !b"aeiouslz".contains(&b[n - 1])
    {
        &s[..n - 1]
    } else {
        s
    }
}

/// The stem, and for comparatives and superlatives the positive form ("higher" -> "high"),
/// for antonym look-ups only (stripping "er" for alignment would merge "order" and "ord").
fn degree_stem(w: &str) -> &str {
    for suf in ["est", "er"] {
        if let Some(s) = w.strip_suffix(suf)
            && s.chars().count() >= 3
        {
            return s;
        }
    }
    stem(w)
}

/// Edit distance at most one (a typo), for words of six letters or more.
fn one_typo(a: &str, b: &str) -> bool {
    let (na, nb) = (a.chars().count(), b.chars().count());
    if na.min(nb) < 6 || na.abs_diff(nb) > 1 || a == b {
        return a == b && na >= 6;
    }
    let (ca, cb): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (mut i, mut j, mut edits) = (0, 0, 0);
    while i < ca.len() && j < cb.len() {
        if ca[i] == cb[j] {
            i += 1;
            j += 1;
            continue;
        }
        edits += 1;
        if edits > 1 {
            return false;
        }
        match ca.len().cmp(&cb.len()) {
            std::cmp::Ordering::Greater => i += 1,
            std::cmp::Ordering::Less => j += 1,
            std::cmp::Ordering::Equal => {
                // A transposition counts as one edit.
                if i + 1 < ca.len() && ca[i] == cb[j + 1] && ca[i + 1] == cb[j] {
                    i += 2;
                    j += 2;
                } else {
                    i += 1;
                    j += 1;
                }
            }
        }
    }
    edits + (ca.len() - i) + (cb.len() - j) <= 1
}

/// The words of `x` that occur more often in `x` than in `y`, each once.
fn surplus<'a>(x: &[&'a str], y: &[&str]) -> Vec<&'a str> {
    let count = |ws: &[&str], w: &str| ws.iter().filter(|v| **v == w).count();
    let mut out: Vec<&'a str> = Vec::new();
    for w in x {
        if !out.contains(w) && count(x, w) > count(y, w) {
            out.push(w);
        }
    }
    out
}

/// `ANTONYMS` stemmed once (every unmatched pair of words is looked up).
static ANTONYM_STEMS: std::sync::LazyLock<Vec<(&'static str, &'static str)>> =
    std::sync::LazyLock::new(|| ANTONYMS.iter().map(|(x, y)| (stem(x), stem(y))).collect());

fn antonyms(a: &str, b: &str) -> bool {
    let forms = |w| [stem(w), degree_stem(w)];
    let (fa, fb) = (forms(a), forms(b));
    ANTONYM_STEMS
        .iter()
        .any(|(x, y)| (fa.contains(x) && fb.contains(y)) || (fa.contains(y) && fb.contains(x)))
}

/// A way word `i` of a and word `j` of b may align.
type Aligns<'a> = dyn Fn(usize, usize) -> bool + 'a;

/// Content-word alignment: for each content word of `a`, the index (among `b`'s content
/// words) it aligns with, if any. Exact matches first, then stems, then typos; among several
/// candidates the one closest in relative position.
fn align(a: &[&str], b: &[&str]) -> Vec<Option<usize>> {
    let mut out = vec![None; a.len()];
    let mut used = vec![false; b.len()];
    let rel = |i: usize, n: usize| {
        if n <= 1 {
            0.0
        } else {
            i as f64 / (n - 1) as f64
        }
    };
    // Each word's stem once, not once per pair.
    let (sa, sb): (Vec<&str>, Vec<&str>) = (
        a.iter().map(|w| stem(w)).collect(),
        b.iter().map(|w| stem(w)).collect(),
    );
    let passes: [&Aligns; 3] = [&|i, j| a[i] == b[j], &|i, j| sa[i] == sb[j], &|i, j| {
        one_typo(a[i], b[j])
    }];
    for pass in passes {
        for (i, slot) in out.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let mut best: Option<(f64, usize)> = None;
            for (j, taken) in used.iter().enumerate() {
                if *taken || !pass(i, j) {
                    continue;
                }
                let d = (rel(i, a.len()) - rel(j, b.len())).abs();
                if best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, j));
                }
            }
            if let Some((_, j)) = best {
                *slot = Some(j);
                used[j] = true;
            }
        }
    }
    out
}

/// Order of the aligned words: (block move, swap, discordance). `seq` holds, in a's order,
/// the b-positions of the aligned words. A block move is one contiguous stretch moved as a
/// whole ("the billing database nightly backup job" / "nightly backup job ... billing
/// database"): two adjacent blocks exchanged, at least one of them longer than a word. Any
/// other disorder is a swap.
fn order(seq: &[usize]) -> (bool, bool, f64) {
    let n = seq.len();
    if n < 2 {
        return (false, false, 0.0);
    }
    // Ranks 0..n in a's order.
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by_key(|&i| seq[i]);
    let mut rank = vec![0usize; n];
    for (r, &i) in idx.iter().enumerate() {
        rank[i] = r;
    }
    let mut discordant = 0usize;
    for i in 0..n {
        for j in i + 1..n {
            if rank[i] > rank[j] {
                discordant += 1;
            }
        }
    }
    if discordant == 0 {
        return (false, false, 0.0);
    }
    let disc = discordant as f64 / (n * (n - 1) / 2) as f64;
    // One adjacent block interchange: identity outside [lo, hi), and inside, the ranks
    // m..hi then lo..m, each run consecutive.
    let lo = (0..n).find(|&i| rank[i] != i).unwrap_or(0);
    let hi = (0..n).rev().find(|&i| rank[i] != i).map_or(n, |i| i + 1);
    let m = rank[lo];
    let first_len = hi - m;
    let interchange = m > lo
        && (0..first_len).all(|k| rank[lo + k] == m + k)
        && (0..m - lo).all(|k| rank[lo + first_len + k] == lo + k);
    // Two single words exchanged ("the Earth to the Moon" / "the Moon to the Earth") is a
    // swap of roles, not a moved phrase.
    let block = interchange && !(first_len == 1 && m - lo == 1);
    (block, !block, disc)
}

/// A passive clause: a form of "be" followed (within two words) by a participle, then "by".
fn passive(t: &[Token<'_>]) -> bool {
    let be = ["is", "are", "was", "were", "be", "been", "being"];
    let has_by = t.iter().any(|x| x.lower == "by");
    has_by
        && t.windows(3).any(|w| {
            be.contains(&w[0].lower)
                && (w[1].lower.ends_with("ed")
                    || w[1].lower.ends_with("en")
                    || w[2].lower.ends_with("ed")
                    || w[2].lower.ends_with("en"))
        })
}

/// Measures a pair of free texts.
pub fn measure(a: &str, b: &str) -> TextFeatures {
    measure_prepared(&PreparedText::new(a), &PreparedText::new(b))
}

/// [`measure`] on texts already prepared (a query compared with many candidates is split
/// once, a candidate's text is kept prepared in the text cache).
pub fn measure_prepared(a: &PreparedText, b: &PreparedText) -> TextFeatures {
    let (ta, tb) = (a.tokens().tokens(), b.tokens().tokens());
    let (ta, tb) = (ta.as_slice(), tb.as_slice());
    let fuzzy = similarity(a.fuzzy_form(), b.fuzzy_form());
    let conflict = a.conflict_with(b);
    let (only_a, only_b) = a.value_surplus(b);
    let values_added = only_a.max(only_b).min(VALUES_CAP) as f64;
    // Negations are aligned with the content words: where a "not" stands is part of the
    // word order ("does not exist" / "does exist not" is a swap).
    let content = |t: &[Token<'_>]| -> Vec<usize> {
        (0..t.len()).filter(|&i| !is_function(t[i].lower)).collect()
    };
    let (ca, cb) = (content(ta), content(tb));
    let wa: Vec<&str> = ca.iter().map(|&i| ta[i].lower).collect();
    let wb: Vec<&str> = cb.iter().map(|&i| tb[i].lower).collect();
    let al = align(&wa, &wb);
    let matched = al.iter().filter(|x| x.is_some()).count();
    let total = wa.len() + wb.len();
    let content_aligned = if total == 0 {
        1.0
    } else {
        2.0 * matched as f64 / total as f64
    };
    let mut used_b = vec![false; wb.len()];
    for j in al.iter().flatten() {
        used_b[*j] = true;
    }
    let un_a: Vec<&str> = (0..wa.len())
        .filter(|&i| al[i].is_none())
        .map(|i| wa[i])
        .collect();
    let un_b: Vec<&str> = (0..wb.len())
        .filter(|&j| !used_b[j])
        .map(|j| wb[j])
        .collect();
    let substituted = un_a.len().min(un_b.len()).min(4) as f64;
    let added = (un_a.len().max(un_b.len()) - un_a.len().min(un_b.len())).min(4) as f64;
    let seq: Vec<usize> = al.iter().flatten().copied().collect();
    let (block, swap, disc) = order(&seq);
    let neg = |t: &[Token<'_>]| t.iter().filter(|x| is_negation(x.lower)).count() % 2;
    let negation_mismatch = f64::from(u8::from(neg(ta) != neg(tb)));
    // Antonyms among all words (function words such as "in"/"out" included): a word more
    // often in a than in b facing its opposite more often in b than in a. Counts, not mere
    // presence: "from the first record ... the first 50" / "from the last record ... the
    // first 50" replaces one "first" of two.
    let all_a: Vec<&str> = ta.iter().map(|t| t.lower).collect();
    let all_b: Vec<&str> = tb.iter().map(|t| t.lower).collect();
    let (more_a, more_b) = (surplus(&all_a, &all_b), surplus(&all_b, &all_a));
    let antonym = more_a.iter().any(|x| more_b.iter().any(|y| antonyms(x, y)));
    let names = |x: &[Token<'_>], other: &[Token<'_>]| {
        x.iter()
            .any(|t| t.name_like && !other.iter().any(|o| o.lower == t.lower))
    };
    let names_differ = names(ta, tb) || names(tb, ta);
    let (la, lb) = (ta.len(), tb.len());
    let length_ratio = if la.max(lb) == 0 {
        1.0
    } else {
        la.min(lb) as f64 / la.max(lb) as f64
    };
    let voice_flip = passive(ta) != passive(tb);
    let b2f = |b: bool| f64::from(u8::from(b));
    TextFeatures {
        x: [
            fuzzy,
            content_aligned,
            substituted,
            added,
            b2f(block),
            b2f(swap),
            disc,
            negation_mismatch,
            b2f(antonym),
            b2f(names_differ),
            length_ratio,
            b2f(swap && voice_flip),
            values_added,
            b2f(swap && un_a.is_empty() && un_b.is_empty()),
        ],
        conflict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(a: &str, b: &str, name: &str) -> f64 {
        measure(a, b).get(name).unwrap_or(f64::NAN)
    }

    #[test]
    fn a_moved_phrase_is_a_block_move_and_a_role_swap_is_not() {
        let (a, b) = (
            "Nightly backup job failed on the billing database",
            "The billing database nightly backup job has failed",
        );
        assert_eq!(f(a, b, "block_move"), 1.0);
        assert_eq!(f(a, b, "swap"), 0.0);
        assert_eq!(f("the dog bit the man", "the man bit the dog", "swap"), 1.0);
        assert_eq!(
            f(
                "Two girls are playing guitar",
                "girls Two are playing guitar",
                "swap"
            ),
            1.0
        );
        assert_eq!(
            f(
                "Please send me the final report for the Q3 audit by Friday",
                "Please send me the Q3 audit final report by Friday",
                "block_move"
            ),
            1.0
        );
    }

    #[test]
    fn negation_and_antonyms_are_seen() {
        let a = "Please cancel my subscription at the end of this month";
        let b = "Please do not cancel my subscription at the end of this month";
        assert_eq!(f(a, b, "negation_mismatch"), 1.0);
        assert_eq!(f(b, a, "negation_mismatch"), 1.0);
        assert_eq!(f("enable the alarm", "disable the alarm", "antonym"), 1.0);
        assert_eq!(
            f("enable the alarm", "enable the alarm now", "antonym"),
            0.0
        );
    }

    #[test]
    fn go_is_content() {
        let t = measure(
            "search the web for go connection pooling",
            "search the web for onnx connection pooling",
        );
        assert_eq!(t.get("substituted"), Some(1.0));
        assert!(!t.verbatim());
    }

    #[test]
    fn values_and_directions_are_hard_conflicts() {
        assert_eq!(
            measure("refund order 1234", "refund order 1235").conflict,
            Some(Conflict::Values)
        );
        assert_eq!(
            measure("find flights from NYC to LA", "find flights from LA to NYC").conflict,
            Some(Conflict::Swap)
        );
        assert_eq!(
            measure("Please investigate.", "Please look into it.").conflict,
            None
        );
    }

    #[test]
    fn a_value_on_one_side_is_weighed_not_vetoed_both_ways() {
        let (a, b) = (
            "Iranian nuclear talks to be extended to November",
            "Iran nuclear talks extended to November 24",
        );
        for (x, y) in [(a, b), (b, a)] {
            let t = measure(x, y);
            assert_eq!(t.conflict, None);
            assert_eq!(t.get("values_added"), Some(1.0));
            assert!(!t.verbatim());
        }
        assert!(!measure("book rooms in Paris", "book 2 rooms in Paris").verbatim());
    }

    #[test]
    fn a_swap_alone_is_told_from_a_reworded_swap() {
        let t = measure("the dog bit the man", "the man bit the dog");
        assert_eq!((t.get("swap"), t.get("swap_alone")), (Some(1.0), Some(1.0)));
        let t = measure(
            "Israel expands subsidies to settlements",
            "Israel widens settlement subsidies",
        );
        assert_eq!((t.get("swap"), t.get("swap_alone")), (Some(1.0), Some(0.0)));
    }

    #[test]
    fn a_moved_negation_is_a_swap() {
        assert_eq!(f("God does not exist", "God does exist not", "swap"), 1.0);
        assert_eq!(
            f("the job did not fail", "the job did not fail", "swap"),
            0.0
        );
    }

    #[test]
    fn antonyms_count_words_and_see_degrees() {
        // One "first" of two replaced by "last".
        let a = "review the log from the first record and show the first 50 entries";
        let b = "review the log from the last record and show the first 50 entries";
        assert_eq!(f(a, b, "antonym"), 1.0);
        assert_eq!(f(b, a, "antonym"), 1.0);
        assert_eq!(
            f("shares close higher", "shares close lower", "antonym"),
            1.0
        );
        assert_eq!(f("a high shelf", "a higher shelf", "antonym"), 0.0);
    }

    #[test]
    fn inflections_and_typos_align() {
        assert!(measure("a man sitting on a bench", "a man sits on a bench").verbatim());
        let t = measure(
            "Send the quarterly reports to finance",
            "send the quartrly report to finance!",
        );
        assert!(t.verbatim(), "{t:?}");
    }
}
