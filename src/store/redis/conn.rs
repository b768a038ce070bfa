//! The connection to Redis: one standalone server (a connection manager that reconnects by
//! itself) or a Redis Cluster (the crate's cluster client, which follows slot moves), behind
//! one type. Every command runs under a timeout, so a stalled or dead Redis is an error the
//! caller sees at once (naming Redis), never a hang.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::store::StoreError;

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://HOST:PORT`, `rediss://` for TLS; `redis+cluster://` (or `rediss+cluster://`)
    /// for a cluster, whose seed nodes may be comma-separated (`redis+cluster://h1:p1,h2:p2`).
    pub url: String,
    /// Treat `url` as a cluster seed even with a plain `redis://` scheme.
    pub cluster: bool,
    /// Longest wait for one command (or connection attempt) before it fails as unavailable.
    pub timeout: Duration,
    /// Prefix of every key, so several deployments (or tests) can share one Redis.
    pub prefix: String,
}

impl RedisOptions {
    /// Options for `url` with the defaults: standalone unless the scheme says cluster,
    /// 250 ms per command, keys under `idem`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: false,
            timeout: Duration::from_millis(250),
            prefix: "idem".into(),
        }
    }

    /// Whether a cluster is meant, and the seed URLs in a form the client parses.
    fn seeds(&self) -> (bool, Vec<String>) {
        let (cluster, scheme, rest) = if let Some(r) = self.url.strip_prefix("redis+cluster://") {
            (true, "redis://", r)
        } else if let Some(r) = self.url.strip_prefix("rediss+cluster://") {
            (true, "rediss://", r)
        } else {
            return (self.cluster, vec![self.url.clone()]);
        };
        let seeds = rest
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("{scheme}{s}"))
            .collect();
        (cluster, seeds)
    }
}

impl From<&crate::config::RedisConfig> for RedisOptions {
    fn from(c: &crate::config::RedisConfig) -> Self {
        Self {
            url: c.url.clone(),
            cluster: c.cluster,
            timeout: Duration::from_millis(c.timeout_ms),
            prefix: c.prefix.clone(),
        }
    }
}

/// A connection to a standalone Redis or a cluster; cheap to clone (both multiplex).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Connects lazily for a standalone server (the server may start after idem), at once for a
/// cluster (the client needs the slot map).
pub(super) async fn connect(o: &RedisOptions) -> Result<Conn, StoreError> {
    let (cluster, seeds) = o.seeds();
    let bad = |e: redis::RedisError| StoreError::Backend(format!("redis at {}: {e}", o.url));
    if cluster {
        let client = ClusterClientBuilder::new(seeds)
            .connection_timeout(o.timeout)
            .response_timeout(o.timeout)
            .retries(2)
            .build()
            .map_err(bad)?;
        let conn = tokio::time::timeout(o.timeout * 8, client.get_async_connection())
            .await
            .map_err(|_| unavailable(&o.url, "timed out connecting to the cluster"))?
            .map_err(bad)?;
        return Ok(Conn::Cluster(conn));
    }
    let client = redis::Client::open(o.url.as_str()).map_err(bad)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(o.timeout))
        .set_response_timeout(Some(o.timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(o.timeout);
    let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(bad)?;
    Ok(Conn::Single(manager))
}

fn unavailable(url: &str, what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis at {url} unavailable: {what}"))
}

/// The least time a command gets even when the request's deadline is (nearly) past: a check
/// that runs late (a slow embedding) still finishes on a healthy Redis; only a stalled one
/// times out. Above the stalls a healthy Redis makes: with `appendfsync always` it fsyncs in
/// its main thread before it answers anything (reads included), which took up to 88 ms on the
/// loaded test machine, and a busy client process may not read a reply for tens of ms.
const MIN_WAIT: Duration = Duration::from_millis(150);

/// What bounds one Redis operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    /// The timeout, or the request's deadline when that comes first (at least `MIN_WAIT`).
    Deadline,
    /// The timeout alone.
    Timeout,
}

/// Runs one Redis operation as `bound` says, mapping failures to store errors that name Redis.
pub(super) async fn timed<T>(
    url: &str,
    timeout: Duration,
    bound: Bound,
    op: impl Future<Output = RedisResult<T>>,
) -> Result<T, StoreError> {
    let left = crate::store::deadline::current()
        .filter(|_| bound == Bound::Deadline)
        .map(|d| {
            d.saturating_duration_since(tokio::time::Instant::now())
                .max(MIN_WAIT)
        })
        .filter(|left| *left < timeout);
    match tokio::time::timeout(left.unwrap_or(timeout), op).await {
        Err(_) => Err(unavailable(
            url,
            &match left {
                Some(l) => format!(
                    "no answer before the check's deadline ({} ms)",
                    l.as_millis()
                ),
                None => format!("no answer within {} ms", timeout.as_millis()),
            },
        )),
        Ok(Err(e))
            if e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error() =>
        {
            Err(unavailable(url, &e.to_string()))
        }
        Ok(Err(e)) => Err(StoreError::Backend(format!("redis at {url}: {e}"))),
        Ok(Ok(v)) => Ok(v),
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seed_nodes() {
        let o = RedisOptions::new("redis+cluster://127.0.0.1:7000,127.0.0.1:7001");
        assert_eq!(
            o.seeds(),
            (
                true,
                vec![
                    "redis://127.0.0.1:7000".to_string(),
                    "redis://127.0.0.1:7001".to_string()
                ]
            )
        );
        let tls = RedisOptions::new("rediss+cluster://h:1");
        assert_eq!(tls.seeds(), (true, vec!["rediss://h:1".to_string()]));
        let single = RedisOptions::new("redis://h:1");
        assert_eq!(single.seeds(), (false, vec!["redis://h:1".to_string()]));
        let flagged = RedisOptions {
            cluster: true,
            ..RedisOptions::new("redis://h:1")
        };
        assert!(flagged.seeds().0);
    }
}
