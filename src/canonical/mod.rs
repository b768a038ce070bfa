//! Canonical form of a tool call: the normal form two retries of one action share.
//!
//! Pure functions only. `normalize` puts any JSON value in normal form (sorted keys, NFC,
//! collapsed whitespace, one exact spelling per number); `CanonicalCall::build` applies a
//! tool's policy (ignored fields, schema-typed numbers, schema defaults), splits the arguments
//! into identity and free-text fields and computes the hashes the funnel matches on. The one
//! decision to know: identity values compare exactly. Strings stay strings (`"1.10"` is not
//! `"1.1"`), numbers keep every digit (no f64 round trip), and a string is a number only when it
//! is that number's canonical text or the tool's schema types the field as a number.

mod classify;
mod number;
mod parse;
mod schema;
mod value;

pub use classify::{FieldKind, classify_string};
pub use number::CanonNumber;
pub use parse::{MAX_DEPTH, parse};
pub use schema::numeric_paths;
pub use value::CanonValue;

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde_json::Value;
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
    /// Paths the tool's schema types as numbers (dotted, `[]` for every array element, as
    /// [`numeric_paths`] gives them): a string there that is a JSON number literal is that
    /// number (`"2.0"` = `2`). Everywhere else strings stay strings.
    pub numeric_fields: HashSet<String>,
    /// Schema defaults, normalised: a top-level field equal to its default is dropped.
    pub defaults: BTreeMap<String, CanonValue>,
}

