//! Comparing two free texts: how similar, and whether they name different things.
//!
//! Similarity of prose is only evidence of a repeat when nothing in the prose says the two
//! calls act on different things. Before any score can settle a duplicate, `compare` looks for:
//! - **value conflicts** (hard): the numbers, amounts, emails, URLs or dates written in the two
//!   texts differ; a proper name in one is absent from the other; the word filling a slot
//!   after a role word ("to Alice" vs "to Bob", "my order" vs "my subscription") differs;
//!   two values swap roles ("from NYC to LA" vs "from LA to NYC");
//! - **reordering** (soft): the same words in another order. Word order changes meaning as often
//!   as not ("the dog bit the man"), so such a pair can be at most borderline.
//!
//! The similarity itself is normalized Levenshtein over the normalised text: order-aware (unlike
//! a token-set measure, which scores a swap as identical), and not biased toward long shared
//! prefixes (unlike Jaro-Winkler, which scores two prompts that start alike as near-equal).

use std::collections::HashMap;

/// Tokens compared at most (the model reads about 256 word pieces; diffs are O(n·m)).
const MAX_TOKENS: usize = 200;

/// Words after which the next word fills a slot whose value matters.
const ROLE_WORDS: &[&str] = &[
    "from", "to", "into", "onto", "towards", "toward", "via", "for", "with", "at", "on", "in",
    "by", "about", "of", "between", "and", "my", "your", "our", "their", "his", "her", "its",
    "named", "called", "titled", "id", "number",
];

/// Directional prepositions: the value after them is a role (source, destination).
const DIRECTIONAL: &[&str] = &["from", "to", "into", "onto", "towards", "toward", "via"];

/// Words that carry no slot value.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "please", "kindly", "can", "could", "would", "will", "you", "me", "i", "we",
    "us", "it", "this", "that", "is", "are", "be", "do", "and", "or", "so", "just", "now", "also",
    "then", "up", "out", "some", "all", "hi", "hello", "hey", "thanks", "thank", "pls", "ok",
    "okay", "there", "here", "for", "to", "of", "my", "our", "your", "need", "want", "like", "i'd",
    "i'm", "let's", "go", "ahead", "quickly", "asap",
];

/// At most this many replaced spans make a near-copy: one text edited in a few places, where
/// any content word that changed is a changed value.
const NEAR_COPY_MAX_REPLACEMENTS: usize = 2;
/// ... and the words the two share cover at least this share of the longer text.
const NEAR_COPY_MIN_SHARED: f64 = 0.7;

/// Why two texts cannot be the same action, whatever their similarity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Numbers, amounts, emails, URLs or dates differ.
    Values,
    /// A proper name appears in one text only.
    Names,
    /// A slot after a role word holds a different value.
    Slot,
    /// Two values swap roles.
    Swap,
}

impl Conflict {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Conflict::Values => "values_differ",
            Conflict::Names => "names_differ",
            Conflict::Slot => "slot_differs",
            Conflict::Swap => "roles_swapped",
        }
    }
}

/// How two free texts relate.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// Normalized Levenshtein similarity of the normalised texts, in [0, 1].
    pub similarity: f64,
    /// A reason the texts name different things, if any.
    pub conflict: Option<Conflict>,
    /// Mostly the same words in another order.
    pub reordered: bool,
}

/// A token with its original casing kept for name detection.
#[derive(Debug, Clone)]
struct Token {
    lower: String,
    /// Capitalised (or all-caps) word not at the start of a sentence.
    name_like: bool,
    /// Carries a value: digits, `@`, `://`, a currency sign.
    value_like: bool,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut sentence_start = true;
    for raw in text.split_whitespace() {
        let ends_sentence = raw.ends_with(['.', '!', '?', ':', ';']);
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric() && !"@$€£%+#".contains(c));
        if word.is_empty() {
            sentence_start |= ends_sentence;
            continue;
        }
        let lower = word.to_lowercase();
        let quoted = raw.starts_with(['\'', '"', '`']) || raw.ends_with(['\'', '"', '`']);
        let value_like = word.chars().any(|c| c.is_ascii_digit())
            || word.contains('@')
            || raw.contains("://")
            || word.contains(['$', '€', '£'])
            || quoted;
        let first_upper = word.chars().next().is_some_and(char::is_uppercase);
        let all_caps = word.chars().filter(|c| c.is_alphabetic()).count() >= 2
            && word
                .chars()
                .filter(|c| c.is_alphabetic())
                .all(char::is_uppercase);
        let name_like =
            !value_like && (all_caps || (first_upper && !sentence_start)) && lower != "i";
        out.push(Token {
            lower,
            name_like,
            value_like,
        });
        sentence_start = ends_sentence;
        if out.len() >= MAX_TOKENS {
            break;
        }
    }
    out
}

