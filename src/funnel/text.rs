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

/// A word of a text, lower-cased, with what its original casing and characters said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub(crate) lower: &'a str,
    /// Capitalised (or all-caps) word not at the start of a sentence.
    pub(crate) name_like: bool,
    /// Carries a value: digits, `@`, `://`, a currency sign, quotes.
    pub(crate) value_like: bool,
    /// A value only by its quotes (a plain word in quotation marks): the same word unquoted
    /// on the other side is the same value ("Egypt 'freezes' assets" / "Egypt freezes assets").
    pub(crate) quoted_word: bool,
}

/// Where a word is in a text's fuzzy form and what it carries (compact: a prepared text is
/// kept per candidate in the text cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
    name_like: bool,
    value_like: bool,
    quoted_word: bool,
}

/// A text split into words (at most `MAX_TOKENS`) once: the lower-case words joined by single
/// spaces (the fuzzy form), and per word where it is in that form and what it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    form: String,
    spans: Vec<Span>,
}

impl Tokens {
    /// Splits `text` into words.
    pub fn new(text: &str) -> Self {
        let mut form = String::with_capacity(text.len());
        let mut spans = Vec::new();
        let mut sentence_start = true;
        // Words inside a sentence (not its first), and how many of them are capitalised.
        let (mut inside, mut capitalised) = (0usize, 0usize);
        for raw in text.split_whitespace() {
            let ends_sentence = raw.ends_with(['.', '!', '?', ':', ';']);
            let word = raw.trim_matches(|c: char| !c.is_alphanumeric() && !"@$€£%+#".contains(c));
            if word.is_empty() {
                sentence_start |= ends_sentence;
                continue;
            }
            if !form.is_empty() {
                form.push(' ');
            }
            let start = form.len();
            if word.is_ascii() {
                form.extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
            } else {
                form.push_str(&word.to_lowercase());
            }
            let lower = &form[start..];
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
            spans.push(Span {
                start: offset(start),
                end: offset(form.len()),
                name_like,
                value_like,
                quoted_word: quoted && !marked,
            });
            if !sentence_start
                && !value_like
                && word.chars().next().is_some_and(char::is_alphabetic)
            {
                inside += 1;
                capitalised += usize::from(first_upper || all_caps);
            }
            sentence_start = ends_sentence;
            if spans.len() >= MAX_TOKENS {
                break;
            }
        }
        // In a text whose words are mostly capitalised (a title-case headline, an all-caps
        // shout) the casing marks no name: "Shinzo Abe Selected as Japan's Prime Minister".
        if inside >= 3 && 2 * capitalised > inside {
            for s in &mut spans {
                s.name_like = false;
            }
        }
        form.shrink_to_fit();
        spans.shrink_to_fit();
        Self { form, spans }
    }

