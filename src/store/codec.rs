//! The embedded store's encoding of a record: compact binary, with the embedding inline as int8.
//!
//! JSON spent a third of a record on field names and escapes, and the f32 embedding beside it
//! was bigger than the record. Here strings are length-prefixed, hex digests packed to bytes,
//! numbers varints, and the embedding is scalar-quantised (`index::int8`, the form the vector
//! index keeps anyway: re-quantising it gives the same codes). Every record starts with
//! [`FORMAT`]; anything else is reported as corrupt, never guessed at. The encoder destructures
//! `Record`, so a new field does not compile until it is encoded here.

use crate::index::int8;
use crate::record::{CallStatus, Record, ResourceMark};

use super::StoreError;

/// First byte of every encoded record.
pub(super) const FORMAT: u8 = 4;
/// The format before the resource mark: still read, as a record without one.
const FORMAT_3: u8 = 3;
/// The format before the action fields (action key, attempt, superseded by, compensation):
/// still read, those fields taken as a first attempt's.
const FORMAT_2: u8 = 2;

/// An embedding as stored: int8 codes and their scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct StoredEmbedding<'a> {
    pub scale: f32,
    pub codes: &'a [u8],
}

impl StoredEmbedding<'_> {
    /// The f32 vector it stands for.
    pub fn to_vec(self) -> Vec<f32> {
        self.codes
            .iter()
            .map(|&c| f32::from(c as i8) * self.scale)
            .collect()
    }
}

/// Encodes `r`; `embedding` is stored in place of `r.embedding` when given (an update keeps
/// the stored one), else `r.embedding` is quantised.
pub(super) fn encode(r: &Record, keep: Option<StoredEmbedding<'_>>) -> Vec<u8> {
    encode_with(r, keep, true)
}

/// Encodes `r` without its embedding and free text, for a store that keeps both apart
/// (Redis: the vector key and the candidate view); decoded with an empty free text.
pub(super) fn encode_apart(r: &Record) -> Vec<u8> {
    encode_with(r, None, false)
}

fn encode_with(r: &Record, keep: Option<StoredEmbedding<'_>>, inline: bool) -> Vec<u8> {
    let Record {
        id,
        tenant,
        session,
        match_scope,
        tool,
        arguments_json,
        canonical_json,
        exact_hash,
        identity_fingerprint,
        free_text,
        idempotency_key,
        status,
        result_json,
        error,
        cost,
        supersedes,
        previous_attempt_unknown,
        created_at_ms,
        updated_at_ms,
        lease_until_ms,
        expires_at_ms,
        nearest_call_id,
        embedding,
        action_key,
        attempt,
        superseded_by,
        compensation_json,
        resource,
    } = r;
    let mut out = Vec::with_capacity(
        256 + arguments_json.len() + canonical_json.len() + free_text.len() + 400,
    );
    out.push(FORMAT);
    for s in [id, tenant, session, match_scope, tool] {
        put_str(&mut out, s);
    }
    put_str(&mut out, arguments_json);
    put_str(&mut out, canonical_json);
    put_digest(&mut out, exact_hash);
    put_digest(&mut out, identity_fingerprint);
    put_str(&mut out, if inline { free_text } else { "" });
    put_opt(&mut out, idempotency_key.as_deref());
    out.push(match status {
        CallStatus::InProgress => 0,
        CallStatus::Succeeded => 1,
        CallStatus::Failed => 2,
    });
    put_opt(&mut out, result_json.as_deref());
    put_opt(&mut out, error.as_deref());
    match cost {
        Some(c) => {
            out.push(1);
            out.extend_from_slice(&c.to_le_bytes());
        }
        None => out.push(0),
    }
    put_opt(&mut out, supersedes.as_deref());
    out.push(u8::from(*previous_attempt_unknown));
    for t in [created_at_ms, updated_at_ms, lease_until_ms, expires_at_ms] {
        put_varint(&mut out, zigzag(*t));
    }
    put_opt(&mut out, nearest_call_id.as_deref());
    put_str(&mut out, action_key);
    put_varint(&mut out, u64::from(*attempt));
    put_opt(&mut out, superseded_by.as_deref());
    put_opt(&mut out, compensation_json.as_deref());
    match resource {
        Some(m) => {
            out.push(1);
            put_str(&mut out, &m.key);
            put_varint(&mut out, m.generation);
            put_varint(&mut out, zigzag(m.since_ms));
        }
        None => out.push(0),
    }
    match (keep, embedding) {
        _ if !inline => put_varint(&mut out, 0),
        (Some(e), _) => put_embedding(&mut out, e.scale, e.codes),
        (None, Some(v)) => {
            let (codes, scale) = int8::quantize(v);
            let codes: Vec<u8> = codes.into_iter().map(|c| c as u8).collect();
            put_embedding(&mut out, scale, &codes);
        }
        (None, None) => put_varint(&mut out, 0),
    }
    out
}

