//! Exact numbers: one canonical decimal spelling per value, never an f64 round trip.
//!
//! A JSON number literal is read as sign, digits and exponent and written back in one form
//! (`1e3`, `1000` and `1000.0` are all `1000`; `1e21` and `1000000000000000000001` stay
//! apart). A string is a number only when it is exactly a number's plain canonical text
//! (`"5"`, `"0.5"`; never `"1.10"`, `"2.0"`, `"007"` or `"1e3"`), unless a tool's schema types
//! the field as a number (see [`CanonNumber::parse`]).

use std::fmt;

/// Largest exponent magnitude accepted (value = digits x 10^exponent). Far beyond any quantity
/// a tool call carries; it only keeps the arithmetic on exponents from overflowing.
const MAX_EXPONENT: i64 = 1_000_000_000;

/// Longest plain spelling (without the sign); longer values are written in scientific form
/// (`1.5e300`), so a short literal such as `1e999999` cannot expand into a megabyte of zeros.
/// 100 characters hold every 256-bit integer (78 digits) plainly.
const MAX_PLAIN_CHARS: i64 = 100;

/// A JSON number in canonical form: its exact decimal value, spelt one way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CanonNumber(String);

/// Why a number literal was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NumberError {
    /// Not a JSON number literal.
    Syntax,
    /// The exponent is beyond [`MAX_EXPONENT`].
    OutOfRange,
}

impl CanonNumber {
    /// Reads a JSON number literal (RFC 8259 grammar: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`)
    /// exactly; `None` for anything else. The reading a schema-typed string field gets.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_literal(text).ok()
    }

    /// Like [`CanonNumber::parse`], saying why a literal was refused.
    pub(crate) fn parse_literal(text: &str) -> Result<Self, NumberError> {
        let lit = Literal::split(text).ok_or(NumberError::Syntax)?;
        let exp = lit.exponent()?;
        Ok(Self::from_parts(lit.negative, lit.int, lit.frac, exp))
    }

    /// The number a string *is*: only a number's plain canonical text (`"5"`, `"-0.25"`,
    /// `"1000000000000000000001"`) reads as that number. Leading zeros, trailing fraction zeros,
    /// exponents, `-0` and a `+` sign keep a string a string: `"1.10"` is a version, `"007"` an id.
    pub fn from_canonical_text(text: &str) -> Option<Self> {
        if text.contains(['e', 'E']) {
            return None;
        }
        Self::parse(text).filter(|n| n.0 == text)
    }

    /// The exact value of an `f64`: its shortest round-trip decimal (what serde_json prints).
    pub fn from_f64(f: f64) -> Option<Self> {
        if !f.is_finite() {
            return None;
        }
        // `{:e}` is the shortest round-trip form, e.g. `-1.5e-7`.
        let text = format!("{f:e}");
        let (mantissa, exp) = text.split_once('e')?;
        let negative = mantissa.starts_with('-');
        let mantissa = mantissa.trim_start_matches('-');
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let exp: i64 = exp.parse().ok()?;
        Some(Self::from_parts(
            negative,
            int,
            frac,
            exp - frac.len() as i64,
        ))
    }

    /// The exact value of an integer.
    pub fn from_i128(i: i128) -> Self {
        Self::from_parts(i < 0, &i.unsigned_abs().to_string(), "", 0)
    }

    /// The canonical spelling: valid JSON, and equal for equal values only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Builds the canonical spelling of `(-1)^negative x int.frac x 10^exp`, where `int` and
    /// `frac` are ASCII digit runs and `exp` is within [`MAX_EXPONENT`] (callers check).
    fn from_parts(negative: bool, int: &str, frac: &str, exp: i64) -> Self {
        // value = digits x 10^exponent, digits without leading or trailing zeros.
        let all: String = int.chars().chain(frac.chars()).collect();
        let digits = all.trim_start_matches('0');
        let trimmed = digits.trim_end_matches('0');
        if trimmed.is_empty() {
            return Self("0".to_string());
        }
        let exponent = exp + (digits.len() - trimmed.len()) as i64;
        let mut out = String::new();
        if negative {
            out.push('-');
        }
        write_decimal(&mut out, trimmed, exponent);
        Self(out)
    }
}

impl fmt::Display for CanonNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Writes `digits x 10^exponent` (digits non-empty, no leading or trailing zeros): plainly when
/// that takes at most [`MAX_PLAIN_CHARS`] characters, else as `d.ddde±x`.
fn write_decimal(out: &mut String, digits: &str, exponent: i64) {
    let n = digits.len() as i64;
    let plain_len = if exponent >= 0 {
        n + exponent
    } else if -exponent < n {
        n + 1
    } else {
        2 - exponent
    };
    if plain_len > MAX_PLAIN_CHARS {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push_str(&(exponent + n - 1).to_string());
    } else if exponent >= 0 {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', exponent as usize));
    } else if -exponent < n {
        let (int, frac) = digits.split_at((n + exponent) as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - n) as usize));
        out.push_str(digits);
    }
}

/// The parts of a JSON number literal, borrowed from its text.
struct Literal<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
    exp_negative: bool,
    exp: &'a str,
}

