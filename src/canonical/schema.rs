//! What a tool's JSON schema tells the canonicaliser: which fields hold numbers.
//!
//! Where the schema types a field as `number` or `integer`, a string there that is a JSON
//! number literal is that number (`"2.0"` = `2`); nowhere else. Paths are dotted, with `[]`
//! for every element of an array (`legs[].price`), the form [`super::CanonPolicy`] takes.

use serde_json::Value;

/// Deepest schema nesting followed (schemas are small; this only bounds odd input).
const MAX_SCHEMA_DEPTH: usize = 32;

/// Paths of the fields `schema` (an object schema with `properties`) types as numbers.
pub fn numeric_paths(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, "", 0, &mut out);
    out
}

fn walk(schema: &Value, path: &str, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_SCHEMA_DEPTH {
        return;
    }
    if !path.is_empty() && is_numeric(schema) {
        out.push(path.to_string());
        return;
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            walk(prop, &p, depth + 1, out);
        }
    }
    if !path.is_empty()
        && let Some(items) = schema.get("items")
    {
        walk(items, &format!("{path}[]"), depth + 1, out);
    }
}

/// `"type": "number"`, `"integer"`, or a list of types naming one of them (`["number", "null"]`).
fn is_numeric(schema: &Value) -> bool {
    let numeric = |t: &Value| matches!(t.as_str(), Some("number" | "integer"));
    match schema.get("type") {
        Some(Value::Array(types)) => types.iter().any(numeric),
        Some(t) => numeric(t),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_fields_are_found_at_any_depth() {
        let schema = json!({
            "type": "object",
            "properties": {
                "amount": {"type": "number"},
                "count": {"type": "integer"},
                "limit": {"type": ["integer", "null"]},
                "name": {"type": "string"},
                "sizes": {"type": "array", "items": {"type": "integer"}},
                "legs": {"type": "array", "items": {"type": "object", "properties": {
                    "price": {"type": "number"}, "city": {"type": "string"}}}},
                "profile": {"type": "object", "properties": {"age": {"type": "integer"}}}
            }
        });
        let mut got = numeric_paths(&schema);
        got.sort();
        assert_eq!(
            got,
            [
                "amount",
                "count",
                "legs[].price",
                "limit",
                "profile.age",
                "sizes[]"
            ]
        );
        assert!(numeric_paths(&json!({"type": "number"})).is_empty());
    }
}
