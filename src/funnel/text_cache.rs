//! Candidate texts prepared once and kept per call id, bounded.
//!
//! Before it knows whether to embed, a check compares its free text with the identity-equal
//! candidates of its window (up to `window_calls`, 1,000 by default): the pre-embedding
//! filter, the fuzzy scan and the judge all read each candidate's words, values and roles.
//! Splitting every candidate's text again per check cost more than the embedding it decided
//! about, so a candidate's [`PreparedText`] (and its vector id) is kept here by call id. A
//! record's free text never changes, but an entry is used only for the text it was prepared
//! from (its hash and length are checked), and the sweep drops the entries of the records it
//! removes. The cache holds at most its configured number of entries (`semantic.text_cache`;
//! about 0.5-1 KB each for 10-40 words); 0 turns it off (every lookup prepares the text).
//!
//! Beside it, a smaller bounded map keeps the content words' vectors of recent calls (from the
//! forward pass that embedded them: `embed::WordVectors`, int8), which the judge's word
//! alignment reads (`funnel::alignment`). At about 400 bytes a content word (2-6 KB a call)
//! it holds `semantic.word_cache` entries (512 by default: 1-3 MB). A candidate not in it is
//! judged without the alignment (the base model), never embedded again for it.

use std::hash::Hasher;
use std::sync::Arc;

use super::text::PreparedText;
use crate::embed::WordVectors;
use crate::record::vector_id;
use crate::store::Candidate;

/// A candidate's text, prepared, with its call's vector id.
#[derive(Debug)]
pub struct CandidateText {
    /// The call's vector id (`record::vector_id` of its id).
    pub vid: u64,
    /// The prepared free text.
    pub text: PreparedText,
    /// Hash and length of the text it was prepared from.
    source: (u64, usize),
}

/// Prepared candidate texts by call id (module docs).
pub struct TextCache {
    cache: Option<quick_cache::sync::Cache<String, Arc<CandidateText>>>,
    /// Content words' vectors by call id.
    words: Option<quick_cache::sync::Cache<String, Arc<CandidateWords>>>,
}

/// A candidate's content words with their vectors (`put_words`).
#[derive(Debug)]
pub struct CandidateWords {
    /// The content words and their vectors.
    pub words: WordVectors,
    /// Hash and length of the text they are of.
    source: (u64, usize),
}

fn fingerprint(text: &str) -> (u64, usize) {
    let mut h = rustc_hash::FxHasher::default();
    h.write(text.as_bytes());
    (h.finish(), text.len())
}

impl TextCache {
    /// A cache of at most `entries` prepared texts (0: none kept), and no word vectors.
    pub fn new(entries: usize) -> Self {
        Self::with_words(entries, 0)
    }

    /// A cache of at most `entries` prepared texts and `word_entries` texts' word vectors
    /// (0: none kept).
    pub fn with_words(entries: usize, word_entries: usize) -> Self {
        Self {
            cache: (entries > 0).then(|| quick_cache::sync::Cache::new(entries)),
            words: (word_entries > 0).then(|| quick_cache::sync::Cache::new(word_entries)),
        }
    }

    /// Keeps `words`, the content-word vectors of `text` (as the embedding service gives
    /// them), for call `id`.
    pub fn put_words(&self, id: &str, text: &str, words: WordVectors) {
        if let Some(cache) = &self.words {
            let entry = CandidateWords {
                words,
                source: fingerprint(text),
            };
            cache.insert(id.to_string(), Arc::new(entry));
        }
    }

    /// Candidate `c`'s content-word vectors, when kept (and of its current text).
    pub fn words(&self, c: &Candidate) -> Option<Arc<CandidateWords>> {
        let hit = self.words.as_ref()?.get(c.id.as_str())?;
        (hit.source == fingerprint(&c.free_text)).then_some(hit)
    }

    /// Texts whose word vectors are kept.
    pub fn words_len(&self) -> usize {
        self.words.as_ref().map_or(0, |c| c.len())
    }

    /// Candidate `c`'s prepared text: kept from an earlier check, or prepared now (and kept).
    pub fn get(&self, c: &Candidate) -> Arc<CandidateText> {
        self.lookup(&c.id, &c.free_text, || PreparedText::new(&c.free_text))
    }

    /// Keeps `text`, prepared as `prepared`, for call `id` (a NEW whose check prepared its
    /// text already: later checks that compare with it need not split it again).
    pub fn put(&self, id: &str, text: &str, prepared: PreparedText) {
        if let Some(cache) = &self.cache {
            cache.insert(id.to_string(), Arc::new(entry(id, text, prepared)));
        }
    }

