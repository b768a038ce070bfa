//! The free-text primitives the similarity stages share: tokens, the fuzzy measure, and the
//! two hard conflicts no score can override.
//!
//! A hard conflict is a difference that makes two texts different actions whatever else they
//! share: the numbers, amounts, emails, URLs or quoted values written in them differ, or two
//! values swap directional roles ("from NYC to LA" / "from LA to NYC"). Everything softer
//! (names, substituted words, word order, negation) is a feature the judge weighs
//! (`funnel::features`, `funnel::judge`).
//!
//! The fuzzy measure is normalized Levenshtein over the normalised text: order-aware (unlike
//! a token-set measure, which scores a swap as identical), and not biased toward long shared
//! prefixes (unlike Jaro-Winkler, which scores two prompts that start alike as near-equal).

use std::collections::HashMap;

/// Tokens compared at most (the model reads about 256 word pieces; diffs are O(n·m)).
const MAX_TOKENS: usize = 200;

/// Directional prepositions: the value after them is a role (source, destination).
const DIRECTIONAL: &[&str] = &["from", "to", "into", "onto", "towards", "toward", "via"];

/// Words that fill no directional role ("to the", "from my").
const NOT_A_ROLE_VALUE: &[&str] = &[
    "a", "an", "the", "my", "our", "your", "their", "his", "her", "its", "this", "that", "me",
    "us", "it", "you", "them", "be", "do",
];

/// Why two texts cannot be the same action, whatever their similarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Numbers, amounts, emails, URLs, dates or quoted values differ.
    Values,
    /// Two values swap directional roles ("from NYC to LA" / "from LA to NYC").
    Swap,
}

impl Conflict {
    /// Short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Conflict::Values => "values_differ",
            Conflict::Swap => "roles_swapped",
        }
    }
}

/// A token with its original casing kept for name detection.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) lower: String,
    /// Capitalised (or all-caps) word not at the start of a sentence.
    pub(crate) name_like: bool,
    /// Carries a value: digits, `@`, `://`, a currency sign, quotes.
    pub(crate) value_like: bool,
    /// A value only by its quotes (a plain word in quotation marks): the same word unquoted
    /// on the other side is the same value ("Egypt 'freezes' assets" / "Egypt freezes assets").
    pub(crate) quoted_word: bool,
}

/// Splits a text into tokens (at most `MAX_TOKENS`).
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
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
        let marked = word.chars().any(|c| c.is_ascii_digit())
            || word.contains('@')
            || raw.contains("://")
            || word.contains(['$', '€', '£']);
        let value_like = marked || quoted;
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
            quoted_word: quoted && !marked,
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

/// The values written in the two texts differ: the numbers, amounts, emails and URLs as
/// multisets, and a word in quotes that the other text does not contain at all (quoted or
/// not: quotation marks are punctuation in prose, "Obama praises Mandela 'inspiration'" /
/// "Obama hails Mandela's inspiration").
pub(crate) fn values_differ(a: &[Token], b: &[Token]) -> bool {
    let marked = |t: &&Token| t.value_like && !t.quoted_word;
    if multiset(a.iter().filter(marked)) != multiset(b.iter().filter(marked)) {
        return true;
    }
    let unmatched_quote = |x: &[Token], y: &[Token]| {
        x.iter()
            .any(|t| t.quoted_word && !y.iter().any(|o| o.lower == t.lower))
    };
    unmatched_quote(a, b) || unmatched_quote(b, a)
}

fn multiset<'a>(tokens: impl Iterator<Item = &'a Token>) -> HashMap<&'a str, usize> {
    let mut m = HashMap::new();
    for t in tokens {
        *m.entry(t.lower.as_str()).or_insert(0) += 1;
    }
    m
}

/// Determiners skipped between a directional preposition and its value ("from the Louvre").
const DETERMINERS: &[&str] = &["a", "an", "the"];

/// The value after each directional preposition, in order: the first word after it and any
/// article ("from the Eiffel Tower" -> "eiffel"), unless that word fills no role ("to my").
fn roles(t: &[Token]) -> Vec<(&str, &str)> {
    (0..t.len())
        .filter(|&i| DIRECTIONAL.contains(&t[i].lower.as_str()))
        .filter_map(|i| {
            let v = t[i + 1..]
                .iter()
                .find(|x| !DETERMINERS.contains(&x.lower.as_str()))?;
            (!NOT_A_ROLE_VALUE.contains(&v.lower.as_str()))
                .then_some((t[i].lower.as_str(), v.lower.as_str()))
        })
        .collect()
}

/// Some directional role holds, in `b`, a value that fills another role in `a`.
pub(crate) fn swapped_roles(a: &[Token], b: &[Token]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(a: &str, b: &str) -> Option<Conflict> {
        let (ta, tb) = (tokenize(a), tokenize(b));
        if values_differ(&ta, &tb) {
            Some(Conflict::Values)
        } else if swapped_roles(&ta, &tb) {
            Some(Conflict::Swap)
        } else {
            None
        }
    }

    #[test]
    fn different_numbers_or_amounts_conflict() {
        assert_eq!(
            conflict("Transfer $100 to savings", "Transfer $200 to savings"),
            Some(Conflict::Values)
        );
        assert_eq!(
            conflict("email a@x.io the notes", "email b@x.io the notes"),
            Some(Conflict::Values)
        );
        assert_eq!(
            conflict("connect to 'maindb'", "connect to 'finance_db'"),
            Some(Conflict::Values)
        );
    }

    #[test]
    fn a_quoted_word_is_the_same_word_unquoted_both_ways() {
        let (a, b) = (
            "South Korean President 'sorry' for ferry response",
            "South Korean president sorry for ferry response",
        );
        assert_eq!(conflict(a, b), None);
        assert_eq!(conflict(b, a), None);
        // A quoted word the other text lacks is still a changed value, either way round.
        let c = "South Korean President 'apologises' for ferry response";
        assert_eq!(conflict(a, c), Some(Conflict::Values));
        assert_eq!(conflict(b, c), Some(Conflict::Values));
        assert_eq!(conflict(c, b), Some(Conflict::Values));
        // Quotes do not launder a number: '5' is still 5.
        assert_eq!(
            conflict("retry '5' times", "retry 6 times"),
            Some(Conflict::Values)
        );
    }

    #[test]
    fn swapped_directions_conflict() {
        assert_eq!(
            conflict("find flights from NYC to LA", "find flights from LA to NYC"),
            Some(Conflict::Swap)
        );
        assert_eq!(
            conflict(
                "move 5 units from checking to savings",
                "move 5 units from savings to checking"
            ),
            Some(Conflict::Swap)
        );
        assert_eq!(
            conflict("send it to the team", "send it to the team now"),
            None
        );
        // An article between the preposition and the value does not hide the swap.
        assert_eq!(
            conflict(
                "distance from the Eiffel Tower to the Louvre",
                "distance from the Louvre to the Eiffel Tower"
            ),
            Some(Conflict::Swap)
        );
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
