//! The canonical JSON tree: serde_json's data model with exact numbers.
//!
//! serde_json (built without `arbitrary_precision`, which would change how every crate in the
//! build reads numbers) keeps a number as u64, i64 or f64, so `1e21` and
//! `1000000000000000000001` become the same f64. `CanonValue` keeps numbers as
//! [`CanonNumber`]s and writes its own compact JSON: keys sorted, strings escaped as serde_json
//! escapes them, numbers in their canonical spelling.

use std::collections::BTreeMap;
use std::fmt::{self, Write};

use serde_json::Value;

use super::number::CanonNumber;

/// A JSON value whose numbers are exact; objects keep keys sorted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CanonValue {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, exact.
    Number(CanonNumber),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<CanonValue>),
    /// An object, keys sorted.
    Object(BTreeMap<String, CanonValue>),
}

impl CanonValue {
    /// The JSON type in words, for error messages ("an array").
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Number(_) => "a number",
            Self::String(_) => "a string",
            Self::Array(_) => "an array",
            Self::Object(_) => "an object",
        }
    }
}

impl From<&Value> for CanonValue {
    /// A serde_json value as far as it is known: integers exactly, floats by their shortest
    /// round-trip decimal. (A non-finite float cannot be in a `Value`; were one there, it would
    /// be `null`, serde_json's own rule for them.)
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => {
                let exact = if let Some(u) = n.as_u64() {
                    Some(CanonNumber::from_i128(u.into()))
                } else if let Some(i) = n.as_i64() {
                    Some(CanonNumber::from_i128(i.into()))
                } else {
                    // serde_json's own text of the number (its shortest round-trip form), so a
                    // value read here and the same value sent as text canonicalise alike.
                    CanonNumber::parse(&n.to_string())
                        .or_else(|| n.as_f64().and_then(CanonNumber::from_f64))
                };
                exact.map_or(Self::Null, Self::Number)
            }
            Value::String(s) => Self::String(s.clone()),
            Value::Array(a) => Self::Array(a.iter().map(Self::from).collect()),
            Value::Object(m) => {
                Self::Object(m.iter().map(|(k, v)| (k.clone(), Self::from(v))).collect())
            }
        }
    }
}

impl fmt::Display for CanonValue {
    /// Compact JSON, keys sorted: the canonical text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Number(n) => f.write_str(n.as_str()),
            Self::String(s) => write_json_string(f, s),
            Self::Array(a) => {
                f.write_char('[')?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
            Self::Object(m) => write_object(f, m.iter()),
        }
    }
}

/// Writes `{"k":v,...}` in the iterator's order.
pub(crate) fn write_object<'a, W: Write>(
    out: &mut W,
    entries: impl Iterator<Item = (&'a String, &'a CanonValue)>,
) -> fmt::Result {
    out.write_char('{')?;
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write_json_string(out, k)?;
        out.write_char(':')?;
        write!(out, "{v}")?;
    }
    out.write_char('}')
}

/// A JSON string literal, escaped exactly as serde_json escapes (so canonical text is what
/// `serde_json::to_string` would give for the same tree).
fn write_json_string<W: Write>(out: &mut W, s: &str) -> fmt::Result {
    out.write_char('"')?;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.write_str(&s[start..i])?;
        if escape.is_empty() {
            write!(out, "\\u{:04x}", c as u32)?;
        } else {
            out.write_str(escape)?;
        }
        start = i + c.len_utf8();
    }
    out.write_str(&s[start..])?;
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_what_serde_json_writes_for_the_same_tree() {
        let v = json!({
            "b": [1, -2, true, null, "x\"y\\z\n\t\u{1}\u{7f}é"],
            "a": {"d": "", "c": 18446744073709551615u64},
            "e": 0.5,
        });
        assert_eq!(CanonValue::from(&v).to_string(), v.to_string());
    }
}
