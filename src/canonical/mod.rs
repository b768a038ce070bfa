//! Canonical form of a tool call: the normal form two retries of one action share.
//!
//! Pure functions only. `normalize` puts any JSON value in normal form (sorted keys, NFC,
//! collapsed whitespace, one number form); `CanonicalCall::build` applies a tool's policy
//! (ignored fields, schema defaults), splits the arguments into identity and free-text fields
//! and computes the hashes the funnel matches on.

mod classify;
mod number;

pub use classify::{FieldKind, classify_string};

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

/// How a tool's arguments are to be read; built from the tool policy and server config.
#[derive(Debug, Clone, Default)]
pub struct CanonPolicy {
    /// Field names dropped at the top level wherever they appear (framework metadata).
    pub ignored_names: HashSet<String>,
    /// Dotted paths dropped (tool policy).
    pub ignored_paths: HashSet<String>,
    /// Dotted paths that are identity, whatever their value looks like.
    pub identity_fields: HashSet<String>,
    /// Dotted paths that are free text, whatever their value looks like.
    pub free_text_fields: HashSet<String>,
    /// Schema defaults: a top-level field equal to its (normalised) default is dropped.
    pub defaults: Map<String, Value>,
}

/// A call in canonical form, with what the funnel stages match on.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalCall {
    /// Tool name (trimmed, NFC).
    pub tool: String,
    /// The normalised arguments after ignored fields and defaults are dropped.
    pub arguments: Value,
    /// `arguments` serialised compactly (sorted keys): the exact-match form.
    pub canonical_json: String,
    /// Identity-bearing leaves, by dotted path.
    pub identity: BTreeMap<String, Value>,
    /// Free-text leaves, by dotted path.
    pub free_text: BTreeMap<String, String>,
    /// Hash of tool + identity leaves: calls with different fingerprints are different actions.
    pub identity_fingerprint: String,
    /// Hash of tool + canonical JSON: equal hashes are exact repeats.
    pub exact_hash: String,
    /// All free text joined in path order (computed once; the similarity stages compare it).
    text: String,
}

impl CanonicalCall {
    /// Canonicalises `arguments` (which must be a JSON object) of `tool` under `policy`.
    pub fn build(tool: &str, arguments: &Value, policy: &CanonPolicy) -> Result<Self, CanonError> {
        let Value::Object(obj) = arguments else {
            return Err(CanonError::NotAnObject(json_type(arguments)));
        };
        let tool = normalize_str(tool);
        let mut top = Map::new();
        for (k, v) in obj {
            let key = normalize_str(k);
            if policy.ignored_names.contains(&key)
                || policy.ignored_names.contains(&key.to_lowercase())
            {
                continue;
            }
            top.insert(key, normalize(v));
        }
        let mut args = Value::Object(top);
        for path in &policy.ignored_paths {
            remove_path(&mut args, path);
        }
        if let Value::Object(m) = &mut args {
            for (k, default) in &policy.defaults {
                if m.get(k).is_some_and(|v| *v == normalize(default)) {
                    m.remove(k);
                }
            }
        }
        let canonical_json = args.to_string();
        let mut identity = BTreeMap::new();
        let mut free_text = BTreeMap::new();
        split_leaves(&args, String::new(), policy, &mut identity, &mut free_text);
        let identity_fingerprint = fingerprint(&tool, &identity, &free_text);
        let exact_hash = hash_parts(&["exact", &tool, &canonical_json]);
        let text = free_text
            .values()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Self {
            tool,
            arguments: args,
            canonical_json,
            identity,
            free_text,
            identity_fingerprint,
            exact_hash,
            text,
        })
    }

    /// All free text joined in path order: what the fuzzy and semantic stages compare.
    pub fn free_text_joined(&self) -> &str {
        &self.text
    }
}

/// Why arguments could not be canonicalised.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CanonError {
    /// Tool arguments must be a JSON object.
    #[error("arguments must be a JSON object, got {0}")]
    NotAnObject(&'static str),
}

