//! Identity or prose? Inference for string leaves when a tool policy names no fields.
//!
//! Identity is the safe side: a value wrongly taken for identity only costs a missed
//! duplicate, a value wrongly taken for prose could let two different actions match. So a
//! string is prose only when it reads like a sentence: several words, mostly letters, and
//! nothing that looks like an address, id, date or URL.

/// What a leaf is to the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Decides the action: must be equal for two calls to be duplicates.
    Identity,
    /// Prose compared by similarity.
    FreeText,
}

/// Minimum words for a string to count as prose.
const MIN_WORDS: usize = 4;

/// Classifies a normalised string.
pub fn classify_string(s: &str) -> FieldKind {
    let words: Vec<&str> = s.split(' ').filter(|w| !w.is_empty()).collect();
    if words.len() < MIN_WORDS {
        return FieldKind::Identity;
    }
    if looks_structured(s) {
        return FieldKind::Identity;
    }
    let alpha_words = words
        .iter()
        .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() * 2 >= w.chars().count())
        .count();
    if alpha_words * 4 < words.len() * 3 {
        // Mostly numbers and codes: an address, a list of ids, a formula.
        return FieldKind::Identity;
    }
    FieldKind::FreeText
}

fn looks_structured(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("select ")
        || lower.starts_with('{')
        || lower.starts_with('[')
        || s.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tokens_ids_and_names_are_identity() {
        for s in [
            "alice@example.com",
            "ACC-12345",
            "2024-06-01",
            "New York City",
            "USD",
            "3f2a9c1e-77aa-4b7e-9d1a-0c1d2e3f4a5b",
            "https://example.com/a b c d",
            "12 34 56 78 90",
        ] {
            assert_eq!(classify_string(s), FieldKind::Identity, "{s}");
        }
    }

    #[test]
    fn sentences_are_free_text() {
        for s in [
            "Please send the quarterly report to the finance team",
            "find flights from NYC to LA next week",
            "Hi Bob, the meeting moved to 3pm tomorrow.",
        ] {
            assert_eq!(classify_string(s), FieldKind::FreeText, "{s}");
        }
    }
}
