//! One number form: `1`, `1.0`, `1e0` and `"1"` are the same number.
//!
//! Integral values that fit i64/u64 become integers; other finite values keep serde_json's
//! shortest round-trip form. Strings are read as numbers only when they are plain decimal
//! literals that survive the trip exactly (so `"007"`, `"1e3"` or a 20-digit card number stay
//! strings: leading zeros and long digit runs are identifiers, not quantities).

use serde_json::{Number, Value};

/// Largest integer an f64 holds exactly.
const F64_EXACT: f64 = 9_007_199_254_740_992.0;

/// Normalises a JSON number.
pub fn normalize_number(n: &Number) -> Value {
    if n.is_i64() || n.is_u64() {
        return Value::Number(n.clone());
    }
    match n.as_f64() {
        Some(f) => from_f64(f),
        None => Value::Number(n.clone()),
    }
}

fn from_f64(f: f64) -> Value {
    if f == 0.0 {
        return Value::Number(0.into());
    }
    if f.fract() == 0.0 && f.abs() < F64_EXACT {
        return Value::Number((f as i64).into());
    }
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Reads a string as a number when it is a plain decimal literal: optional `-`, digits without
/// a leading zero (or a lone `0`), optional fraction; at most 15 significant digits.
pub fn parse_numeric_string(s: &str) -> Option<Value> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if int.len() > 1 && int.starts_with('0') {
        return None;
    }
    if let Some(f) = frac
        && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let significant = int.trim_start_matches('0').len() + frac.map_or(0, str::len);
    if significant > 15 {
        return None;
    }
    if frac.is_none()
        && let Ok(i) = s.parse::<i64>()
    {
        return Some(Value::Number(i.into()));
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(from_f64)
}
