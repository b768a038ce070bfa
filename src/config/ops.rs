//! Operations settings of the server: who may call it (`[auth]`), how much each tenant may
//! hold (`[limits]`), TLS, the metrics endpoint and the log format. Tokens are configured by their SHA-256 digest only, so a config file
//! never holds a secret that works against the server.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a token may do inside its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Checks, completes and reads its tenant's calls and sessions.
    #[default]
    Agent,
    /// An agent that may also configure sessions, read stats, give feedback and export pairs.
    Operator,
}

impl Role {
    /// Lower-case name, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
        }
    }
}

/// One API token: the hex SHA-256 digest of the token, the tenant it acts for, its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Lower- or upper-case hex SHA-256 digest of the token (64 digits), never the token.
    pub sha256: String,
    /// The tenant every request with this token acts for.
    pub tenant: String,
    #[serde(default)]
    pub role: Role,
}

/// `[auth]`: tenants behind tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Refuse requests without a known token (UNAUTHENTICATED). When false, a request without
    /// a token may name any tenant, and a request with one is still bound to its tenant.
    pub required: bool,
    /// The accepted tokens (`[[auth.tokens]]`).
    pub tokens: Vec<TokenEntry>,
}

impl AuthConfig {
    /// Checks every entry; the error names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.required && self.tokens.is_empty() {
            return Err("auth.required is true but no [[auth.tokens]] is configured".into());
        }
        let mut seen = HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if parse_digest(&t.sha256).is_none() {
                return Err(format!(
                    "auth.tokens[{i}].sha256 must be 64 hex digits (the SHA-256 of the token, e.g. `printf %s TOKEN | sha256sum`)"
                ));
            }
            if t.tenant.trim().is_empty() {
                return Err(format!("auth.tokens[{i}].tenant must not be empty"));
            }
            if !seen.insert(t.sha256.to_ascii_lowercase()) {
                return Err(format!(
                    "auth.tokens[{i}].sha256 repeats an earlier entry (one token, one tenant)"
                ));
            }
        }
        Ok(())
    }
}

/// One tenant's quotas (`[limits.tenants.NAME]`); an unset key inherits `[limits]`'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    pub max_records: Option<u64>,
    pub max_sessions: Option<u64>,
}

/// `[limits]`: per-tenant quotas. The top-level keys apply to every tenant; `tenants` overrides
/// them for one. Unset means unlimited. A record counts from its NEW until it is swept after
/// its TTL; a session counts while it holds a record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Records a tenant may hold at once; a NEW past it is RESOURCE_EXHAUSTED.
    pub max_records: Option<u64>,
    /// Sessions with records a tenant may have at once; the first call of one more is
    /// RESOURCE_EXHAUSTED.
    pub max_sessions: Option<u64>,
    /// Per-tenant overrides, by tenant name.
    pub tenants: BTreeMap<String, TenantLimits>,
}

impl LimitsConfig {
    /// The quota of `tenant`: its own keys, else the defaults.
    pub fn quota_for(&self, tenant: &str) -> crate::store::Quota {
        let own = self.tenants.get(tenant).copied().unwrap_or_default();
        crate::store::Quota {
            max_records: own.max_records.or(self.max_records),
            max_sessions: own.max_sessions.or(self.max_sessions),
        }
    }

    /// Checks every value; the error names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let zero = |v: Option<u64>| v == Some(0);
        if zero(self.max_records) || zero(self.max_sessions) {
            return Err(
                "limits.max_records and limits.max_sessions must be > 0 (unset for no limit)"
                    .into(),
            );
        }
        for (t, l) in &self.tenants {
            if zero(l.max_records) || zero(l.max_sessions) {
                return Err(format!(
                    "limits.tenants.{t}: max_records and max_sessions must be > 0 (unset to inherit)"
                ));
            }
        }
        Ok(())
    }
}

/// The 32 bytes of a hex SHA-256 digest, or `None` if it is not 64 hex digits.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Format of the server's log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line (for log shippers).
    Json,
}

/// Validates the TLS pair and the metrics address against each other and the gRPC address.
pub fn validate_transport(
    listen: SocketAddr,
    tls_cert: &Option<PathBuf>,
    tls_key: &Option<PathBuf>,
    metrics_listen: &Option<SocketAddr>,
) -> Result<(), String> {
    match (tls_cert, tls_key) {
        (Some(_), None) => return Err("tls_cert is set but tls_key is not; set both".into()),
        (None, Some(_)) => return Err("tls_key is set but tls_cert is not; set both".into()),
        _ => {}
    }
    if let Some(m) = metrics_listen
        && *m == listen
        && m.port() != 0
    {
        return Err(format!(
            "metrics_listen ({m}) must differ from listen, the gRPC address"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parses_hex_of_either_case_and_refuses_the_rest() {
        let d = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        assert_eq!(parse_digest(d), parse_digest(&d.to_lowercase()));
        assert_eq!(parse_digest(d).map(|b| b[0]), Some(0x9f));
        assert!(parse_digest(&d[..62]).is_none());
        assert!(parse_digest(&format!("{}zz", &d[..62])).is_none());
    }

    #[test]
    fn a_tenant_limit_overrides_the_default_and_unset_keys_inherit() {
        let l: LimitsConfig = toml::from_str(
            "max_records = 100\nmax_sessions = 5\n[tenants.small]\nmax_records = 3\n",
        )
        .unwrap();
        l.validate().unwrap();
        let q = l.quota_for("small");
        assert_eq!((q.max_records, q.max_sessions), (Some(3), Some(5)));
        let q = l.quota_for("other");
        assert_eq!((q.max_records, q.max_sessions), (Some(100), Some(5)));
        let none = LimitsConfig::default().quota_for("x");
        assert_eq!(none, crate::store::Quota::UNLIMITED);
        let bad: LimitsConfig = toml::from_str("[tenants.a]\nmax_sessions = 0\n").unwrap();
        assert!(bad.validate().unwrap_err().contains("limits.tenants.a"));
    }

    #[test]
    fn required_auth_needs_tokens_and_entries_need_a_tenant() {
        let mut a = AuthConfig {
            required: true,
            tokens: vec![],
        };
        assert!(a.validate().unwrap_err().contains("no [[auth.tokens]]"));
        a.tokens.push(TokenEntry {
            sha256: "00".repeat(32),
            tenant: " ".into(),
            role: Role::Agent,
        });
        assert!(a.validate().unwrap_err().contains("tokens[0].tenant"));
        a.tokens[0].tenant = "acme".into();
        a.tokens.push(a.tokens[0].clone());
        assert!(
            a.validate()
                .unwrap_err()
                .contains("tokens[1].sha256 repeats")
        );
    }
}
