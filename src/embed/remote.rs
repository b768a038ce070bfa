//! The remote embedder: any OpenAI-compatible `POST /v1/embeddings` endpoint.
//!
//! For deployments that already run an embedding server. The HTTP timeout is the time left to the
//! caller's deadline, so a slow endpoint costs a `DeadlineExceeded`, never a late answer; the
//! returned vector is checked for length and normalised here, whatever the server did.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{EMBEDDING_DIM, EmbedError, Embedder, Embedding, l2_normalize};

/// Where and how to reach the embedding endpoint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteEmbedderConfig {
    /// Server root without the API path, e.g. `http://127.0.0.1:8080`; `/v1/embeddings` is added.
    pub base_url: String,
    /// The `model` field sent with every request.
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Length of the vectors the model returns; any other length is an error.
    pub dim: usize,
}

impl Default for RemoteEmbedderConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".into(),
            model: "all-MiniLM-L6-v2".into(),
            api_key: None,
            dim: EMBEDDING_DIM,
        }
    }
}

/// Keeps the API key out of logs.
impl std::fmt::Debug for RemoteEmbedderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEmbedderConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("dim", &self.dim)
            .finish()
    }
}

/// Embeds through an OpenAI-compatible HTTP endpoint; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RemoteEmbedder {
    client: reqwest::Client,
    url: String,
    config: RemoteEmbedderConfig,
    name: String,
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: [&'a str; 1],
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: usize,
}

/// Most bytes of an error body quoted in an error message.
const ERROR_BODY_QUOTE: usize = 200;