    fn lookup(
        &self,
        id: &str,
        text: &str,
        prepare: impl FnOnce() -> PreparedText,
    ) -> Arc<CandidateText> {
        let Some(cache) = &self.cache else {
            return Arc::new(entry(id, text, prepare()));
        };
        if let Some(hit) = cache.get(id)
            && hit.source == fingerprint(text)
        {
            return hit;
        }
        let fresh = Arc::new(entry(id, text, prepare()));
        cache.insert(id.to_string(), fresh.clone());
        fresh
    }

    /// Drops the entries of calls that are gone (swept, or an insert that failed).
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            if let Some(cache) = &self.cache {
                cache.remove(id);
            }
            if let Some(words) = &self.words {
                words.remove(id);
            }
        }
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn entry(id: &str, text: &str, prepared: PreparedText) -> CandidateText {
    CandidateText {
        vid: vector_id(id),
        text: prepared,
        source: fingerprint(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, text: &str) -> Candidate {
        Candidate {
            id: id.into(),
            created_at_ms: 0,
            expires_at_ms: i64::MAX,
            free_text: text.into(),
        }
    }

    #[test]
    fn a_kept_entry_is_returned_for_its_text_only() {
        let cache = TextCache::new(16);
        let a = cand("c1", "Send the Q3 report to finance");
        let first = cache.get(&a);
        assert_eq!(first.vid, vector_id("c1"));
        assert_eq!(first.text, PreparedText::new(&a.free_text));
        // Kept: the same allocation comes back.
        assert!(Arc::ptr_eq(&first, &cache.get(&a)));
        // The same id with another text is prepared again, never answered from the old entry.
        let changed = cand("c1", "Send the Q4 report to finance");
        let second = cache.get(&changed);
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.text, PreparedText::new(&changed.free_text));
    }

    #[test]
    fn forget_drops_the_entry() {
        let cache = TextCache::new(16);
        let a = cand("c1", "rotate the database credentials");
        let first = cache.get(&a);
        assert_eq!(cache.len(), 1);
        cache.forget(["c1"]);
        assert_eq!(cache.len(), 0);
        assert!(!Arc::ptr_eq(&first, &cache.get(&a)));
    }

    #[test]
    fn put_is_what_get_finds() {
        let cache = TextCache::new(16);
        let text = "summarise the incident timeline";
        cache.put("n1", text, PreparedText::new(text));
        let kept = cache.get(&cand("n1", text));
        assert!(Arc::ptr_eq(&kept, &cache.get(&cand("n1", text))));
        assert_eq!(cache.len(), 1);
    }

    fn vectors(words: &[&str]) -> WordVectors {
        let flat: Vec<f32> = (0..words.len() * 4).map(|i| (i as f32).sin()).collect();
        WordVectors::new(4, words.iter().map(|w| (*w).into()).collect(), &flat)
    }

    #[test]
    fn word_vectors_are_kept_for_their_text_only_bounded_and_forgotten() {
        let cache = TextCache::with_words(16, 8);
        let a = cand("c1", "send the report");
        // Kept as given (the embedding service has dropped the function words).
        cache.put_words("c1", &a.free_text, vectors(&["send", "report"]));
        let kept = cache.words(&a).expect("kept");
        assert_eq!(kept.words.len(), 2);
        assert_eq!(kept.words.word(1), "report");
        assert!(cache.words(&cand("c1", "send the other report")).is_none());
        for i in 0..100 {
            cache.put_words(&format!("x{i}"), "a text", vectors(&["text"]));
        }
        assert!(cache.words_len() <= 8, "{} kept", cache.words_len());
        cache.put_words("c1", &a.free_text, vectors(&["send", "report"]));
        cache.forget(["c1"]);
        assert!(cache.words(&a).is_none());
        assert!(TextCache::new(16).words(&a).is_none());
    }

    #[test]
    fn the_cache_is_bounded_and_zero_keeps_nothing() {
        let cache = TextCache::new(100);
        for i in 0..1_000 {
            cache.get(&cand(
                &format!("c{i}"),
                &format!("note number {i} for the team"),
            ));
        }
        assert!(cache.len() <= 100, "{} entries kept", cache.len());
        assert!(cache.len() >= 50, "{} entries kept", cache.len());
        let off = TextCache::new(0);
        let a = cand("c1", "anything at all");
        assert_eq!(off.get(&a).text, PreparedText::new(&a.free_text));
        assert!(off.is_empty());
    }
}
