//! Text embeddings for the semantic stage: one `Embedder` trait, a local model and a remote API.
//!
//! Every embedding leaves this module L2-normalised, so the cosine of two embeddings is their dot
//! product (`cosine`). Embedding is CPU-bound and slow next to the other stages: callers pass an
//! absolute deadline and get `DeadlineExceeded` or `Overloaded` rather than a late answer.

mod lanes;
pub mod load;
pub mod local;
pub mod pipeline;
pub mod remote;
mod service;
pub mod words;

use std::path::PathBuf;

pub use load::EmbedLoad;
pub use local::{LocalEmbedder, LocalEmbedderConfig};
pub use remote::{RemoteEmbedder, RemoteEmbedderConfig};
pub use service::EmbedService;
pub use words::WordVectors;

/// Dimension of the local model's embeddings (all-MiniLM-L6-v2).
pub const EMBEDDING_DIM: usize = 384;

/// L2-normalised embedding.
pub type Embedding = Vec<f32>;

/// Why an embedding could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The embedding queue is full; the caller answers RESOURCE_EXHAUSTED instead of waiting.
    #[error("the embedder is overloaded (its queue is full); retry later")]
    Overloaded,
    /// The embedding would not finish before the caller's deadline.
    #[error("the embedding would not finish before the deadline")]
    DeadlineExceeded,
    /// A model file is missing; the message names it and how to fetch it.
    #[error("model file {} is missing: {hint}", file.display())]
    ModelMissing {
        /// The file that was looked for.
        file: PathBuf,
        /// What to do about it.
        hint: String,
    },
    /// The model or the remote endpoint failed.
    #[error("embedding backend failed: {0}")]
    Backend(String),
}

/// Turns text into a normalised embedding, within a deadline.
///
/// Implementations must return vectors of length `dim()` with unit L2 norm, must answer
/// `Overloaded` at once rather than queue without bound, and must not answer later than
/// `deadline` (they answer `DeadlineExceeded` instead).
#[async_trait::async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// Embeds one text before `deadline`.
    async fn embed(
        &self,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Embedding, EmbedError>;
    /// Embeds one text before `deadline`, with its words' vectors from the same model call
    /// when the embedder can give them (the local model can; a remote API cannot: `None`).
    async fn embed_words(
        &self,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(Embedding, Option<WordVectors>), EmbedError> {
        Ok((self.embed(text, deadline).await?, None))
    }
    /// Embeds a text nobody is waiting for (a call recorded without its embedding), behind
    /// every check's request. Embedders without priorities embed it like any other.
    async fn embed_background(
        &self,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Embedding, EmbedError> {
        self.embed(text, deadline).await
    }
    /// [`Embedder::embed_background`] with the words' vectors, as [`Embedder::embed_words`].
    async fn embed_background_words(
        &self,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(Embedding, Option<WordVectors>), EmbedError> {
        Ok((self.embed_background(text, deadline).await?, None))
    }
    /// How long a check's text queued now, needed by `deadline`, would wait for its
    /// embedding, for admission control; `None` when the embedder cannot tell (it is then
    /// always admitted).
    fn expected_wait(&self, _text: &str, _deadline: tokio::time::Instant) -> Option<ExpectedWait> {
        None
    }
    /// Texts waiting and batch sizes so far, for metrics; `None` when the embedder keeps no
    /// queue of its own.
    fn load(&self) -> Option<EmbedLoad> {
        None
    }
    /// Length of the vectors this embedder returns.
    fn dim(&self) -> usize;
    /// Short name of the model, for logs and stats.
    fn name(&self) -> &str;
}

/// An embedder's estimate of the wait for one more text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedWait {
    /// Until the text's embedding is ready.
    pub wait: std::time::Duration,
    /// Texts ahead of it (waiting or being embedded): with none, it is always admitted.
    pub ahead: usize,
    /// What the text's embedding alone takes (nothing ahead): when even that does not fit,
    /// the check's own deadline is too short, whatever the load.
    pub alone: std::time::Duration,
}

/// Cosine similarity of two normalised vectors: their dot product.
///
/// Vectors of different lengths are compared over the shorter one (a caller bug, asserted in
/// debug builds). Written with eight independent sums so the compiler vectorises it.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sums = [0.0f32; 8];
    let a_chunks = a.chunks_exact(8);
    let b_chunks = b.chunks_exact(8);
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for ((sum, x), y) in sums.iter_mut().zip(ca).zip(cb) {
            *sum += x * y;
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// Scales `v` to unit L2 norm; refuses a zero or non-finite vector, which has no direction.
pub(crate) fn l2_normalize(mut v: Vec<f32>) -> Result<Embedding, EmbedError> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(EmbedError::Backend(format!(
            "the model returned a vector of norm {norm}, which cannot be normalised"
        )));
    }
    for x in &mut v {
        *x /= norm;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_the_dot_product_for_any_length() {
        for n in [0usize, 1, 7, 8, 9, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((cosine(&a, &b) - naive).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn normalised_vector_has_unit_norm() {
        let v = l2_normalize(vec![3.0, 4.0]).unwrap();
        assert_eq!(v, vec![0.6, 0.8]);
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn zero_or_nan_vector_is_refused() {
        assert!(matches!(
            l2_normalize(vec![0.0; 4]),
            Err(EmbedError::Backend(_))
        ));
        assert!(matches!(
            l2_normalize(vec![f32::NAN, 1.0]),
            Err(EmbedError::Backend(_))
        ));
    }

    #[test]
    fn model_missing_message_names_file_and_fix() {
        let err = EmbedError::ModelMissing {
            file: PathBuf::from("models/model.onnx"),
            hint: "run `make models`".into(),
        };
        let msg = err.to_string();
        assert!(msg.contains("models/model.onnx") && msg.contains("make models"));
    }
}
