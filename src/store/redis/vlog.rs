//! The per-scope vector log: a stream in the scope's slot that every stored embedding
//! (`a id w writer`) and every sweep of a call with one (`d id`) is appended to by the script
//! that makes the change, trimmed to about `VECTOR_LOG_LEN` entries. The writer (a random id
//! per `RedisStore`) tells an instance its own additions from others'. An instance keeps a cursor per scope
//! (`entry id/entries added`) and applies what follows it; a cursor the trimming passed (or a
//! log that was lost) is a gap, and the instance rebuilds the scope from its vector ids.

use super::RedisStore;
use super::keys::ScopeKeys;
use super::values::{corrupt, vector_of};
use crate::store::{LogCursor, ScopeVectors, StoreError, VectorChange, VectorLog};

/// Entries a scope's vector log keeps (about: Redis trims whole stream nodes). An instance
/// that falls further behind on a scope rebuilds it.
pub(super) const VECTOR_LOG_LEN: usize = 1000;

fn bad_cursor(c: &LogCursor) -> StoreError {
    corrupt("vector log cursor", format!("{:?}", c.0))
}

impl RedisStore {
    /// The changes after `after` (`Store::vector_log`): one script.
    pub(super) async fn log_after(
        &self,
        scope: &str,
        after: &LogCursor,
        limit: usize,
    ) -> Result<VectorLog, StoreError> {
        let (id, added) = after.0.split_once('/').ok_or_else(|| bad_cursor(after))?;
        let k = ScopeKeys::of_scope(&self.prefix, scope);
        let mut inv = self.scripts.vector_log.prepare_invoke();
        inv.key(k.vector_log()).arg(id).arg(added).arg(limit.max(1));
        let out: Vec<String> = self.run(async |c| inv.invoke_async(c).await).await?;
        match out.first().map(String::as_str) {
            Some("gap") => Ok(VectorLog::Gap),
            Some("ok") if out.len() >= 3 && out.len().is_multiple_of(3) => {
                let changes = out[3..]
                    .chunks_exact(3)
                    .map(|e| match e[0].as_str() {
                        // An entry without a writer (an older version's) counts as foreign.
                        "a" => Ok(VectorChange::Added {
                            id: e[1].clone(),
                            own: e[2] == self.writer,
                        }),
                        "d" => Ok(VectorChange::Removed(e[1].clone())),
                        op => Err(corrupt("vector log", format!("entry {op:?}"))),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(VectorLog::Changes {
                    changes,
                    next: LogCursor(format!("{}/{}", out[1], out[2])),
                })
            }
            _ => Err(corrupt("vector log", format!("reply {out:?}"))),
        }
    }

    /// A page of the scope's stored vectors (`Store::scope_vectors`): one script.
    pub(super) async fn vector_page(
        &self,
        scope: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScopeVectors, StoreError> {
        let k = ScopeKeys::of_scope(&self.prefix, scope);
        let mut inv = self.scripts.scope_vectors.prepare_invoke();
        inv.key(k.vector_ids())
            .key(k.vector_log())
            .arg(k.base())
            .arg(after.unwrap_or_default())
            .arg(limit.max(1));
        let out: Vec<Vec<u8>> = self.run(async |c| inv.invoke_async(c).await).await?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| corrupt("vector page", e));
        if out.len() < 4 || out.len() % 2 == 1 {
            return Err(corrupt("vector page", format!("{} values", out.len())));
        }
        let head = match after {
            None => Some(LogCursor(format!("{}/{}", text(&out[0])?, text(&out[1])?))),
            Some(_) => None,
        };
        let read: usize = text(&out[3])?
            .parse()
            .map_err(|e| corrupt("vector page", e))?;
        let mut vectors = Vec::with_capacity(out.len() / 2 - 2);
        for pair in out[4..].chunks_exact(2) {
            let id = text(&pair[0])?;
            let v = vector_of(&id, &pair[1])?;
            vectors.push((id, v));
        }
        Ok(ScopeVectors {
            head,
            last: (read > 0).then(|| text(&out[2])).transpose()?,
            read,
            vectors,
        })
    }

    /// The stored embeddings of `ids` (`Store::vectors_of`): one script.
    pub(super) async fn stored_vectors(
        &self,
        scope: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let k = ScopeKeys::of_scope(&self.prefix, scope);
        let mut inv = self.scripts.vectors_of.prepare_invoke();
        for id in ids {
            inv.key(k.vector(id));
        }
        let out: Vec<Option<Vec<u8>>> = self.run(async |c| inv.invoke_async(c).await).await?;
        ids.iter()
            .zip(out)
            .map(|(id, b)| b.map(|b| vector_of(id, &b)).transpose())
            .collect()
    }
}
