//! How values are written in Redis: records in the embedded store's binary codec (JSON spent
//! a third of a record on field names), embeddings int8-quantised (`q`, f32 scale, codes: a
//! quarter of the f32 bytes, the form the vector index keeps anyway), the candidate view as
//! `created SEP expires SEP free text`, expiries as record lifetimes. Records as JSON and f32
//! embeddings, as earlier versions wrote them, are still read.

use super::super::codec;
use super::super::{Candidate, SEP, StoreError};
use crate::clock::Millis;
use crate::index::int8;
use crate::record::Record;

/// First byte of a quantised embedding: `q`, scale, codes. Its length is never a multiple of
/// 4 (an earlier version's f32 embedding always is): when it would be, the header is `Q`, a
/// zero byte, then scale and codes.
const QUANTISED: u8 = b'q';
/// The header of a quantised embedding padded by one byte.
const QUANTISED_PADDED: u8 = b'Q';

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

/// A record as stored: without its embedding (the vector key) and free text (the candidate
/// view holds it; it is written with the record and expires with it).
pub(super) fn record_bytes(r: &Record) -> Vec<u8> {
    codec::encode_apart(r)
}

/// A stored record with its candidate view (`view`, when read with it): the codec's bytes,
/// or JSON as earlier versions wrote it (free text included).
pub(super) fn decode(id: &str, bytes: &[u8], view: Option<&[u8]>) -> Result<Record, StoreError> {
    let mut r = if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| corrupt(id, e))?
    } else {
        codec::decode(id, bytes)?.0
    };
    if let Some(view) = view {
        let view = std::str::from_utf8(view).map_err(|e| corrupt(id, e))?;
        r.free_text = candidate_of(id, view)?.free_text;
    }
    Ok(r)
}

/// An embedding as stored: quantised to int8 with one scale (`index::int8`).
pub(super) fn vector_bytes(v: &[f32]) -> Vec<u8> {
    let (codes, scale) = int8::quantize(v);
    let padded = (v.len() + 5).is_multiple_of(4);
    let mut out = Vec::with_capacity(v.len() + 6);
    if padded {
        out.extend_from_slice(&[QUANTISED_PADDED, 0]);
    } else {
        out.push(QUANTISED);
    }
    out.extend_from_slice(&scale.to_le_bytes());
    out.extend(codes.into_iter().map(|c| c as u8));
    out
}

/// A stored embedding: quantised, or little-endian f32s as earlier versions wrote it.
pub(super) fn vector_of(id: &str, b: &[u8]) -> Result<Vec<f32>, StoreError> {
    let header = match b.first() {
        _ if b.len().is_multiple_of(4) => {
            return Ok(b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect());
        }
        Some(&QUANTISED) => 1,
        Some(&QUANTISED_PADDED) => 2,
        _ => return Err(corrupt(id, format!("embedding of {} bytes", b.len()))),
    };
    let Some((scale, codes)) = b
        .get(header..)
        .and_then(|rest| rest.split_first_chunk::<4>())
    else {
        return Err(corrupt(id, format!("embedding of {} bytes", b.len())));
    };
    let codes: Vec<i8> = codes.iter().map(|&c| c as i8).collect();
    Ok(int8::dequantize(&codes, f32::from_le_bytes(*scale)))
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
    fn vectors_round_trip_quantised_and_torn_bytes_are_corrupt() {
        // Every length class, the padded header included (3 + 5 is a multiple of 4).
        for dim in [1usize, 2, 3, 4, 7, 384] {
            let v: Vec<f32> = (0..dim)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
                .collect();
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            let unit: Vec<f32> = v.iter().map(|x| x / norm).collect();
            let b = vector_bytes(&unit);
            assert!(!b.len().is_multiple_of(4), "dim {dim}: {} bytes", b.len());
            assert!(b.len() <= dim + 6);
            let back = vector_of("a", &b).unwrap();
            assert_eq!(back.len(), dim);
            assert!(
                back.iter().zip(&unit).all(|(x, y)| (x - y).abs() < 0.01),
                "dim {dim}: {back:?} vs {unit:?}"
            );
        }
        assert!(matches!(
            vector_of("a", &[0, 1, 2]),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            vector_of("a", &[QUANTISED, 1, 2]),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn earlier_versions_f32_vectors_and_json_records_are_still_read() {
        let v = [0.25f32, -1.0, 3.5];
        let f32s: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        assert_eq!(vector_of("a", &f32s).unwrap(), v);
        let mut r = crate::store::conformance::rec("s1", 1, 1000);
        r.free_text = "the body of the call".into();
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(decode(&r.id, &json, None).unwrap(), r);
        let view = view_of(&r);
        let stored = record_bytes(&r);
        assert_eq!(decode(&r.id, &stored, Some(view.as_bytes())).unwrap(), r);
        assert!(decode(&r.id, &stored, None).unwrap().free_text.is_empty());
        assert!(stored.len() + r.free_text.len() < json.len());
    }
}