    /// The lower-case words joined by single spaces: what the fuzzy stage scores.
    pub fn fuzzy_form(&self) -> &str {
        &self.form
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the text has no word.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`-th word.
    pub(crate) fn token(&self, i: usize) -> Token<'_> {
        let s = self.spans[i];
        Token {
            lower: self
                .form
                .get(s.start as usize..s.end as usize)
                .unwrap_or(""),
            name_like: s.name_like,
            value_like: s.value_like,
            quoted_word: s.quoted_word,
        }
    }

    /// Every word, in order.
    pub(crate) fn tokens(&self) -> Vec<Token<'_>> {
        (0..self.len()).map(|i| self.token(i)).collect()
    }

    /// Heap bytes held (for the text cache's accounting).
    pub fn heap_bytes(&self) -> usize {
        self.form.capacity() + self.spans.capacity() * std::mem::size_of::<Span>()
    }
}

/// A byte offset into a fuzzy form (at most `MAX_TOKENS` words of a payload-bounded text).
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The text the fuzzy stage scores: lower-case words joined by single spaces.
pub fn fuzzy_form(text: &str) -> String {
    Tokens::new(text).form
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

/// A free text prepared once for comparisons: its words, and what a hard conflict is read
/// from (the values written in it, sorted, and its directional roles). A candidate's is kept
/// in the text cache (`funnel::text_cache`), so a check compares with it without splitting it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparedText {
    tokens: Tokens,
    /// The values the words carry by their characters (digits, `@`, `://`, a currency sign),
    /// as comparison keys (`value_keys`), sorted: equal multisets are equal sequences.
    values: Vec<Box<str>>,
    /// Indices of the words that are values only because they are in quotes.
    quoted: Vec<u32>,
    /// (preposition, value) word indices of the directional roles, in order.
    roles: Vec<(u32, u32)>,
}

impl PreparedText {
    /// Splits and reads `text`.
    pub fn new(text: &str) -> Self {
        let tokens = Tokens::new(text);
        let t = tokens.tokens();
        let mut values: Vec<Box<str>> = t
            .iter()
            .filter(|x| x.value_like && !x.quoted_word)
            .flat_map(|x| value_keys(x.lower))
            .collect();
        let quoted: Vec<u32> = (0..t.len())
            .filter(|&i| t[i].quoted_word)
            .map(|i| i as u32)
            .collect();
        values.sort();
        values.shrink_to_fit();
        let roles = role_indices(&t)
            .into_iter()
            .map(|(p, v)| (p as u32, v as u32))
            .collect();
        drop(t);
        Self {
            tokens,
            values,
            quoted,
            roles,
        }
    }

    /// The words.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The lower-case words joined by single spaces.
    pub fn fuzzy_form(&self) -> &str {
        self.tokens.fuzzy_form()
    }

    fn word(&self, i: u32) -> &str {
        self.tokens.token(i as usize).lower
    }

    /// The directional roles as (preposition, value).
    fn roles(&self) -> Vec<(&str, &str)> {
        self.roles
            .iter()
            .map(|&(p, v)| (self.word(p), self.word(v)))
            .collect()
    }

    /// Whether the text has `word` (lower case) anywhere, quoted or not.
    fn has_word(&self, word: &str) -> bool {
        (0..self.tokens.len()).any(|i| self.tokens.token(i).lower == word)
    }

    /// A word this text has only in quotes that `other` does not contain at all.
    fn quote_missing_in(&self, other: &PreparedText) -> bool {
        self.quoted.iter().any(|&i| !other.has_word(self.word(i)))
    }

    /// How many of the values written in this text (as multisets of `value_keys`) the other
    /// lacks, and how many of the other's this one lacks.
    pub fn value_surplus(&self, other: &PreparedText) -> (usize, usize) {
        let (a, b) = (&self.values, &other.values);
        let (mut i, mut j, mut only_a, mut only_b) = (0, 0, 0, 0);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    only_a += 1;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    only_b += 1;
                    j += 1;
                }
            }
        }
        (only_a + a.len() - i, only_b + b.len() - j)
    }

    /// The hard conflict between the two texts, if any: a value changed (each text writes a
    /// number, amount, email or URL the other does not; compared as multisets of
    /// `value_keys`, so "$4.1bn" / "$4.1 billion" and "6-year-old" / "aged 6" agree), a word
    /// in quotes that the other text does not contain at all, quoted or not (quotation marks
    /// are punctuation in prose, "Obama praises Mandela 'inspiration'" / "Obama hails
    /// Mandela's inspiration"), or two values swap directional roles. A value written on one
    /// side only ("talks extended to November" / "to November 24") is a detail the other
    /// leaves out, not a changed value: the judge weighs it (`values_added`).
    pub fn conflict_with(&self, other: &PreparedText) -> Option<Conflict> {
        let (only_self, only_other) = self.value_surplus(other);
        let changed = only_self > 0 && only_other > 0;
        if changed || self.quote_missing_in(other) || other.quote_missing_in(self) {
            return Some(Conflict::Values);
        }
        if self.roles.is_empty() || other.roles.is_empty() {
            return None;
        }
        roles_swap(&self.roles(), &other.roles()).then_some(Conflict::Swap)
    }

    /// Heap bytes held (for the text cache's accounting).
    pub fn heap_bytes(&self) -> usize {
        self.tokens.heap_bytes()
            + self.values.capacity() * std::mem::size_of::<Box<str>>()
            + self.values.iter().map(|v| v.len()).sum::<usize>()
            + self.quoted.capacity() * std::mem::size_of::<u32>()
            + self.roles.capacity() * std::mem::size_of::<(u32, u32)>()
    }
}

