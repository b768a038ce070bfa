//! Reads JSON text into a [`CanonValue`], keeping every number literal exact.
//!
//! serde_json checks the grammar first (its messages name line and column); this reader then
//! walks the known-good text once. Nesting is bounded ([`MAX_DEPTH`], serde_json's own limit),
//! so hostile input cannot overflow the stack. A repeated key keeps its last value, as in
//! serde_json.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;

use super::CanonError;
use super::number::{CanonNumber, NumberError};
use super::value::CanonValue;

/// Deepest nesting of arrays and objects accepted (serde_json's own limit for a `Value` is
/// about the same, so nothing it accepted before is refused now).
pub const MAX_DEPTH: usize = 128;

/// Parses `text` (one JSON value) with exact numbers.
pub fn parse(text: &str) -> Result<CanonValue, CanonError> {
    serde_json::from_str::<IgnoredAny>(text).map_err(|e| CanonError::InvalidJson(e.to_string()))?;
    let mut r = Reader { text, pos: 0 };
    let v = r.value(0)?;
    r.skip_ws();
    if r.pos != text.len() {
        return Err(r.invalid("trailing characters"));
    }
    Ok(v)
}

struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn value(&mut self, depth: usize) -> Result<CanonValue, CanonError> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(CanonValue::String),
            Some(b't') => self.word("true", CanonValue::Bool(true)),
            Some(b'f') => self.word("false", CanonValue::Bool(false)),
            Some(b'n') => self.word("null", CanonValue::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.invalid("expected a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<CanonValue, CanonError> {
        self.check_depth(depth)?;
        self.pos += 1;
        let mut m = BTreeMap::new();
        self.skip_ws();
        if self.eat(b'}') {
            return Ok(CanonValue::Object(m));
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            self.skip_ws();
            if !self.eat(b':') {
                return Err(self.invalid("expected `:`"));
            }
            let v = self.value(depth)?;
            m.insert(key, v);
            self.skip_ws();
            if self.eat(b',') {
                continue;
            }
            if self.eat(b'}') {
                return Ok(CanonValue::Object(m));
            }
            return Err(self.invalid("expected `,` or `}`"));
        }
    }

    fn array(&mut self, depth: usize) -> Result<CanonValue, CanonError> {
        self.check_depth(depth)?;
        self.pos += 1;
        let mut a = Vec::new();
        self.skip_ws();
        if self.eat(b']') {
            return Ok(CanonValue::Array(a));
        }
        loop {
            a.push(self.value(depth)?);
            self.skip_ws();
            if self.eat(b',') {
                continue;
            }
            if self.eat(b']') {
                return Ok(CanonValue::Array(a));
            }
            return Err(self.invalid("expected `,` or `]`"));
        }
    }

    /// A string literal; escapes are decoded by serde_json (surrogate pairs and all).
    fn string(&mut self) -> Result<String, CanonError> {
        let start = self.pos;
        if !self.eat(b'"') {
            return Err(self.invalid("expected a string"));
        }
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        loop {
            match bytes.get(self.pos) {
                None => return Err(self.invalid("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 2;
                }
                Some(_) => self.pos += 1,
            }
        }
        self.pos += 1;
        let literal = self
            .text
            .get(start..self.pos)
            .ok_or_else(|| self.invalid("unterminated string"))?;
        if !escaped {
            return Ok(literal[1..literal.len() - 1].to_string());
        }
        serde_json::from_str(literal).map_err(|e| CanonError::InvalidJson(e.to_string()))
    }

    fn number(&mut self) -> Result<CanonValue, CanonError> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        while let Some(b) = bytes.get(self.pos) {
            if b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E') {
                self.pos += 1;
            } else {
                break;
            }
        }
        let literal = &self.text[start..self.pos];
        match CanonNumber::parse_literal(literal) {
            Ok(n) => Ok(CanonValue::Number(n)),
            Err(NumberError::OutOfRange) => Err(CanonError::NumberOutOfRange(literal.into())),
            Err(NumberError::Syntax) => Err(self.invalid("malformed number")),
        }
    }

    fn word(&mut self, word: &str, v: CanonValue) -> Result<CanonValue, CanonError> {
        if self
            .text
            .get(self.pos..)
            .is_some_and(|t| t.starts_with(word))
        {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.invalid("expected a value"))
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), CanonError> {
        if depth > MAX_DEPTH {
            return Err(CanonError::TooDeep(MAX_DEPTH));
        }
        Ok(())
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Text serde_json accepted but this reader did not: a bug here, reported as bad JSON
    /// rather than a panic.
    fn invalid(&self, what: &str) -> CanonError {
        CanonError::InvalidJson(format!("{what} at byte {}", self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_keep_their_exact_value() {
        let v =
            parse(r#"{"a": 1000000000000000000001, "b": 1e21, "c": [0.30000000000000004, -0.0]}"#)
                .unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"a":1000000000000000000001,"b":1000000000000000000000,"c":[0.30000000000000004,0]}"#
        );
    }

    #[test]
    fn agrees_with_serde_json_where_serde_json_is_exact() {
        let text = r#" { "s" : "a\"b\\c\u00e9\ud83d\ude00\n" , "n" : [ -12 , 3.5 , true , false , null , { } , [ ] ] ,
            "s" : "last wins" } "#;
        let serde: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text).unwrap(), CanonValue::from(&serde));
        assert_eq!(parse(r#""x""#).unwrap(), CanonValue::from(&json!("x")));
    }

    #[test]
    fn bad_json_and_deep_nesting_are_refused() {
        for text in ["", "{", "[1,]", "{\"a\" 1}", "01", "1 2", "\"\\ud800\""] {
            assert!(
                matches!(parse(text), Err(CanonError::InvalidJson(_))),
                "{text:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(
            parse(&deep),
            Err(CanonError::TooDeep(_) | CanonError::InvalidJson(_))
        ));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(parse(&ok).is_ok());
        assert!(matches!(
            parse("1e99999999999"),
            Err(CanonError::NumberOutOfRange(_))
        ));
    }
}