/// Puts a JSON value in normal form: sorted keys, NFC strings with trimmed and collapsed
/// whitespace, one number form, canonical-number strings as numbers. A fixed point.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut sorted: BTreeMap<String, Value> = BTreeMap::new();
            for (k, v) in m {
                sorted.insert(normalize_str(k), normalize(v));
            }
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::String(s) => {
            let s = case_insensitive_parts(normalize_str(s));
            number::parse_numeric_string(&s).unwrap_or(Value::String(s))
        }
        Value::Number(n) => number::normalize_number(n),
        other => other.clone(),
    }
}

/// Lower-cases what is case-insensitive by definition: a whole email address (mail systems
/// treat addresses case-insensitively in practice) and a URL's scheme and host (RFC 3986).
/// Paths, queries and every other string keep their case.
fn case_insensitive_parts(s: String) -> String {
    if s.contains(' ') {
        return s;
    }
    if let Some((local, domain)) = s.split_once('@') {
        if !local.is_empty() && domain.contains('.') && !domain.contains(['@', '/', ':']) {
            return s.to_lowercase();
        }
        return s;
    }
    if let Some((scheme, rest)) = s.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        // Keep user info as given; lower-case the host (and port).
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        return format!(
            "{}://{userinfo}{}{tail}",
            scheme.to_ascii_lowercase(),
            host.to_lowercase()
        );
    }
    s
}

/// NFC, trimmed, inner whitespace runs collapsed to one space.
pub fn normalize_str(s: &str) -> String {
    let nfc: String = s.nfc().collect();
    let mut out = String::with_capacity(nfc.len());
    for word in nfc.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn remove_path(value: &mut Value, path: &str) {
    let mut parts = path.split('.').peekable();
    let mut cur = value;
    while let Some(part) = parts.next() {
        let Value::Object(m) = cur else { return };
        if parts.peek().is_none() {
            m.remove(part);
            return;
        }
        match m.get_mut(part) {
            Some(next) => cur = next,
            None => return,
        }
    }
}

fn split_leaves(
    value: &Value,
    path: String,
    policy: &CanonPolicy,
    identity: &mut BTreeMap<String, Value>,
    free_text: &mut BTreeMap<String, String>,
) {
    let forced_identity = !path.is_empty() && policy.identity_fields.contains(&path);
    let forced_text = !path.is_empty() && policy.free_text_fields.contains(&path);
    if forced_identity {
        identity.insert(path, value.clone());
        return;
    }
    match value {
        Value::Object(m) => {
            if m.is_empty() && !path.is_empty() {
                identity.insert(path.clone(), value.clone());
            }
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                split_leaves(v, p, policy, identity, free_text);
            }
        }
        Value::Array(a) => {
            if a.is_empty() {
                identity.insert(path.clone(), value.clone());
            }
            for (i, v) in a.iter().enumerate() {
                split_leaves(v, format!("{path}[{i}]"), policy, identity, free_text);
            }
        }
        Value::String(s) if forced_text => {
            free_text.insert(path, s.clone());
        }
        Value::String(s) => {
            // A policy that names free-text fields makes every other string identity.
            let inferred =
                policy.free_text_fields.is_empty() && classify_string(s) == FieldKind::FreeText;
            if inferred {
                free_text.insert(path, s.clone());
            } else {
                identity.insert(path, value.clone());
            }
        }
        other => {
            identity.insert(path, other.clone());
        }
    }
}

/// Hash of the tool, the identity leaves and the *names* of the free-text fields (a call with a
/// message body and one without are different actions, whatever the body says).
fn fingerprint(
    tool: &str,
    identity: &BTreeMap<String, Value>,
    free_text: &BTreeMap<String, String>,
) -> String {
    let body = serde_json::to_string(identity).unwrap_or_default();
    let text_fields = free_text
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\u{1f}");
    hash_parts(&["identity", tool, &body, &text_fields])
}

/// Hex blake3 of length-prefixed parts (unambiguous concatenation).
pub fn hash_parts(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().to_hex()[..32].to_string()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