/// The comparison keys of a value word (lower case): an email or URL as written; otherwise
/// the numbers in it, thousands separators dropped, without the units, signs and suffixes
/// around them ("$4.1bn" -> "4.1", "6-year-old" -> "6", "1,000" -> "1000", "q3" -> "3",
/// "2024-05-01" -> "2024", "05", "01"); a word with no digit (a lone currency sign) as
/// written.
pub(crate) fn value_keys(word: &str) -> Vec<Box<str>> {
    if word.contains('@') || word.contains("://") || !word.chars().any(|c| c.is_ascii_digit()) {
        return vec![word.into()];
    }
    let chars: Vec<char> = word.chars().collect();
    let mut keys = Vec::new();
    let mut cur = String::new();
    for (k, &c) in chars.iter().enumerate() {
        let next_digit = chars.get(k + 1).is_some_and(char::is_ascii_digit);
        let decimal_point = c == '.' && !cur.is_empty() && next_digit && !cur.contains('.');
        if c.is_ascii_digit() || decimal_point {
            cur.push(c);
        } else if c == ',' && !cur.is_empty() && next_digit {
            // A thousands separator: "1,000" is 1000.
        } else if !cur.is_empty() {
            keys.push(std::mem::take(&mut cur).into_boxed_str());
        }
    }
    if !cur.is_empty() {
        keys.push(cur.into_boxed_str());
    }
    keys
}

/// Determiners skipped between a directional preposition and its value ("from the Louvre").
const DETERMINERS: &[&str] = &["a", "an", "the"];