/// The text the fuzzy stage scores: lower-case words joined by single spaces.
pub fn fuzzy_form(text: &str) -> String {
    tokenize(text)
        .into_iter()
        .map(|t| t.lower)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Normalized Levenshtein similarity of two fuzzy forms (1 for two empty texts). Callers
/// check `similarity_bound` first: most non-matches are ruled out by their character counts.
pub fn similarity(a: &str, b: &str) -> f64 {
    strsim::normalized_levenshtein(a, b)
}

/// Upper bound of `similarity(a, b)` in linear time, from the bag distance: an edit fixes at
/// most one surplus character on each side, so the edit distance is at least the larger of the
/// two multiset differences of characters (which is at least the length difference).
pub fn similarity_bound(a: &str, b: &str) -> f64 {
    let mut ascii = [0i32; 128];
    let mut other: std::collections::HashMap<char, i32> = std::collections::HashMap::new();
    let (mut la, mut lb) = (0usize, 0usize);
    let mut count = |c: char, d: i32| match usize::try_from(u32::from(c)) {
        Ok(i) if i < 128 => ascii[i] += d,
        _ => *other.entry(c).or_default() += d,
    };
    for c in a.chars() {
        la += 1;
        count(c, 1);
    }
    for c in b.chars() {
        lb += 1;
        count(c, -1);
    }
    let (mut a_only, mut b_only) = (0i64, 0i64);
    for d in ascii.iter().chain(other.values()) {
        if *d > 0 {
            a_only += i64::from(*d);
        } else {
            b_only -= i64::from(*d);
        }
    }
    let longest = la.max(lb);
    if longest == 0 {
        return 1.0;
    }
    1.0 - a_only.max(b_only) as f64 / longest as f64
}

/// Compares two free texts.
pub fn compare(a: &str, b: &str) -> Relation {
    let ta = tokenize(a);
    let tb = tokenize(b);
    let fa = ta
        .iter()
        .map(|t| t.lower.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let fb = tb
        .iter()
        .map(|t| t.lower.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let similarity = similarity(&fa, &fb);
    let conflict = conflict(&ta, &tb);
    let reordered = conflict.is_none() && reordered(&ta, &tb);
    Relation {
        similarity,
        conflict,
        reordered,
    }
}

fn conflict(a: &[Token], b: &[Token]) -> Option<Conflict> {
    if multiset(a.iter().filter(|t| t.value_like)) != multiset(b.iter().filter(|t| t.value_like)) {
        return Some(Conflict::Values);
    }
    let words_a: HashMap<&str, usize> = multiset(a.iter());
    let words_b: HashMap<&str, usize> = multiset(b.iter());
    let name_missing = |x: &[Token], other: &HashMap<&str, usize>| {
        x.iter()
            .any(|t| t.name_like && !other.contains_key(t.lower.as_str()))
    };
    if name_missing(a, &words_b) || name_missing(b, &words_a) {
        return Some(Conflict::Names);
    }
    if swapped_roles(a, b) {
        return Some(Conflict::Swap);
    }
    let xa: Vec<&str> = a.iter().map(|t| t.lower.as_str()).collect();
    let xb: Vec<&str> = b.iter().map(|t| t.lower.as_str()).collect();
    let alignment = align(&xa, &xb);
    if slot_differs(&alignment) || near_copy_substitution(&alignment, xa.len().max(xb.len())) {
        return Some(Conflict::Slot);
    }
    None
}

/// Some word of `span` carries content (is not a stopword).
fn has_content(span: &[&str]) -> bool {
    span.iter().any(|w| !STOPWORDS.contains(w))
}

/// One text is the other with a few words swapped for others ("a luxury room" / "a suite
/// room", "gas-fueled" / "diesel-fueled", 'maindb' / 'finance_db'): in a near-copy every
/// replaced content word is a changed value, not a rewording. Paraphrases reword more broadly
/// and are left to the similarity scores.
fn near_copy_substitution(alignment: &Alignment<'_>, longer: usize) -> bool {
    let reps = &alignment.replacements;
    if reps.is_empty() || reps.len() > NEAR_COPY_MAX_REPLACEMENTS {
        return false;
    }
    if longer == 0 || (alignment.matched as f64) < NEAR_COPY_MIN_SHARED * longer as f64 {
        return false;
    }
    reps.iter()
        .any(|(_, d, i)| has_content(d) && has_content(i))
}

fn multiset<'a>(tokens: impl Iterator<Item = &'a Token>) -> HashMap<&'a str, usize> {
    let mut m = HashMap::new();
    for t in tokens {
        *m.entry(t.lower.as_str()).or_insert(0) += 1;
    }
    m
}

/// The value after each directional preposition, in order.
fn roles(t: &[Token]) -> Vec<(&str, &str)> {
    t.windows(2)
        .filter(|w| {
            DIRECTIONAL.contains(&w[0].lower.as_str()) && !STOPWORDS.contains(&w[1].lower.as_str())
        })
        .map(|w| (w[0].lower.as_str(), w[1].lower.as_str()))
        .collect()
}

/// Some directional role holds, in `b`, a value that fills another role in `a`.
fn swapped_roles(a: &[Token], b: &[Token]) -> bool {
    let ra = roles(a);
    let rb = roles(b);
    for (prep, va) in &ra {
        for (prep_b, vb) in &rb {
            if prep == prep_b && va != vb {
                let vb_elsewhere_in_a = ra.iter().any(|(p, v)| v == vb && p != prep);
                let va_elsewhere_in_b = rb.iter().any(|(p, v)| v == va && p != prep);
                if vb_elsewhere_in_a || va_elsewhere_in_b {
                    return true;
                }
            }
        }
    }
    false
}

/// After aligning the two token sequences, some replaced span follows a role word that both
/// texts share: the same slot, a different value.
fn slot_differs(alignment: &Alignment<'_>) -> bool {
    alignment.replacements.iter().any(|(prev, del, ins)| {
        prev.is_some_and(|p| ROLE_WORDS.contains(&p)) && has_content(del) && has_content(ins)
    })
}

/// An LCS alignment of two token sequences.
struct Alignment<'a> {
    /// Replaced spans: (word before the span, span in a, span in b), where both sides have words.
    replacements: Vec<(Option<&'a str>, Vec<&'a str>, Vec<&'a str>)>,
    /// Tokens the two sequences share in order (the LCS length).
    matched: usize,
}

/// Aligns two token sequences by their longest common subsequence.
fn align<'a>(a: &[&'a str], b: &[&'a str]) -> Alignment<'a> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u16; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    let mut prev: Option<&str> = None;
    let (mut del, mut ins): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    let mut flush = |prev: Option<&'a str>, del: &mut Vec<&'a str>, ins: &mut Vec<&'a str>| {
        if !del.is_empty() && !ins.is_empty() {
            out.push((prev, std::mem::take(del), std::mem::take(ins)));
        }
        del.clear();
        ins.clear();
    };
    while i < n && j < m {
        if a[i] == b[j] {
            flush(prev, &mut del, &mut ins);
            prev = Some(a[i]);
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            del.push(a[i]);
            i += 1;
        } else {
            ins.push(b[j]);
            j += 1;
        }
    }
    del.extend_from_slice(&a[i..]);
    ins.extend_from_slice(&b[j..]);
    flush(prev, &mut del, &mut ins);
    Alignment {
        replacements: out,
        matched: usize::from(lcs[0][0]),
    }
}

