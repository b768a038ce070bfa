//! Tenants behind tokens: `authorization: Bearer TOKEN` names the caller's tenant and role.
//!
//! The server keeps only SHA-256 digests of the tokens. A presented token is hashed and its
//! digest compared with every configured one in constant time (`subtle`), so neither the
//! comparison nor the position of the match tells an attacker how close a guess was.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::config::{AuthConfig, Role, parse_digest};

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant every request of this caller acts for.
    pub tenant: String,
    /// What the caller may do there.
    pub role: Role,
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token, and the server does not require one: any tenant, any RPC.
    Anyone,
    /// A known token.
    Token(Principal),
}

/// Checks the `authorization` metadata of requests against the configured tokens.
#[derive(Debug, Default)]
pub struct Authenticator {
    required: bool,
    tokens: Vec<([u8; 32], Principal)>,
}

impl Authenticator {
    /// The tokens of `config` (validated by `ServerConfig::validate`; an entry whose digest
    /// does not parse is an error here too, never skipped).
    pub fn from_config(config: &AuthConfig) -> Result<Self, String> {
        let mut tokens = Vec::with_capacity(config.tokens.len());
        for (i, t) in config.tokens.iter().enumerate() {
            let digest = parse_digest(&t.sha256)
                .ok_or_else(|| format!("auth.tokens[{i}].sha256 is not 64 hex digits"))?;
            tokens.push((
                digest,
                Principal {
                    tenant: t.tenant.clone(),
                    role: t.role,
                },
            ));
        }
        Ok(Self {
            required: config.required,
            tokens,
        })
    }

    /// Whether requests must carry a token.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The caller of a request: UNAUTHENTICATED for a malformed or unknown token, or for no
    /// token when one is required.
    pub fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let Some(value) = metadata.get("authorization") else {
            return if self.required {
                Err(Status::unauthenticated(
                    "this server requires a token: send metadata `authorization: Bearer <token>` \
                     (idem CLI: --token or IDEM_TOKEN)",
                ))
            } else {
                Ok(Caller::Anyone)
            };
        };
        let token = value.to_str().ok().and_then(bearer).ok_or_else(|| {
            Status::unauthenticated("malformed authorization metadata: expected `Bearer <token>`")
        })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, whatever matched before it.
        let mut found = None;
        for (d, p) in &self.tokens {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(p);
            }
        }
        found
            .cloned()
            .map(Caller::Token)
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }
}

/// The token of a `Bearer` authorization value (scheme case-insensitive, RFC 6750).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Caller {
    /// The tenant a request acts for: the token's (a request naming another one is
    /// PERMISSION_DENIED; an empty one means the token's), or whatever the request names.
    pub fn tenant(&self, requested: &str) -> Result<String, Status> {
        match self {
            Caller::Anyone => Ok(requested.to_string()),
            Caller::Token(p) if requested.is_empty() || requested == p.tenant => {
                Ok(p.tenant.clone())
            }
            Caller::Token(p) => Err(Status::permission_denied(format!(
                "this token acts for tenant {:?}; it cannot act for tenant {requested:?}",
                p.tenant
            ))),
        }
    }

    /// PERMISSION_DENIED unless the caller may call `rpc`, an operator-only RPC.
    pub fn require_operator(&self, rpc: &str) -> Result<(), Status> {
        match self {
            Caller::Token(p) if p.role != Role::Operator => {
                Err(Status::permission_denied(format!(
                    "{rpc} needs an operator token; this one has role {}",
                    p.role.as_str()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether a record of `tenant` is the caller's to see.
    pub fn owns(&self, tenant: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Token(p) => p.tenant == tenant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenEntry;

    fn sha(t: &str) -> String {
        Sha256::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn auth(required: bool) -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            required,
            tokens: vec![
                TokenEntry {
                    sha256: sha("agent-a"),
                    tenant: "a".into(),
                    role: Role::Agent,
                },
                TokenEntry {
                    sha256: sha("op-a").to_uppercase(),
                    tenant: "a".into(),
                    role: Role::Operator,
                },
            ],
        })
        .unwrap()
    }

    fn md(v: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = v {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn a_known_token_names_its_tenant_and_role() {
        let c = auth(true).caller(&md(Some("Bearer op-a"))).unwrap();
        assert_eq!(
            c,
            Caller::Token(Principal {
                tenant: "a".into(),
                role: Role::Operator
            })
        );
        let c = auth(true).caller(&md(Some("bearer  agent-a "))).unwrap();
        assert!(matches!(c, Caller::Token(ref p) if p.role == Role::Agent));
    }

    #[test]
    fn missing_unknown_or_malformed_tokens_are_unauthenticated() {
        for v in [
            None,
            Some("Bearer agent-b"),
            Some("Basic agent-a"),
            Some("Bearer "),
        ] {
            let e = auth(true).caller(&md(v)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{v:?}");
        }
        assert_eq!(auth(false).caller(&md(None)).unwrap(), Caller::Anyone);
        let e = auth(false).caller(&md(Some("Bearer nope"))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_token_acts_only_for_its_tenant_and_role() {
        let agent = auth(true).caller(&md(Some("Bearer agent-a"))).unwrap();
        assert_eq!(agent.tenant("").unwrap(), "a");
        assert_eq!(agent.tenant("a").unwrap(), "a");
        assert_eq!(
            agent.tenant("b").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            agent.require_operator("GetStats").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(agent.owns("a") && !agent.owns("b"));
        assert!(Caller::Anyone.owns("b"));
        assert_eq!(Caller::Anyone.tenant("b").unwrap(), "b");
    }
}