impl<'a> Literal<'a> {
    /// Splits `text` by the JSON number grammar; `None` when it is not a literal.
    fn split(text: &'a str) -> Option<Self> {
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exp_part) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], Some(&body[i + 1..])),
            None => (body, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (mantissa, None),
        };
        if !is_digits(int) || (int.len() > 1 && int.starts_with('0')) {
            return None;
        }
        let frac = match frac {
            Some(f) if is_digits(f) => f,
            Some(_) => return None,
            None => "",
        };
        let (exp_negative, exp) = match exp_part {
            None => (false, "0"),
            Some(e) => {
                let (neg, digits) = match e.as_bytes().first() {
                    Some(b'-') => (true, &e[1..]),
                    Some(b'+') => (false, &e[1..]),
                    _ => (false, e),
                };
                if !is_digits(digits) {
                    return None;
                }
                (neg, digits)
            }
        };
        Some(Self {
            negative,
            int,
            frac,
            exp_negative,
            exp,
        })
    }

    /// The exponent of the literal's digits taken as one integer (`int` then `frac`).
    fn exponent(&self) -> Result<i64, NumberError> {
        let digits = self.exp.trim_start_matches('0');
        // Nineteen digits may overflow an i64; the bound is far below that anyway.
        if digits.len() > 18 {
            return Err(NumberError::OutOfRange);
        }
        let magnitude: i64 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| NumberError::OutOfRange)?
        };
        let exp = if self.exp_negative {
            -magnitude
        } else {
            magnitude
        };
        let exp = exp - self.frac.len() as i64;
        if exp.abs() > MAX_EXPONENT {
            return Err(NumberError::OutOfRange);
        }
        Ok(exp)
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        CanonNumber::parse(text)
            .unwrap_or_else(|| panic!("{text} is a literal"))
            .0
    }

    #[test]
    fn one_spelling_per_value() {
        for (text, want) in [
            ("1e3", "1000"),
            ("1000", "1000"),
            ("1000.0", "1000"),
            ("1E+3", "1000"),
            ("10000e-1", "1000"),
            ("0.0", "0"),
            ("-0", "0"),
            ("-0.0e5", "0"),
            ("0.50", "0.5"),
            ("-12.3400", "-12.34"),
            ("1e-7", "0.0000001"),
            ("123.456e1", "1234.56"),
            ("0.001e3", "1"),
            ("1e21", "1000000000000000000000"),
        ] {
            assert_eq!(canon(text), want, "{text}");
        }
    }

    #[test]
    fn big_values_keep_every_digit() {
        assert_eq!(canon("1000000000000000000001"), "1000000000000000000001");
        assert_ne!(canon("1e21"), canon("1000000000000000000001"));
        assert_ne!(canon("0.3"), canon("0.30000000000000004"));
        let uint256_max =
            "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(canon(uint256_max), uint256_max);
    }

    #[test]
    fn huge_exponents_are_written_scientifically_and_refused_past_the_bound() {
        assert_eq!(canon("1e100"), "1e100");
        assert_eq!(canon("12.5e300"), "1.25e301");
        assert_eq!(canon("-1e-200"), "-1e-200");
        assert_eq!(canon("1.25e301"), "1.25e301");
        assert_eq!(
            CanonNumber::parse_literal("1e99999999999"),
            Err(NumberError::OutOfRange)
        );
        assert_eq!(
            CanonNumber::parse_literal("1e9999999999999999999999"),
            Err(NumberError::OutOfRange)
        );
    }

    #[test]
    fn non_literals_are_refused() {
        for text in [
            "", "-", "+1", "01", "1.", ".5", "1e", "1e+", "0x10", "1_000", " 1", "NaN", "inf",
            "1.2.3", "--1",
        ] {
            assert_eq!(CanonNumber::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn only_canonical_plain_text_is_a_number() {
        for s in ["5", "0", "-0.25", "10", "1000000000000000000001"] {
            assert!(CanonNumber::from_canonical_text(s).is_some(), "{s}");
        }
        for s in ["1.10", "2.0", "007", "1e3", "-0", "+5", "5.", "1E3"] {
            assert!(CanonNumber::from_canonical_text(s).is_none(), "{s}");
        }
    }

    #[test]
    fn floats_keep_their_shortest_decimal() {
        assert_eq!(CanonNumber::from_f64(0.1).map(|n| n.0), Some("0.1".into()));
        assert_eq!(
            CanonNumber::from_f64(0.1 + 0.2).map(|n| n.0),
            Some("0.30000000000000004".into())
        );
        assert_eq!(CanonNumber::from_f64(2.0).map(|n| n.0), Some("2".into()));
        assert_eq!(CanonNumber::from_f64(-0.0).map(|n| n.0), Some("0".into()));
        assert_eq!(
            CanonNumber::from_f64(1e21).map(|n| n.0),
            Some(canon("1e21"))
        );
        assert_eq!(CanonNumber::from_f64(f64::NAN), None);
        assert_eq!(CanonNumber::from_i128(-42).0, "-42");
        assert_eq!(
            CanonNumber::from_i128(u64::MAX.into()).0,
            u64::MAX.to_string()
        );
    }
}