/// Mostly the same words, with some pair of them in the opposite order.
fn reordered(a: &[Token], b: &[Token]) -> bool {
    let ma = multiset(a.iter());
    let mb = multiset(b.iter());
    let shared: usize = ma
        .iter()
        .map(|(w, c)| (*c).min(*mb.get(w).unwrap_or(&0)))
        .sum();
    let total = a.len().max(b.len());
    if total == 0 || (shared as f64) < 0.8 * total as f64 {
        return false;
    }
    // Content words occurring once in each text, in a's order; an inversion in b is a reorder.
    let pos_b: HashMap<&str, usize> = b
        .iter()
        .enumerate()
        .filter(|(_, t)| mb.get(t.lower.as_str()) == Some(&1))
        .map(|(i, t)| (t.lower.as_str(), i))
        .collect();
    let seq: Vec<usize> = a
        .iter()
        .filter(|t| ma.get(t.lower.as_str()) == Some(&1) && !STOPWORDS.contains(&t.lower.as_str()))
        .filter_map(|t| pos_b.get(t.lower.as_str()).copied())
        .collect();
    let mut max_seen = 0;
    seq.iter().any(|&p| {
        let inverted = p < max_seen;
        max_seen = max_seen.max(p);
        inverted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup_ok(a: &str, b: &str) -> bool {
        let r = compare(a, b);
        r.conflict.is_none() && !r.reordered
    }

    #[test]
    fn identical_and_lightly_edited_texts_are_similar() {
        let r = compare(
            "Please send the quarterly report to the finance team.",
            "please send the quarterly report to the finance team",
        );
        assert!(r.similarity > 0.99, "{r:?}");
        assert!(dup_ok(
            "Please send the quarterly report to the finance team.",
            "Please send the quarterly report to the finance team!"
        ));
    }

    #[test]
    fn paraphrases_without_value_changes_pass() {
        assert!(
            dup_ok(
                "Send the quarterly report to the finance team",
                "Please email the finance team the quarterly report"
            ) || compare(
                "Send the quarterly report to the finance team",
                "Please email the finance team the quarterly report"
            )
            .reordered
        );
        assert!(dup_ok(
            "Remind Alice about the meeting",
            "Send Alice a reminder about the meeting"
        ));
    }

    #[test]
    fn different_numbers_or_amounts_conflict() {
        assert_eq!(
            compare(
                "Transfer $100 to the savings account",
                "Transfer $200 to the savings account"
            )
            .conflict,
            Some(Conflict::Values)
        );
        assert_eq!(
            compare("refund order 1234", "refund order 1235").conflict,
            Some(Conflict::Values)
        );
        assert_eq!(
            compare("email a@x.io the notes", "email b@x.io the notes").conflict,
            Some(Conflict::Values)
        );
    }

    #[test]
    fn different_names_conflict() {
        assert_eq!(
            compare("Transfer $100 to Alice today", "Transfer $100 to Bob today").conflict,
            Some(Conflict::Names)
        );
    }

    #[test]
    fn lower_case_slot_values_conflict() {
        assert_eq!(
            compare("send the invoice to alice", "send the invoice to bob").conflict,
            Some(Conflict::Slot)
        );
        assert_eq!(
            compare("cancel my order please", "cancel my subscription please").conflict,
            Some(Conflict::Slot)
        );
    }

    #[test]
    fn a_word_swapped_in_a_near_copy_is_a_changed_value() {
        let a = "Book a luxury room in Hotel Paradise, Las Vegas, with a city view for 3 days starting from May 12.";
        let b = "Book a suite room in Hotel Paradise, Las Vegas, with a city view for 3 days starting from May 12.";
        assert_eq!(compare(a, b).conflict, Some(Conflict::Slot));
        assert!(
            compare(
                "connect to the database 'maindb' as admin",
                "connect to the database 'finance_db' as admin"
            )
            .conflict
            .is_some()
        );
        // Politeness and punctuation are not values.
        assert_eq!(
            compare(
                "Could you retrieve the list of servers for me?",
                "Can you retrieve the list of servers for me"
            )
            .conflict,
            None
        );
    }

    #[test]
    fn swapped_directions_conflict() {
        assert_eq!(
            compare("find flights from NYC to LA", "find flights from LA to NYC").conflict,
            Some(Conflict::Swap)
        );
        assert_eq!(
            compare(
                "move 5 units from checking to savings",
                "move 5 units from savings to checking"
            )
            .conflict,
            Some(Conflict::Swap)
        );
    }

    #[test]
    fn same_words_other_order_is_a_reorder() {
        let r = compare("the dog bit the man", "the man bit the dog");
        assert!(r.reordered || r.conflict.is_some(), "{r:?}");
    }

    #[test]
    fn levenshtein_is_order_aware() {
        assert!(
            similarity(
                &fuzzy_form("find flights from nyc to la"),
                &fuzzy_form("find flights from la to nyc")
            ) < 0.9
        );
        assert!(similarity_bound("abcd", "ab") >= similarity("abcd", "ab"));
    }

    #[test]
    fn bag_bound_is_tight_on_disjoint_texts_and_one_on_anagrams() {
        assert_eq!(similarity_bound("abc", "xyz"), 0.0);
        assert_eq!(similarity_bound("abc", "cba"), 1.0);
        assert_eq!(similarity_bound("", ""), 1.0);
        assert_eq!(similarity_bound("ééa", "éb"), 1.0 - 2.0 / 3.0);
    }

    proptest::proptest! {
        /// The pruning bound never rules out a pair that would have matched.
        #[test]
        fn bag_bound_is_an_upper_bound(a in "[a-dé ]{0,24}", b in "[a-dé ]{0,24}") {
            proptest::prop_assert!(similarity_bound(&a, &b) + 1e-12 >= similarity(&a, &b));
        }
    }
}
