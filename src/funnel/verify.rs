//! VERIFY stage: an LLM judges a borderline pair, inside what is left of the deadline.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{CheckContext, Finding, Found, Stage, StageKind, StageOutcome, StageRun};
use crate::error::IdemError;

/// Least time worth spending on a verifier round trip.
const MIN_BUDGET: Duration = Duration::from_millis(2);

const SYSTEM_PROMPT: &str = "You decide whether two AI-agent tool calls are the SAME intended action \
(a retry or rephrasing of one request) or DIFFERENT actions. Different recipients, amounts, ids, dates, \
places, directions or meanings make them different. Answer with exactly one word: yes (same action) or no.";

/// Why the verifier gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The endpoint could not be reached in time.
    #[error("timeout")]
    Timeout,
    /// The endpoint failed or answered outside the yes/no format.
    #[error("{0}")]
    Failed(String),
}

/// A client of an OpenAI-compatible `/v1/chat/completions` endpoint.
pub struct Verifier {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
}

impl Verifier {
    /// A verifier at `base_url` (the `/v1/chat/completions` path is appended).
    pub fn new(base_url: &str, model: &str, api_key: Option<String>) -> Result<Self, String> {
        let base = base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "base_url must start with http:// or https://, got {base_url:?}"
            ));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            url: format!("{base}/v1/chat/completions"),
            model: model.to_string(),
            api_key,
        })
    }

    /// Asks whether two calls are the same action; `timeout` bounds the whole round trip.
    pub async fn same_action(
        &self,
        tool: &str,
        a: &str,
        b: &str,
        timeout: Duration,
    ) -> Result<bool, VerifyError> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "max_tokens": 2,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": format!("Tool: {tool}\nCall A arguments: {a}\nCall B arguments: {b}\nSame action?")},
            ],
        });
        let mut req = self.http.post(&self.url).json(&body).timeout(timeout);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(classify)?;
        if !resp.status().is_success() {
            return Err(VerifyError::Failed(format!(
                "verifier answered HTTP {}",
                resp.status()
            )));
        }
        let v: serde_json::Value = resp.json().await.map_err(classify)?;
        let answer = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        parse_answer(answer).ok_or_else(|| {
            VerifyError::Failed(format!("verifier answer is not yes/no: {answer:?}"))
        })
    }
}

fn classify(e: reqwest::Error) -> VerifyError {
    if e.is_timeout() {
        VerifyError::Timeout
    } else {
        VerifyError::Failed(e.to_string())
    }
}

/// Strict yes/no: one word, optionally followed by punctuation.
pub fn parse_answer(s: &str) -> Option<bool> {
    let w = s
        .trim()
        .trim_end_matches(['.', '!'])
        .trim()
        .to_ascii_lowercase();
    match w.as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Settles a borderline finding with the verifier, when the session enables it and time is left.
/// No answer in time, or an error: the borderline stands and the session's policy decides.
pub struct VerifyStage {
    verifier: Option<Arc<Verifier>>,
}

impl VerifyStage {
    /// The stage over an optional verifier client.
    pub fn new(verifier: Option<Arc<Verifier>>) -> Self {
        Self { verifier }
    }
}

#[async_trait]
impl Stage for VerifyStage {
    fn kind(&self) -> StageKind {
        StageKind::Verify
    }

    fn min_budget(&self) -> Duration {
        MIN_BUDGET
    }

    async fn run(
        &self,
        ctx: &mut CheckContext,
        borderline: Option<&Found>,
    ) -> Result<StageRun, IdemError> {
        let Some(b) = borderline else {
            return Ok(StageRun::pass(StageOutcome::NoMatch));
        };
        let (Some(v), true) = (&self.verifier, ctx.settings.verifier_enabled) else {
            return Ok(StageRun::pass(StageOutcome::Disabled));
        };
        let timeout = ctx.remaining();
        let answer = v
            .same_action(
                &ctx.call.tool,
                &b.record.canonical_json,
                &ctx.call.canonical_json,
                timeout,
            )
            .await;
        let mut run = StageRun::pass(match &answer {
            Ok(true) => StageOutcome::Yes,
            Ok(false) => StageOutcome::No,
            Err(VerifyError::Timeout) => StageOutcome::Timeout,
            Err(e) => {
                tracing::warn!(%e, "verifier failed; borderline policy decides");
                StageOutcome::Error
            }
        });
        run.best_score = Some(b.score);
        if let Ok(true) = answer {
            run.finding = Finding::Found(Found {
                record: b.record.clone(),
                stage: StageKind::Verify,
                score: b.score,
            });
        }
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn answers_are_strict() {
        assert_eq!(parse_answer("yes"), Some(true));
        assert_eq!(parse_answer(" No. "), Some(false));
        assert_eq!(parse_answer("Yes, probably"), None);
        assert_eq!(parse_answer(""), None);
    }
}
