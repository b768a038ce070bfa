//! How values are written in Redis: records as JSON, embeddings as little-endian f32 bytes,
//! the candidate view as `created SEP expires SEP free text`, expiries as record lifetimes.

use super::super::{Candidate, SEP, StoreError};
use crate::clock::Millis;
use crate::record::Record;

/// How long Redis keeps a record past its expiry, so the sweep (which also drops it from
/// the vector indexes) finds it; Redis deletes it then even when no instance sweeps.
pub(super) const EXPIRY_GRACE_MS: i64 = 10 * 60 * 1000;

pub(super) fn ttl_ms(created: Millis, expires: Millis) -> i64 {
    expires
        .saturating_sub(created)
        .max(1)
        .saturating_add(EXPIRY_GRACE_MS)
}

pub(super) fn corrupt(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_string(),
        reason: e.to_string(),
    }
}

pub(super) fn decode(id: &str, json: &str) -> Result<Record, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt(id, e))
}

pub(super) fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

pub(super) fn vector_of(id: &str, b: &[u8]) -> Result<Vec<f32>, StoreError> {
    if !b.len().is_multiple_of(4) {
        return Err(corrupt(id, format!("embedding of {} bytes", b.len())));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub(super) fn candidate_of(id: &str, view: &str) -> Result<Candidate, StoreError> {
    let mut parts = view.splitn(3, SEP);
    let mut num = || {
        parts
            .next()
            .and_then(|p| p.parse::<Millis>().ok())
            .ok_or_else(|| corrupt(id, "candidate view"))
    };
    let created_at_ms = num()?;
    let expires_at_ms = num()?;
    let free_text = parts
        .next()
        .ok_or_else(|| corrupt(id, "candidate view without free text"))?
        .to_string();
    Ok(Candidate {
        id: id.to_string(),
        created_at_ms,
        expires_at_ms,
        free_text,
    })
}

/// The candidate view of a record.
pub(super) fn view_of(r: &Record) -> String {
    format!(
        "{}{SEP}{}{SEP}{}",
        r.created_at_ms, r.expires_at_ms, r.free_text
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_view_round_trips_free_text_with_separators() {
        let c = candidate_of("a", &format!("10{SEP}20{SEP}text{SEP}with sep")).unwrap();
        assert_eq!((c.created_at_ms, c.expires_at_ms), (10, 20));
        assert_eq!(c.free_text, format!("text{SEP}with sep"));
        assert!(candidate_of("a", "10").is_err());
    }

    #[test]
    fn vectors_round_trip_and_torn_bytes_are_corrupt() {
        let v = [0.25f32, -1.0, 3.5];
        assert_eq!(vector_of("a", &vector_bytes(&v)).unwrap(), v);
        assert!(matches!(
            vector_of("a", &[0, 1, 2]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