/// The value after each directional preposition, in order, as word indices (preposition,
/// value): the first word after it and any article ("from the Eiffel Tower" -> "eiffel"),
/// unless that word fills no role ("to my").
fn role_indices(t: &[Token<'_>]) -> Vec<(usize, usize)> {
    (0..t.len())
        .filter(|&i| DIRECTIONAL.contains(&t[i].lower))
        .filter_map(|i| {
            let j = (i + 1..t.len()).find(|&j| !DETERMINERS.contains(&t[j].lower))?;
            (!NOT_A_ROLE_VALUE.contains(&t[j].lower)).then_some((i, j))
        })
        .collect()
}

/// Some directional role holds, in `rb`, a value that fills another role in `ra`.
fn roles_swap(ra: &[(&str, &str)], rb: &[(&str, &str)]) -> bool {
    for (prep, va) in ra {
        for (prep_b, vb) in rb {
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
        PreparedText::new(a).conflict_with(&PreparedText::new(b))
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
    fn a_value_on_one_side_only_is_a_left_out_detail_both_ways() {
        for (a, b) in [
            (
                "Iranian nuclear talks to be extended to November",
                "Iran nuclear talks extended to November 24",
            ),
            (
                "Margaret Thatcher dies after stroke",
                "Margaret Thatcher dies at 87",
            ),
        ] {
            assert_eq!(conflict(a, b), None, "{a} / {b}");
            assert_eq!(conflict(b, a), None, "{b} / {a}");
            let (pa, pb) = (PreparedText::new(a), PreparedText::new(b));
            assert_eq!(pa.value_surplus(&pb), (0, 1));
            assert_eq!(pb.value_surplus(&pa), (1, 0));
        }
        // A value on each side that the other lacks is a changed value.
        assert_eq!(
            conflict("extended to November 24", "extended to November 25"),
            Some(Conflict::Values)
        );
    }

    #[test]
    fn values_compare_by_their_numbers_both_ways() {
        for (a, b) in [
            (
                "AstraZeneca pays $4.1bn to buy Bristol-Myers Squibb out",
                "AstraZeneca to buy Bristol out for up to $4.1 billion",
            ),
            (
                "6-year-old Indian girl raped at school",
                "Indian girl, 6, raped at her school",
            ),
            ("pay 1,000 dollars", "pay $1000"),
        ] {
            assert_eq!(conflict(a, b), None, "{a} / {b}");
            assert_eq!(conflict(b, a), None, "{b} / {a}");
        }
        assert_eq!(conflict("pay $4.1bn", "pay $4.2bn"), Some(Conflict::Values));
        assert_eq!(
            conflict("version 1.10", "version 1.1"),
            Some(Conflict::Values)
        );
        assert_eq!(
            value_keys("2024-05-01"),
            vec!["2024".into(), "05".into(), "01".into()] as Vec<Box<str>>
        );
        assert_eq!(value_keys("a@x.io"), vec!["a@x.io".into()] as Vec<Box<str>>);
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

    #[test]
    fn casing_marks_no_name_in_a_title_case_text() {
        let t = Tokens::new("Shinzo Abe Selected as Japan's Prime Minister");
        assert!((0..t.len()).all(|i| !t.token(i).name_like));
        let t = Tokens::new("send the report to John Smith at the Acme office");
        assert!(t.token(4).name_like && t.token(5).name_like);
    }

    #[test]
    fn the_fuzzy_form_is_the_lower_case_words() {
        let t = Tokens::new("  Send the Q3 REPORT, to Zoë's team!  ");
        assert_eq!(t.fuzzy_form(), "send the q3 report to zoë's team");
        assert_eq!(t.len(), 7);
        let q3 = t.token(2);
        assert!(q3.value_like && !q3.name_like);
        assert!(t.token(3).name_like, "an all-caps word inside a sentence");
        assert!(
            !t.token(0).name_like,
            "a capital at the start of a sentence"
        );
    }

    proptest::proptest! {
        /// Values conflict exactly when each side has a number the other lacks (as
        /// multisets, a currency sign aside): a value on one side only is a left-out detail.
        #[test]
        fn prepared_values_are_a_multiset(
            a in "([a-c] |[1-3] |[$][1-2] ){0,8}",
            b in "([a-c] |[1-3] |[$][1-2] ){0,8}",
        ) {
            let numbers = |t: &str| {
                let mut n = [0i32; 4];
                for w in t.split_whitespace() {
                    if let Some(d) = w.trim_start_matches('$').parse::<usize>().ok().filter(|d| *d < 4) {
                        n[d] += 1;
                    }
                }
                n
            };
            let (na, nb) = (numbers(&a), numbers(&b));
            let a_more = na.iter().zip(&nb).any(|(x, y)| x > y);
            let b_more = na.iter().zip(&nb).any(|(x, y)| y > x);
            let (pa, pb) = (PreparedText::new(&a), PreparedText::new(&b));
            let differ = pa.conflict_with(&pb) == Some(Conflict::Values);
            proptest::prop_assert_eq!(differ, a_more && b_more);
            proptest::prop_assert_eq!(differ, pb.conflict_with(&pa) == Some(Conflict::Values));
        }

        /// The pruning bound never rules out a pair that would have matched.
        #[test]
        fn bag_bound_is_an_upper_bound(a in "[a-dé ]{0,24}", b in "[a-dé ]{0,24}") {
            proptest::prop_assert!(similarity_bound(&a, &b) + 1e-12 >= similarity(&a, &b));
        }
    }
}
