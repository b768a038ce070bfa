//! Input validation: every refusal says what to fix.

use crate::error::IdemError;

/// Longest tenant, session, tool or key accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Checks a name (tenant, session, tool, key): non-empty, bounded, no control characters.
pub fn name(field: &str, value: &str) -> Result<(), IdemError> {
    if value.trim().is_empty() {
        return Err(IdemError::InvalidArgument(format!(
            "{field} must not be empty"
        )));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(IdemError::InvalidArgument(format!(
            "{field} is {} bytes; at most {MAX_NAME_BYTES} are allowed",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(IdemError::InvalidArgument(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks a payload's size against the server limit.
pub fn payload(field: &str, value: &str, max: usize) -> Result<(), IdemError> {
    if value.len() > max {
        return Err(IdemError::ResourceExhausted(format!(
            "{field} is {} bytes, over the limit of {max} bytes (server setting max_payload_bytes)",
            value.len()
        )));
    }
    Ok(())
}

/// Parses JSON text, naming the field on error.
pub fn json(field: &str, value: &str) -> Result<serde_json::Value, IdemError> {
    serde_json::from_str(value)
        .map_err(|e| IdemError::InvalidArgument(format!("{field} is not valid JSON: {e}")))
}