impl RemoteEmbedder {
    /// Builds the HTTP client; no request is sent until the first `embed`.
    pub fn new(config: RemoteEmbedderConfig) -> Result<Self, EmbedError> {
        if config.dim == 0 {
            return Err(EmbedError::Backend(
                "remote embedder: dim must be at least 1".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| EmbedError::Backend(format!("could not build the HTTP client: {e}")))?;
        let url = format!("{}/v1/embeddings", config.base_url.trim_end_matches('/'));
        let name = format!("remote:{}", config.model);
        Ok(Self {
            client,
            url,
            config,
            name,
        })
    }

    async fn request(&self, text: &str, left: Duration) -> Result<Embedding, EmbedError> {
        let body = EmbeddingsRequest {
            model: &self.config.model,
            input: [text],
        };
        let mut request = self.client.post(&self.url).json(&body).timeout(left);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(EmbedError::Overloaded);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let quote: String = body.chars().take(ERROR_BODY_QUOTE).collect();
            return Err(EmbedError::Backend(format!(
                "{} answered {status}: {quote}",
                self.url
            )));
        }
        let parsed: EmbeddingsResponse =
            response.json().await.map_err(|e| self.transport_error(e))?;
        let vector = parsed
            .data
            .into_iter()
            .min_by_key(|item| item.index)
            .map(|item| item.embedding)
            .ok_or_else(|| EmbedError::Backend(format!("{} returned no embedding", self.url)))?;
        if vector.len() != self.config.dim {
            return Err(EmbedError::Backend(format!(
                "{} returned a {}-dimensional embedding, expected {}",
                self.url,
                vector.len(),
                self.config.dim
            )));
        }
        l2_normalize(vector)
    }

    fn transport_error(&self, e: reqwest::Error) -> EmbedError {
        if e.is_timeout() {
            EmbedError::DeadlineExceeded
        } else {
            EmbedError::Backend(format!("request to {} failed: {e}", self.url))
        }
    }
}

#[async_trait::async_trait]
impl Embedder for RemoteEmbedder {
    async fn embed(
        &self,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Embedding, EmbedError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(EmbedError::DeadlineExceeded);
        }
        // reqwest's timeout bounds the request; the outer one also bounds DNS and body decoding.
        tokio::time::timeout_at(deadline, self.request(text, left))
            .await
            .unwrap_or(Err(EmbedError::DeadlineExceeded))
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    /// A one-shot HTTP server on 127.0.0.1: answers the first request with `status` and `body`
    /// (or never answers when `body` is `None`) and hands back the raw request it read.
    async fn serve_once(
        status: &'static str,
        body: Option<String>,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let request = read_request(&mut socket).await;
            match body {
                Some(body) => {
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(response.as_bytes()).await.unwrap();
                    socket.shutdown().await.unwrap();
                }
                None => std::future::pending::<()>().await,
            }
            request
        });
        (base_url, server)
    }

    /// Reads one HTTP/1.1 request: headers up to the blank line, then `content-length` bytes.
    async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + length {
                    return text;
                }
            }
        }
    }

    fn openai_body(vector: &[f32]) -> String {
        serde_json::json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "model": "test-model",
            "usage": {"prompt_tokens": 3, "total_tokens": 3}
        })
        .to_string()
    }

    fn config(base_url: String) -> RemoteEmbedderConfig {
        RemoteEmbedderConfig {
            base_url,
            model: "test-model".into(),
            api_key: Some("secret-key".into()),
            dim: 4,
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn remote_embedding_is_normalised_and_request_is_openai_shaped() {
        let (base_url, server) =
            serve_once("200 OK", Some(openai_body(&[3.0, 4.0, 0.0, 0.0]))).await;
        let embedder = RemoteEmbedder::new(config(base_url)).unwrap();
        let v = embedder.embed("send the report", soon()).await.unwrap();
        assert_eq!(v, vec![0.6, 0.8, 0.0, 0.0]);
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-6);

        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /v1/embeddings HTTP/1.1"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer secret-key")
        );
        let body: serde_json::Value =
            serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model": "test-model", "input": ["send the report"]})
        );
        assert_eq!(embedder.name(), "remote:test-model");
        assert_eq!(embedder.dim(), 4);
    }

    #[tokio::test]
    async fn silent_endpoint_is_deadline_exceeded_on_time() {
        let (base_url, _server) = serve_once("200 OK", None).await;
        let embedder = RemoteEmbedder::new(config(base_url)).unwrap();
        let start = Instant::now();
        let result = embedder
            .embed("anything", start + Duration::from_millis(100))
            .await;
        assert!(
            matches!(result, Err(EmbedError::DeadlineExceeded)),
            "{result:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn too_many_requests_is_overloaded() {
        let (base_url, _server) = serve_once(
            "429 Too Many Requests",
            Some(r#"{"error":"slow down"}"#.into()),
        )
        .await;
        let embedder = RemoteEmbedder::new(config(base_url)).unwrap();
        let result = embedder.embed("anything", soon()).await;
        assert!(matches!(result, Err(EmbedError::Overloaded)), "{result:?}");
    }

    #[tokio::test]
    async fn server_error_is_backend_error_quoting_the_body() {
        let (base_url, _server) = serve_once(
            "500 Internal Server Error",
            Some(r#"{"error":"model not loaded"}"#.into()),
        )
        .await;
        let embedder = RemoteEmbedder::new(config(base_url)).unwrap();
        match embedder.embed("anything", soon()).await {
            Err(EmbedError::Backend(msg)) => {
                assert!(
                    msg.contains("500") && msg.contains("model not loaded"),
                    "{msg}"
                )
            }
            other => panic!("expected Backend, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn wrong_dimension_is_refused() {
        let (base_url, _server) = serve_once("200 OK", Some(openai_body(&[1.0, 0.0]))).await;
        let embedder = RemoteEmbedder::new(config(base_url)).unwrap();
        match embedder.embed("anything", soon()).await {
            Err(EmbedError::Backend(msg)) => assert!(msg.contains("2-dimensional"), "{msg}"),
            other => panic!("expected Backend, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn api_key_is_not_in_debug_output() {
        let shown = format!("{:?}", config("http://127.0.0.1:1".into()));
        assert!(!shown.contains("secret-key") && shown.contains("redacted"));
    }

    #[tokio::test]
    async fn past_deadline_sends_nothing() {
        let embedder = RemoteEmbedder::new(config("http://127.0.0.1:1".into())).unwrap();
        let result = embedder.embed("anything", Instant::now()).await;
        assert!(matches!(result, Err(EmbedError::DeadlineExceeded)));
    }
}
