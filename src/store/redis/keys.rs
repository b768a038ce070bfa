//! The key layout. Every key of one match scope carries the scope's hash tag (`{s...}`, a
//! digest of the scope), so it lives on one cluster slot and one Lua script can reserve a call
//! atomically; a session's intent log, a tenant's counters and feedback have tags of their own.

use crate::store::SEP;

/// A short, brace-free digest of a name: the hash tag of its keys.
pub(crate) fn tag(name: &str) -> String {
    let h = blake3::hash(name.as_bytes());
    h.to_hex()[..20].to_string()
}

/// Keys of one match scope (one slot).
pub(super) struct ScopeKeys {
    /// `prefix:{tag}:`, the start of every key of the scope.
    base: String,
}

impl ScopeKeys {
    /// The keys of the scope whose tag is `tag`.
    pub(super) fn of_tag(prefix: &str, tag: &str) -> Self {
        Self {
            base: format!("{prefix}:{{s{tag}}}:"),
        }
    }

    /// The keys of `scope`.
    pub(super) fn of_scope(prefix: &str, scope: &str) -> Self {
        Self::of_tag(prefix, &tag(scope))
    }

    /// The key prefix Lua scripts derive record keys from.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// The scope's insert version (bumped by every insert).
    pub(super) fn version(&self) -> String {
        format!("{}ver", self.base)
    }

    /// The scope's vector log: a stream of `a id` (embedding stored) and `d id` (swept)
    /// entries, trimmed to about `VECTOR_LOG_LEN`, from which instances keep their index.
    pub(super) fn vector_log(&self) -> String {
        format!("{}vl", self.base)
    }

    /// Ids of the scope's calls with a stored embedding (a sorted set, by id), for rebuilding
    /// the scope's index.
    pub(super) fn vector_ids(&self) -> String {
        format!("{}vs", self.base)
    }

    /// A record, in the binary codec, without its embedding and free text (`values.rs`).
    pub(super) fn record(&self, id: &str) -> String {
        format!("{}r:{id}", self.base)
    }

    /// A record's embedding, int8-quantised (`values.rs`).
    pub(super) fn vector(&self, id: &str) -> String {
        format!("{}v:{id}", self.base)
    }

    /// What the candidate view needs of a record (created, expires, free text): the one copy
    /// of its free text.
    pub(super) fn candidate(&self, id: &str) -> String {
        format!("{}cd:{id}", self.base)
    }

    /// Ids of the calls of one tool and identity, scored by creation time.
    pub(super) fn candidates(&self, tool: &str, fingerprint: &str) -> String {
        format!("{}c:{tool}{SEP}{fingerprint}", self.base)
    }

    /// The newest call that carried an idempotency key.
    pub(super) fn by_key(&self, key: &str) -> String {
        format!("{}k:{key}", self.base)
    }

    /// The newest call with a canonical hash.
    pub(super) fn by_exact(&self, hash: &str) -> String {
        format!("{}x:{hash}", self.base)
    }

    /// The state the newest call on a resource left (`ResourceState`, JSON).
    pub(super) fn resource(&self, resource: &str) -> String {
        format!("{}rs:{resource}", self.base)
    }
}

/// Keys outside any one scope.
pub(super) struct GlobalKeys<'a> {
    pub(super) prefix: &'a str,
}

impl GlobalKeys<'_> {
    /// Which scope a call id belongs to (its value is the scope's tag).
    pub(super) fn call_scope(&self, id: &str) -> String {
        format!("{}:id:{{{id}}}", self.prefix)
    }

    /// Every record's sweep entry, scored by its expiry.
    pub(super) fn sweep(&self) -> String {
        format!("{}:sweep", self.prefix)
    }

    /// A session's intent log: members `id SEP scope tag`, ordered by id (time-ordered).
    pub(super) fn session_log(&self, tenant: &str, session: &str) -> String {
        format!(
            "{}:{{l{}}}:log",
            self.prefix,
            tag(&format!("{tenant}{SEP}{session}"))
        )
    }

    /// A session's overrides, as JSON.
    pub(super) fn session(&self, tenant: &str, session: &str) -> String {
        format!(
            "{}:{{l{}}}:cfg",
            self.prefix,
            tag(&format!("{tenant}{SEP}{session}"))
        )
    }

    /// A tenant's counters: fields `session SEP counter`.
    pub(super) fn stats(&self, tenant: &str) -> String {
        format!("{}:{{t{}}}:stats", self.prefix, tag(tenant))
    }

    /// The records a tenant holds (what its quota counts): members `session SEP id`, scored
    /// by the record's expiry.
    pub(super) fn held(&self, tenant: &str) -> String {
        format!("{}:{{t{}}}:held", self.prefix, tag(tenant))
    }

    /// Records held per session of a tenant (a field per session holding any).
    pub(super) fn held_sessions(&self, tenant: &str) -> String {
        format!("{}:{{t{}}}:held_s", self.prefix, tag(tenant))
    }

    /// A tenant's judgements by check id, as JSON.
    pub(super) fn feedback(&self, tenant: &str) -> String {
        format!("{}:{{t{}}}:fb", self.prefix, tag(tenant))
    }

    /// A tenant's judged check ids, scored by when they were judged.
    pub(super) fn feedback_times(&self, tenant: &str) -> String {
        format!("{}:{{t{}}}:fbt", self.prefix, tag(tenant))
    }

    /// One verdict log entry, as JSON.
    pub(super) fn check(&self, check_id: &str) -> String {
        format!("{}:chk:{{{check_id}}}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes: between the first `{` and the next `}`.
    fn hashed(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = key[open..].find('}').unwrap() + open;
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_scope_hashes_to_the_same_slot() {
        let k = ScopeKeys::of_scope("idem", "acme\u{1f}run-42");
        let keys = [
            k.version(),
            k.record("a"),
            k.vector("a"),
            k.candidate("a"),
            k.candidates("send", "fp"),
            k.by_key("{k}"),
            k.by_exact("h"),
            k.resource("r"),
            k.vector_log(),
            k.vector_ids(),
        ];
        let first = hashed(&keys[0]).to_string();
        assert!(keys.iter().all(|key| hashed(key) == first), "{keys:?}");
        let g = GlobalKeys { prefix: "idem" };
        assert_eq!(hashed(&g.held("acme")), hashed(&g.held_sessions("acme")));
        assert_eq!(hashed(&g.held("acme")), hashed(&g.stats("acme")));
        let other = ScopeKeys::of_scope("idem", "acme\u{1f}run-43");
        assert_ne!(hashed(&other.version()), first);
    }
}
