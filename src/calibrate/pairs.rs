//! The pair file: JSON Lines of `{"id", "a": {"tool", "args"}, "b": {...}, "duplicate", ...}`.

use serde::Deserialize;
use serde_json::{Map, Value};

/// One side of a pair.
#[derive(Debug, Clone, Deserialize)]
pub struct PairCall {
    pub tool: String,
    pub args: Value,
}

/// A labelled pair; fields other than the known ones are kept for grouping.
#[derive(Debug, Clone)]
pub struct Pair {
    pub id: String,
    pub a: PairCall,
    pub b: PairCall,
    pub duplicate: bool,
    /// Every other field (`kind`, `source`, ...).
    pub extra: Map<String, Value>,
}

/// A line that could not be read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Malformed {
    /// 1-based line number.
    pub line: usize,
    pub error: String,
}

/// Reads pairs from JSON Lines text; blank lines are skipped, bad lines reported.
pub fn read_pairs(text: &str) -> (Vec<Pair>, Vec<Malformed>) {
    let mut pairs = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line, line_no) {
            Ok(p) => pairs.push(p),
            Err(error) => bad.push(Malformed {
                line: line_no,
                error,
            }),
        }
    }
    (pairs, bad)
}

fn parse_line(line: &str, line_no: usize) -> Result<Pair, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut m) = v else {
        return Err("not a JSON object".into());
    };
    let call = |m: &mut Map<String, Value>, side: &str| -> Result<PairCall, String> {
        let v = m
            .remove(side)
            .ok_or_else(|| format!("missing \"{side}\""))?;
        let c: PairCall = serde_json::from_value(v).map_err(|e| format!("\"{side}\": {e}"))?;
        if c.tool.trim().is_empty() {
            return Err(format!("\"{side}.tool\" is empty"));
        }
        if !c.args.is_object() {
            return Err(format!("\"{side}.args\" must be a JSON object"));
        }
        Ok(c)
    };
    let a = call(&mut m, "a")?;
    let b = call(&mut m, "b")?;
    let duplicate = match m.remove("duplicate") {
        Some(Value::Bool(d)) => d,
        Some(_) => return Err("\"duplicate\" must be true or false".into()),
        None => return Err("missing \"duplicate\"".into()),
    };
    let id = match m.remove("id") {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => format!("line-{line_no}"),
    };
    Ok(Pair {
        id,
        a,
        b,
        duplicate,
        extra: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_reported_with_their_numbers() {
        let text = r#"{"id": "1", "a": {"tool": "t", "args": {}}, "b": {"tool": "t", "args": {}}, "duplicate": true, "kind": "k"}

not json
{"a": {"tool": "t", "args": {}}, "duplicate": true}
{"a": {"tool": "t", "args": []}, "b": {"tool": "t", "args": {}}, "duplicate": true}
{"a": {"tool": "t", "args": {}}, "b": {"tool": "t", "args": {}}, "duplicate": "yes"}
"#;
        let (pairs, bad) = read_pairs(text);
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].extra.get("kind"), Some(&Value::String("k".into())));
        assert_eq!(
            bad.iter().map(|b| b.line).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        assert!(bad[1].error.contains("\"b\""));
    }
}