/// Decodes a record (its `embedding` left `None`) and the stored embedding, if any, borrowed
/// from `bytes`.
pub(super) fn decode<'a>(
    key: &str,
    bytes: &'a [u8],
) -> Result<(Record, Option<StoredEmbedding<'a>>), StoreError> {
    let mut d = Decoder { bytes, at: 0, key };
    let format = d.byte()?;
    if !(FORMAT_2..=FORMAT).contains(&format) {
        return Err(d.corrupt(&format!(
            "record format byte {format}, expected {FORMAT_2} to {FORMAT}"
        )));
    }
    let (id, tenant, session, match_scope, tool) =
        (d.str()?, d.str()?, d.str()?, d.str()?, d.str()?);
    let (arguments_json, canonical_json) = (d.str()?, d.str()?);
    let (exact_hash, identity_fingerprint) = (d.digest()?, d.digest()?);
    let free_text = d.str()?;
    let idempotency_key = d.opt()?;
    let status = match d.byte()? {
        0 => CallStatus::InProgress,
        1 => CallStatus::Succeeded,
        2 => CallStatus::Failed,
        other => return Err(d.corrupt(&format!("status byte {other}"))),
    };
    let (result_json, error) = (d.opt()?, d.opt()?);
    let cost = match d.byte()? {
        0 => None,
        _ => Some(f64::from_le_bytes(d.array()?)),
    };
    let supersedes = d.opt()?;
    let previous_attempt_unknown = d.byte()? != 0;
    let mut times = [0i64; 4];
    for t in &mut times {
        *t = unzigzag(d.varint()?);
    }
    let nearest_call_id = d.opt()?;
    let (action_key, attempt, superseded_by, compensation_json) = if format == FORMAT_2 {
        (id.clone(), 1, None, None)
    } else {
        let action_key = d.str()?;
        let attempt = u32::try_from(d.varint()?).map_err(|_| d.corrupt("attempt"))?;
        (action_key, attempt, d.opt()?, d.opt()?)
    };
    let resource = if format <= FORMAT_3 || d.byte()? == 0 {
        None
    } else {
        Some(ResourceMark {
            key: d.str()?,
            generation: d.varint()?,
            since_ms: unzigzag(d.varint()?),
        })
    };
    let dim = usize::try_from(d.varint()?).map_err(|_| d.corrupt("embedding length"))?;
    let embedding = if dim == 0 {
        None
    } else {
        let scale = f32::from_le_bytes(d.array()?);
        Some(StoredEmbedding {
            scale,
            codes: d.take(dim)?,
        })
    };
    if d.at != bytes.len() {
        return Err(d.corrupt("trailing bytes"));
    }
    let [created_at_ms, updated_at_ms, lease_until_ms, expires_at_ms] = times;
    let record = Record {
        id,
        tenant,
        session,
        match_scope,
        tool,
        arguments_json,
        canonical_json,
        exact_hash,
        identity_fingerprint,
        free_text,
        idempotency_key,
        status,
        result_json,
        error,
        cost,
        supersedes,
        previous_attempt_unknown,
        created_at_ms,
        updated_at_ms,
        lease_until_ms,
        expires_at_ms,
        nearest_call_id,
        embedding: None,
        action_key,
        attempt,
        superseded_by,
        compensation_json,
        resource,
    };
    Ok((record, embedding))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

/// A lowercase hex digest as its bytes (tag 1), anything else as a string (tag 0).
fn put_digest(out: &mut Vec<u8>, s: &str) {
    let packable = !s.is_empty()
        && s.len().is_multiple_of(2)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !packable {
        out.push(0);
        put_str(out, s);
        return;
    }
    out.push(1);
    put_varint(out, (s.len() / 2) as u64);
    let nibble = |b: u8| {
        if b.is_ascii_digit() {
            b - b'0'
        } else {
            b - b'a' + 10
        }
    };
    for pair in s.as_bytes().chunks_exact(2) {
        out.push(nibble(pair[0]) << 4 | nibble(pair[1]));
    }
}

fn put_embedding(out: &mut Vec<u8>, scale: f32, codes: &[u8]) {
    put_varint(out, codes.len() as u64);
    out.extend_from_slice(&scale.to_le_bytes());
    out.extend_from_slice(codes);
}

struct Decoder<'a, 'k> {
    bytes: &'a [u8],
    at: usize,
    key: &'k str,
}

impl<'a> Decoder<'a, '_> {
    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Corrupt {
            id: self.key.to_string(),
            reason: format!("{what} at byte {} of {}", self.at, self.bytes.len()),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.corrupt("truncated record"))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint longer than 64 bits"))
    }

    fn str(&mut self) -> Result<String, StoreError> {
        let n = usize::try_from(self.varint()?).map_err(|_| self.corrupt("string length"))?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("string is not UTF-8"))
    }

    fn opt(&mut self) -> Result<Option<String>, StoreError> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            other => Err(self.corrupt(&format!("option tag {other}"))),
        }
    }

    fn digest(&mut self) -> Result<String, StoreError> {
        match self.byte()? {
            0 => self.str(),
            1 => {
                let n = usize::try_from(self.varint()?).map_err(|_| self.corrupt("digest"))?;
                let b = self.take(n)?;
                let mut s = String::with_capacity(2 * n);
                for byte in b {
                    s.push(hex(byte >> 4));
                    s.push(hex(byte & 0xf));
                }
                Ok(s)
            }
            other => Err(self.corrupt(&format!("digest tag {other}"))),
        }
    }
}