/// A call in canonical form, with what the funnel stages match on.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalCall {
    /// Tool name (trimmed, NFC).
    pub tool: String,
    /// The normalised arguments after ignored fields and defaults are dropped.
    pub arguments: CanonValue,
    /// `arguments` serialised compactly (sorted keys, canonical numbers): the exact-match form.
    pub canonical_json: String,
    /// Identity-bearing leaves, by dotted path.
    pub identity: BTreeMap<String, CanonValue>,
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
    ///
    /// A `serde_json::Value` has already rounded numbers beyond u64/i64 to f64; where the
    /// arguments arrive as text, [`CanonicalCall::from_json`] keeps them exact.
    pub fn build(tool: &str, arguments: &Value, policy: &CanonPolicy) -> Result<Self, CanonError> {
        Self::from_value(tool, CanonValue::from(arguments), policy)
    }

    /// Canonicalises the JSON text `arguments` (an object) of `tool`, every number exact.
    pub fn from_json(
        tool: &str,
        arguments: &str,
        policy: &CanonPolicy,
    ) -> Result<Self, CanonError> {
        Self::from_value(tool, parse(arguments)?, policy)
    }

    /// Canonicalises an exact tree (an object) of `tool` under `policy`.
    pub fn from_value(
        tool: &str,
        arguments: CanonValue,
        policy: &CanonPolicy,
    ) -> Result<Self, CanonError> {
        let CanonValue::Object(obj) = arguments else {
            return Err(CanonError::NotAnObject(arguments.type_name()));
        };
        let tool = normalize_str(tool);
        let mut top = BTreeMap::new();
        for (k, v) in obj {
            let key = normalize_str(&k);
            if policy.ignored_names.contains(&key)
                || policy.ignored_names.contains(&key.to_lowercase())
            {
                continue;
            }
            top.insert(key, normalize_value(v));
        }
        let mut args = CanonValue::Object(top);
        for path in &policy.ignored_paths {
            remove_path(&mut args, path);
        }
        for path in &policy.numeric_fields {
            read_numbers_at(&mut args, path);
        }
        if let CanonValue::Object(m) = &mut args {
            for (k, default) in &policy.defaults {
                let numeric = policy.numeric_fields.contains(k);
                let is_default = m.get(k).is_some_and(|v| {
                    v == default || (numeric && number_in(default).is_some_and(|d| *v == d))
                });
                if is_default {
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

    /// Fingerprint of the resource the call acts on: the canonical values at the dotted
    /// `fields`, under the name of a tool pair (`pair`, in either order). `None` when a field
    /// is absent (such a call is not followed).
    pub fn resource_fingerprint(&self, pair: (&str, &str), fields: &[String]) -> Option<String> {
        let (a, b) = if pair.0 <= pair.1 {
            pair
        } else {
            (pair.1, pair.0)
        };
        let mut parts = vec!["resource".to_string(), a.to_string(), b.to_string()];
        for f in fields {
            let mut at = &self.arguments;
            for step in f.split('.') {
                match at {
                    CanonValue::Object(m) => at = m.get(step)?,
                    _ => return None,
                }
            }
            parts.push(f.clone());
            parts.push(at.to_string());
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        Some(hash_parts(&parts))
    }
}

/// Why arguments could not be canonicalised.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CanonError {
    /// Tool arguments must be a JSON object.
    #[error("arguments must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The arguments text is not JSON.
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    #[error("arrays and objects are nested deeper than {0} levels")]
    TooDeep(usize),
    /// A number literal whose exponent is beyond what idem compares (|exponent| > 10^9).
    #[error("number {0} is out of range: its exponent is beyond 10^9")]
    NumberOutOfRange(String),
}

/// Puts a JSON value in normal form: sorted keys, NFC strings with trimmed and collapsed
/// whitespace, one exact spelling per number, a number's canonical text (`"5"`, `"0.5"`) as
/// that number. A fixed point.
pub fn normalize(value: &Value) -> CanonValue {
    normalize_value(CanonValue::from(value))
}

/// [`normalize`] of an exact tree.
pub fn normalize_value(value: CanonValue) -> CanonValue {
    match value {
        CanonValue::Object(m) => {
            let mut sorted = BTreeMap::new();
            for (k, v) in m {
                sorted.insert(normalize_str(&k), normalize_value(v));
            }
            CanonValue::Object(sorted)
        }
        CanonValue::Array(a) => CanonValue::Array(a.into_iter().map(normalize_value).collect()),
        CanonValue::String(s) => {
            let s = case_insensitive_parts(normalize_str(&s));
            match CanonNumber::from_canonical_text(&s) {
                Some(n) => CanonValue::Number(n),
                None => CanonValue::String(s),
            }
        }
        other => other,
    }
}

/// The number a schema-typed leaf holds: itself, or a string that is a JSON number literal.
fn number_in(v: &CanonValue) -> Option<CanonValue> {
    match v {
        CanonValue::Number(_) => Some(v.clone()),
        CanonValue::String(s) => CanonNumber::parse(s).map(CanonValue::Number),
        _ => None,
    }
}

/// Reads the string leaves at `path` (dotted, `[]` for every array element) as numbers where
/// they are JSON number literals.
fn read_numbers_at(value: &mut CanonValue, path: &str) {
    if path.is_empty() {
        if let Some(n) = number_in(value) {
            *value = n;
        }
        return;
    }
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    let name = head.trim_end_matches("[]");
    let arrays = (head.len() - name.len()) / 2;
    if let CanonValue::Object(m) = value
        && let Some(child) = m.get_mut(name)
    {
        read_numbers_through(child, arrays, rest);
    }
}

fn read_numbers_through(value: &mut CanonValue, arrays: usize, rest: &str) {
    if arrays == 0 {
        read_numbers_at(value, rest);
    } else if let CanonValue::Array(a) = value {
        for v in a {
            read_numbers_through(v, arrays - 1, rest);
        }
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

fn remove_path(value: &mut CanonValue, path: &str) {
    let mut parts = path.split('.').peekable();
    let mut cur = value;
    while let Some(part) = parts.next() {
        let CanonValue::Object(m) = cur else { return };
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
    value: &CanonValue,
    path: String,
    policy: &CanonPolicy,
    identity: &mut BTreeMap<String, CanonValue>,
    free_text: &mut BTreeMap<String, String>,
) {
    let forced_identity = !path.is_empty() && policy.identity_fields.contains(&path);
    let forced_text = !path.is_empty() && policy.free_text_fields.contains(&path);
    if forced_identity {
        identity.insert(path, value.clone());
        return;
    }
    match value {
        CanonValue::Object(m) => {
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
        CanonValue::Array(a) => {
            if a.is_empty() {
                identity.insert(path.clone(), value.clone());
            }
            for (i, v) in a.iter().enumerate() {
                split_leaves(v, format!("{path}[{i}]"), policy, identity, free_text);
            }
        }
        CanonValue::String(s) if forced_text => {
            free_text.insert(path, s.clone());
        }
        CanonValue::String(s) => {
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
    identity: &BTreeMap<String, CanonValue>,
    free_text: &BTreeMap<String, String>,
) -> String {
    let body = IdentityText(identity).to_string();
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

/// The identity leaves as one JSON object (path -> canonical value): strings quoted, numbers
/// in their exact spelling, so no two different leaves write the same text.
struct IdentityText<'a>(&'a BTreeMap<String, CanonValue>);

impl fmt::Display for IdentityText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        value::write_object(f, self.0.iter())
    }
}

#[cfg(test)]
mod tests;