fn hex(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;
    use crate::index::testdata::unit_vectors;

    fn record() -> Record {
        Record {
            id: "0190c3a2-7b1e-7c3d-9f00-123456789abc".into(),
            tenant: "t".into(),
            session: "s".into(),
            match_scope: "t\u{1f}s".into(),
            tool: "send_email".into(),
            arguments_json: r#"{"to":"a@b.c","body":"hello \"there\" ünïcode"}"#.into(),
            canonical_json: r#"{"body":"hello \"there\" ünïcode","to":"a@b.c"}"#.into(),
            exact_hash: blake3::hash(b"x").to_hex().to_string(),
            identity_fingerprint: "not-hex: Fp".into(),
            free_text: "hello \"there\" ünïcode".into(),
            idempotency_key: Some("k1".into()),
            status: CallStatus::Succeeded,
            result_json: Some("{\"ok\":true}".into()),
            error: None,
            cost: Some(2.5),
            supersedes: None,
            previous_attempt_unknown: true,
            created_at_ms: 1_733_000_000_123,
            updated_at_ms: -5,
            lease_until_ms: 0,
            expires_at_ms: i64::MAX,
            nearest_call_id: Some("n".into()),
            embedding: None,
            action_key: "0190c3a2-0000-7c3d-9f00-123456789abc".into(),
            attempt: 3,
            superseded_by: Some("later".into()),
            compensation_json: Some("{\"undo\":\"refund\"}".into()),
            resource: Some(ResourceMark {
                key: "res".into(),
                generation: 7,
                since_ms: 1_733_000_000_100,
            }),
        }
    }

    #[test]
    fn a_format_2_record_reads_as_a_first_attempt_of_its_own_action() {
        let r = Record {
            action_key: String::new(),
            attempt: 1,
            superseded_by: None,
            compensation_json: None,
            resource: None,
            ..record()
        };
        let bytes = encode(&r, None);
        // Format 3 adds, before the embedding (here none: one 0 byte), an empty action key
        // (0), attempt 1 and two absent options; format 4 an absent resource mark: format 2
        // is the same bytes without them.
        let n = bytes.len();
        assert_eq!(&bytes[n - 6..], [0, 1, 0, 0, 0, 0]);
        let mut three = bytes[..n - 2].to_vec();
        three.push(0);
        three[0] = FORMAT_3;
        assert_eq!(decode(&r.id, &three).unwrap().0, r);
        let mut old = bytes[..n - 6].to_vec();
        old.push(0);
        old[0] = FORMAT_2;
        let (back, _) = decode(&r.id, &old).unwrap();
        assert_eq!(
            back,
            Record {
                action_key: r.id.clone(),
                ..r
            }
        );
    }

    #[test]
    fn a_record_round_trips_and_its_embedding_is_kept_as_int8() {
        let mut r = record();
        let bytes = encode(&r, None);
        let (back, emb) = decode(&r.id, &bytes).unwrap();
        assert_eq!((back, emb), (r.clone(), None));

        let v = unit_vectors(1, 384, 1).remove(0);
        r.embedding = Some(v.clone());
        let bytes = encode(&r, None);
        let (back, emb) = decode(&r.id, &bytes).unwrap();
        assert_eq!(back.embedding, None);
        assert_eq!(
            back,
            Record {
                embedding: None,
                ..r.clone()
            }
        );
        let emb = emb.unwrap();
        assert_eq!(emb.codes.len(), 384);
        assert!(cosine(&emb.to_vec(), &v) > 0.999);
        // Kept as is by an update that carries no embedding.
        let again = encode(&back, Some(emb));
        assert_eq!(again, bytes);
    }

    #[test]
    fn damaged_bytes_are_reported_corrupt_never_decoded() {
        let bytes = encode(&record(), None);
        for cut in [0, 1, 10, bytes.len() - 1] {
            assert!(matches!(
                decode("k", &bytes[..cut]),
                Err(StoreError::Corrupt { .. })
            ));
        }
        let mut wrong = bytes.clone();
        wrong[0] = b'{';
        let Err(StoreError::Corrupt { reason, .. }) = decode("k", &wrong) else {
            panic!("a JSON-looking record decoded");
        };
        assert!(reason.contains("format"), "{reason}");
        let mut longer = bytes;
        longer.push(0);
        assert!(matches!(
            decode("k", &longer),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
