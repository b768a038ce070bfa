//! The local embedder: all-MiniLM-L6-v2 (int8 ONNX) through fastembed, on a pool of OS threads.
//!
//! fastembed's `embed` takes `&mut self` and burns CPU, so each worker thread owns one model and
//! drains a bounded two-lane queue (`lanes`): whatever checks are waiting go into one model call;
//! background backfills run only when no check waits. A full lane answers `Overloaded` at once; a
//! request whose deadline passed while it waited is answered `DeadlineExceeded` without being
//! embedded. The worker threads (and ONNX Runtime's, which inherit it) run at a lower priority.
//! ONNX Runtime is loaded from `models/` at run time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fastembed::{
    InitOptionsUserDefined, OutputKey, Pooling, SingleBatchOutput, TextEmbedding, TokenizerFiles,
    UserDefinedEmbeddingModel,
};
use tokio::sync::oneshot;

use super::lanes::{Lane, Lanes, PushError};
use super::pipeline::{BatchCost, Batcher, CostModel, Pipeline, Waiting, estimate_tokens};
use super::words::{WordVectors, pool_words};
use super::{EMBEDDING_DIM, EmbedError, Embedder, Embedding, ExpectedWait, l2_normalize};

/// The ONNX model file, in the models folder.
pub const MODEL_FILE: &str = "model.onnx";
/// The tokenizer files fastembed needs, in the models folder.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];
/// The ONNX Runtime library, in the models folder (unless `ORT_DYLIB_PATH` names another).
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";
/// Word pieces the model reads; the tokenizer truncates longer texts (sentence-transformers'
/// `max_seq_length` for this model).
pub const MAX_TOKENS: usize = 256;

/// What to tell a user whose model files are missing.
const FETCH_HINT: &str = "fetch the model with `make models` (scripts/fetch-models.sh)";
/// Name reported by `Embedder::name`.
const MODEL_NAME: &str = "all-MiniLM-L6-v2-int8";

/// Settings of the local embedder pool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LocalEmbedderConfig {
    /// Folder holding `model.onnx`, the tokenizer files and the ONNX Runtime library.
    pub models_dir: PathBuf,
    /// Worker threads, each with its own copy of the model (0 is read as 1).
    pub workers: usize,
    /// ONNX Runtime threads per model call (0 is read as 1).
    pub intra_threads: usize,
    /// Requests that may wait for a worker; more are refused with `Overloaded` (0 is read as 1).
    /// Background jobs have a lane of the same size behind it.
    pub queue_capacity: usize,
    /// Most requests embedded in one model call (0 is read as 1).
    pub max_batch: usize,
    /// Niceness added to the embedding threads (Linux; 0 keeps the server's). Checks that need
    /// no embedding (exact repeats, the stages after the embedding, the durable write) then get
    /// the CPU first, and embeddings take what is left.
    pub nice: i32,
    /// Characters kept from each text: a cheap bound on tokenizer work, well above what fills
    /// `MAX_TOKENS` word pieces (0 is read as 1).
    pub max_chars: usize,
}

impl Default for LocalEmbedderConfig {
    fn default() -> Self {
        Self {
            models_dir: PathBuf::from("models"),
            workers: 1,
            intra_threads: 2,
            queue_capacity: 64,
            max_batch: 16,
            max_chars: 2000,
            nice: 5,
        }
    }
}

/// One request in the queue: the text, when its answer stops being useful, where to answer.
struct Job {
    text: String,
    /// Estimated word pieces of `text`.
    tokens: u32,
    deadline: std::time::Instant,
    reply: oneshot::Sender<Result<Embedded, EmbedError>>,
}

/// What one model call gives a text: its sentence embedding and its words' vectors (from the
/// same forward pass).
type Embedded = (Embedding, WordVectors);

/// Embeds texts with the local model on dedicated threads; cheap to share behind an `Arc`.
///
/// Dropping it closes the queue; each worker finishes the batch in hand and exits.
pub struct LocalEmbedder {
    queue: Arc<Lanes<Job>>,
    max_chars: usize,
    max_batch: usize,
    /// What the workers are doing: per worker, when its batch started and what it should cost.
    busy: Arc<Busy>,
    /// Batch costs learned from the workers' model calls.
    cost: Arc<CostModel>,
    /// Sizes of the batches the workers ran (metrics).
    batches: Arc<super::load::BatchSizes>,
}

/// Per worker, the batch in hand: when it started and what it is expected to cost.
#[derive(Debug, Default)]
struct Busy {
    slots: std::sync::Mutex<Vec<Option<(std::time::Instant, Duration)>>>,
}

impl Busy {
    fn set(&self, worker: usize, batch: Option<(std::time::Instant, Duration)>) {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = s.get_mut(worker) {
            *slot = batch;
        }
    }

    /// Time left of each worker's batch (zero when idle; a batch past its estimate is taken to
    /// end soon).
    fn left(&self, now: std::time::Instant) -> Vec<Duration> {
        let s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        s.iter()
            .map(|slot| match slot {
                Some((started, cost)) => cost
                    .saturating_sub(now.saturating_duration_since(*started))
                    .max(*cost / 10),
                None => Duration::ZERO,
            })
            .collect()
    }
}

/// First guess of the batch cost, before any batch is measured: about what one short text
/// takes on 2 cores (refined within the first few batches).
const COST_PRIOR: BatchCost = BatchCost {
    overhead_us: 1500.0,
    per_token_us: 150.0,
};

/// Most padding tolerated in one model call: texts are grouped by length so that padded
/// tokens are at most this share above the real ones.
const MAX_PADDING: f64 = 0.25;

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("model", &MODEL_NAME)
            .field("max_chars", &self.max_chars)
            .finish_non_exhaustive()
    }
}

impl LocalEmbedder {
    /// Loads the model (one copy per worker), warms it up and starts the workers.
    ///
    /// Blocking (hundreds of milliseconds): call it at start-up or in `spawn_blocking`. Returns
    /// `ModelMissing` naming the first missing file, before ONNX Runtime is touched (the `ort`
    /// crate panics when its library cannot be found, so this check must come first).
    pub fn new(config: LocalEmbedderConfig) -> Result<Self, EmbedError> {
        let ort_override = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let ort_library = check_files(&config.models_dir, ort_override.as_deref())?;
        load_onnx_runtime(&ort_library)?;

        let model = read_model(&config.models_dir)?;
        let workers = config.workers.max(1);
        let queue = Arc::new(Lanes::new(config.queue_capacity, config.queue_capacity));
        let max_batch = config.max_batch.max(1);
        let (ready, started) = std::sync::mpsc::channel();
        let busy = Arc::new(Busy {
            slots: std::sync::Mutex::new(vec![None; workers]),
        });
        let cost = Arc::new(CostModel::new(COST_PRIOR));
        let batches = Arc::new(super::load::BatchSizes::default());
        for i in 0..workers {
            let (jobs, model, ready) = (Arc::clone(&queue), model.clone(), ready.clone());
            let (busy, cost) = (Arc::clone(&busy), Arc::clone(&cost));
            let batches = Arc::clone(&batches);
            let (intra_threads, nice) = (config.intra_threads.max(1), config.nice);
            std::thread::Builder::new()
                .name(format!("idem-embed-{i}"))
                .spawn(move || {
                    // Before the model exists, so ONNX Runtime's own threads inherit it.
                    lower_priority(nice);
                    match load_model(model, intra_threads) {
                        Ok(model) => {
                            let _ = ready.send(Ok(()));
                            let worker = Worker {
                                index: i,
                                busy: &busy,
                                cost: &cost,
                                batches: &batches,
                                max_batch,
                            };
                            worker.run(model, &jobs);
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })
                .map_err(|e| {
                    queue.close();
                    EmbedError::Backend(format!("could not start an embed worker: {e}"))
                })?;
        }
        drop(ready);
        for _ in 0..workers {
            let outcome = started.recv().unwrap_or_else(|_| {
                Err(EmbedError::Backend(
                    "an embed worker stopped while loading the model".into(),
                ))
            });
            if let Err(e) = outcome {
                queue.close();
                return Err(e);
            }
        }
        tracing::info!(
            model = MODEL_NAME,
            workers,
            intra_threads = config.intra_threads,
            queue_capacity = config.queue_capacity,
            max_batch,
            "local embedder ready"
        );
        Ok(Self {
            queue,
            max_chars: config.max_chars.max(1),
            max_batch,
            busy,
            cost,
            batches,
        })
    }

    /// Queues one text for the workers; `deadline` is on the std clock the workers read.
    fn enqueue(
        &self,
        lane: Lane,
        text: &str,
        deadline: std::time::Instant,
    ) -> Result<oneshot::Receiver<Result<Embedded, EmbedError>>, EmbedError> {
        let (reply, answer) = oneshot::channel();
        let text = truncate_chars(text, self.max_chars);
        let job = Job {
            tokens: estimate_tokens(text, MAX_TOKENS),
            text: text.to_owned(),
            deadline,
            reply,
        };
        match self.queue.push(lane, job) {
            Ok(()) => Ok(answer),
            Err(PushError::Full(_)) => Err(EmbedError::Overloaded),
            Err(PushError::Closed(_)) => {
                Err(EmbedError::Backend("every embed worker has stopped".into()))
            }
        }
    }

    /// Queues `text` in `lane` and waits for its embedding and word vectors until `deadline`.
    async fn embed_in(
        &self,
        lane: Lane,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Embedded, EmbedError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(EmbedError::DeadlineExceeded);
        }
        // The workers have no tokio clock: hand them the same deadline on the std clock.
        let answer = self.enqueue(lane, text, std::time::Instant::now() + left)?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EmbedError::Backend(
                "the embed worker stopped before answering".into(),
            )),
            Err(_) => Err(EmbedError::DeadlineExceeded),
        }
    }
}

impl Drop for LocalEmbedder {
    fn drop(&mut self) {
        self.queue.close();
    }
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    /// Queues the text and waits for its embedding until `deadline`.
    ///
    /// Under tokio's paused test clock the wait auto-advances straight to the deadline (the
    /// workers are OS threads the runtime cannot see): use a real clock with this embedder.
    async fn embed(
        &self,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Embedding, EmbedError> {
        Ok(self.embed_in(Lane::Request, text, deadline).await?.0)
    }

    /// The embedding and the word vectors of the same model call.
    async fn embed_words(
        &self,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(Embedding, Option<WordVectors>), EmbedError> {
        let (v, w) = self.embed_in(Lane::Request, text, deadline).await?;
        Ok((v, Some(w)))
    }

    /// Queues the text behind every waiting request: workers take it only when idle.
    async fn embed_background(
        &self,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Embedding, EmbedError> {
        Ok(self.embed_in(Lane::Background, text, deadline).await?.0)
    }

    async fn embed_background_words(
        &self,
        text: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(Embedding, Option<WordVectors>), EmbedError> {
        let (v, w) = self.embed_in(Lane::Background, text, deadline).await?;
        Ok((v, Some(w)))
    }

    fn load(&self) -> Option<super::EmbedLoad> {
        let (batch_buckets, batched_texts, batches) = self.batches.snapshot();
        Some(super::EmbedLoad {
            queued: self.queue.waiting_requests(|_| ()).len(),
            batch_buckets,
            batched_texts,
            batches,
        })
    }

    /// From the batch pipeline: what is left of the running batches, then the batches of
    /// waiting texts ahead, at the learned batch cost.
    fn expected_wait(&self, text: &str, deadline: tokio::time::Instant) -> Option<ExpectedWait> {
        let tokens = estimate_tokens(truncate_chars(text, self.max_chars), MAX_TOKENS);
        let now = std::time::Instant::now();
        let pipeline = Pipeline {
            running_left: self.busy.left(now),
            waiting: self.queue.waiting_requests(|j| waiting(j, now)),
            max_batch: self.max_batch,
        };
        let running = pipeline
            .running_left
            .iter()
            .filter(|d| !d.is_zero())
            .count();
        let cost = self.cost.cost();
        Some(ExpectedWait {
            wait: pipeline.expected_wait(
                Waiting {
                    tokens,
                    left: deadline.saturating_duration_since(tokio::time::Instant::now()),
                },
                &cost,
            ),
            ahead: pipeline.waiting.len() + running,
            alone: cost.of(u64::from(tokens)),
        })
    }

    fn dim(&self) -> usize {
        EMBEDDING_DIM
    }

    fn name(&self) -> &str {
        MODEL_NAME
    }
}

/// Checks that the model, tokenizer and ONNX Runtime files are in `models_dir` (`idem doctor`);
/// the error names the first missing file and how to fetch it.
pub fn check_model_files(models_dir: &Path) -> Result<PathBuf, EmbedError> {
    let ort_override = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    check_files(models_dir, ort_override.as_deref())
}

/// Checks that every file the model needs exists; returns the ONNX Runtime library to load
/// (`ort_override`, from `ORT_DYLIB_PATH`, when given, else the one in `models_dir`).
fn check_files(models_dir: &Path, ort_override: Option<&Path>) -> Result<PathBuf, EmbedError> {
    let missing = |file: PathBuf| EmbedError::ModelMissing {
        file,
        hint: FETCH_HINT.into(),
    };
    for name in std::iter::once(MODEL_FILE).chain(TOKENIZER_FILES) {
        let file = models_dir.join(name);
        if !file.is_file() {
            return Err(missing(file));
        }
    }
    match ort_override {
        Some(library) if !library.is_file() => Err(EmbedError::ModelMissing {
            file: library.to_path_buf(),
            hint: format!(
                "ORT_DYLIB_PATH names it; unset ORT_DYLIB_PATH to use {} or {FETCH_HINT}",
                models_dir.join(ORT_LIBRARY).display()
            ),
        }),
        Some(library) => Ok(library.to_path_buf()),
        None => {
            let library = models_dir.join(ORT_LIBRARY);
            if library.is_file() {
                Ok(library)
            } else {
                Err(missing(library))
            }
        }
    }
}

/// Loads the ONNX Runtime library once per process, from an explicit path (so no environment
/// variable has to be set). Later calls keep the library already loaded.
fn load_onnx_runtime(library: &Path) -> Result<(), EmbedError> {
    let library = std::path::absolute(library).map_err(|e| {
        EmbedError::Backend(format!("bad ONNX Runtime path {}: {e}", library.display()))
    })?;
    // Only the side effect is wanted: fastembed builds the (one, shared) environment itself.
    let _builder = ort::init_from(&library).map_err(|e| {
        EmbedError::Backend(format!(
            "could not load ONNX Runtime from {}: {e}",
            library.display()
        ))
    })?;
    Ok(())
}

/// Reads the model and tokenizer files into a fastembed model description.
fn read_model(models_dir: &Path) -> Result<UserDefinedEmbeddingModel, EmbedError> {
    let read = |name: &str| {
        let file = models_dir.join(name);
        std::fs::read(&file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => EmbedError::ModelMissing {
                file,
                hint: FETCH_HINT.into(),
            },
            _ => EmbedError::Backend(format!("could not read {}: {e}", file.display())),
        })
    };
    let [tokenizer, config, special_tokens, tokenizer_config] = TOKENIZER_FILES;
    let tokenizer_files = TokenizerFiles {
        tokenizer_file: read(tokenizer)?,
        config_file: read(config)?,
        special_tokens_map_file: read(special_tokens)?,
        tokenizer_config_file: read(tokenizer_config)?,
    };
    // The model was trained with mean pooling; fastembed's default (CLS) would be wrong.
    Ok(
        UserDefinedEmbeddingModel::new(read(MODEL_FILE)?, tokenizer_files)
            .with_pooling(Pooling::Mean),
    )
}

/// Lowers the calling thread's scheduling priority by `nice` (Linux: the priority is per
/// thread, and threads it creates inherit it). Best effort: a refusal is logged, not fatal.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority takes no pointers; `who = 0` names the calling thread.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        if rc != 0 {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "could not lower the embedding threads' priority"
            );
        }
    }
}

/// Builds one model session and checks it answers with vectors of the expected length.
fn load_model(
    model: UserDefinedEmbeddingModel,
    intra_threads: usize,
) -> Result<TextEmbedding, EmbedError> {
    // No spin-waiting in ONNX Runtime's thread pools: on a small machine spinning threads take
    // the cores the gRPC workers and the store need between inferences.
    let options = InitOptionsUserDefined::new()
        .with_max_length(MAX_TOKENS)
        .with_intra_threads(intra_threads)
        .with_session_config("session.intra_op.allow_spinning", "0")
        .with_session_config("session.inter_op.allow_spinning", "0");
    let mut session = TextEmbedding::try_new_from_user_defined(model, options)
        .map_err(|e| EmbedError::Backend(format!("could not load the embedding model: {e}")))?;
    // The first run allocates and optimises; pay for it now, not inside a request's budget.
    let warm = session
        .embed(["warm up"], None)
        .map_err(|e| EmbedError::Backend(format!("the embedding model failed to run: {e}")))?;
    let dim = warm.first().map_or(0, Vec::len);
    if dim != EMBEDDING_DIM {
        return Err(EmbedError::Backend(format!(
            "the embedding model returns {dim}-dimensional vectors, expected {EMBEDDING_DIM}"
        )));
    }
    Ok(session)
}

/// One embedding thread: its slot in `busy`, and what it learns batch costs into.
struct Worker<'a> {
    index: usize,
    busy: &'a Busy,
    cost: &'a CostModel,
    batches: &'a super::load::BatchSizes,
    max_batch: usize,
}

impl Worker<'_> {
    /// Takes whatever requests are queued (up to `max_batch`; else one background job), drops
    /// what is too late, embeds the rest grouped by length and answers each request. Returns
    /// when the queue is closed.
    fn run(&self, mut model: TextEmbedding, queue: &Lanes<Job>) {
        loop {
            // Formed as the admission estimate assumes: no text joins a batch that would then
            // end after the deadline of a text already in it.
            let cost = self.cost.cost();
            let mut batcher = Batcher::new(Duration::ZERO, self.max_batch);
            let Some((_, batch)) = queue
                .next_batch_by(|job| batcher.take(waiting(job, std::time::Instant::now()), &cost))
            else {
                return;
            };
            let now = std::time::Instant::now();
            let (live, late): (Vec<Job>, Vec<Job>) = batch
                .into_iter()
                .partition(|job| job.deadline > now && !job.reply.is_closed());
            for job in late {
                // The caller may have gone; nobody to tell then.
                let _ = job.reply.send(Err(EmbedError::DeadlineExceeded));
            }
            if live.is_empty() {
                continue;
            }
            self.batches.record(live.len());
            let tokens: u64 = live.iter().map(|j| u64::from(j.tokens)).sum();
            self.busy
                .set(self.index, Some((now, self.cost.cost().of(tokens))));
            let started = std::time::Instant::now();
            let mut clean = true;
            for group in by_length(live) {
                clean &= self.embed_group(&mut model, group);
            }
            // The admission estimate costs whole batches: learn what this one took (unless a
            // failure made it embed texts again one at a time).
            if clean {
                self.cost.learn(tokens, started.elapsed());
            }
            self.busy.set(self.index, None);
        }
    }

    /// One model call for texts of similar length; answers each job.
    ///
    /// A failed call (ONNX Runtime reports rare transient kernel errors) is not passed on to
    /// every check of the batch: each text that can still be answered in time is embedded
    /// again on its own, so a transient error costs a retry and a text the model cannot
    /// embed fails only its own check. True when the batch ran at the first call.
    fn embed_group(&self, model: &mut TextEmbedding, group: Vec<Job>) -> bool {
        let texts: Vec<&str> = group.iter().map(|job| job.text.as_str()).collect();
        let mut clean = None;
        let outcomes = embed_or_isolate(
            &texts,
            |texts| {
                let started = std::time::Instant::now();
                let out = run_model(model, texts);
                if clean.is_none() {
                    log_batch(texts.len(), started.elapsed());
                    clean = Some(out.is_ok());
                }
                out
            },
            |i| group[i].deadline > std::time::Instant::now() && !group[i].reply.is_closed(),
        );
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let _ = job.reply.send(match outcome {
                Retried::Embedded((v, w)) => l2_normalize(v).map(|v| (v, w)),
                Retried::Failed(message) => Err(EmbedError::Backend(message)),
                Retried::Late => Err(EmbedError::DeadlineExceeded),
            });
        }
        clean.unwrap_or(false)
    }
}

/// One model call: the vectors of `texts` and their words', or why there are none (an
/// error, a panic inside the model, or a count that does not match).
fn run_model(model: &mut TextEmbedding, texts: &[&str]) -> Result<Vec<Embedded>, String> {
    // A panic inside the model must not take the worker (and the queue) down with it.
    match catch_unwind(AssertUnwindSafe(|| embed_with_words(model, texts))) {
        Ok(Ok(out)) if out.len() == texts.len() => Ok(out),
        Ok(Ok(out)) => Err(format!(
            "the model returned {} embeddings for {} texts",
            out.len(),
            texts.len()
        )),
        Ok(Err(e)) => Err(format!("the embedding model failed: {e}")),
        Err(_) => Err("the embedding model panicked".to_owned()),
    }
}

/// Where the token states are among the model's outputs: fastembed's own order of preference
/// (the model has one output, `last_hidden_state`).
const STATE_OUTPUT: [OutputKey; 4] = [
    OutputKey::OnlyOne,
    OutputKey::ByName("text_embeds"),
    OutputKey::ByName("last_hidden_state"),
    OutputKey::ByName("sentence_embedding"),
];

/// One forward pass for `texts` (`TextEmbedding::transform`, one batch): each text's
/// sentence vector, mean-pooled and normalised as `TextEmbedding::embed` does it (the same
/// pooling call), and its words' vectors from the same token states.
fn embed_with_words(model: &mut TextEmbedding, texts: &[&str]) -> Result<Vec<Embedded>, String> {
    let batches = model
        .transform(texts, Some(texts.len().max(1)))
        .map_err(|e| e.to_string())?
        .into_raw();
    let [batch] = batches.as_slice() else {
        return Err(format!("{} model batches for one call", batches.len()));
    };
    // The same tokenisation the model call used (fastembed encodes with special tokens and
    // pads to the longest text), for each piece's word and span.
    let encodings = model
        .tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| format!("tokenizer: {e}"))?;
    let pooled = batch
        .select_and_pool_output(&STATE_OUTPUT.as_slice(), Some(Pooling::Mean))
        .map_err(|e| e.to_string())?;
    let (states, pieces, dim) = token_states(batch)?;
    let mut out = Vec::with_capacity(texts.len());
    for (row, sentence) in pooled.rows().into_iter().enumerate() {
        let (Some(text), Some(enc)) = (texts.get(row), encodings.get(row)) else {
            return Err("more pooled rows than texts".to_owned());
        };
        let vector = unit(&sentence.iter().copied().collect::<Vec<f32>>());
        let start = row * pieces * dim;
        let words = pool_words(
            text,
            dim,
            states.get(start..start + pieces * dim).unwrap_or(&[]),
            enc.get_word_ids(),
            enc.get_offsets(),
        );
        out.push((vector, words));
    }
    Ok(out)
}

/// The batch's token states: (values, pieces per text, dim).
fn token_states(batch: &SingleBatchOutput) -> Result<(&[f32], usize, usize), String> {
    let value = match batch.outputs.as_slice() {
        [(_, only)] => only,
        all => {
            &all.iter()
                .find(|(n, _)| n == "last_hidden_state")
                .ok_or("the model has no token states output")?
                .1
        }
    };
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    match shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Vec<_>>()[..]
    {
        [Ok(_), Ok(pieces), Ok(dim)] => Ok((data, pieces, dim)),
        _ => Err(format!("token states of shape {shape:?}")),
    }
}

/// `v` scaled to unit norm as fastembed's `embed` does it (a tiny epsilon, no refusal: the
/// caller's `l2_normalize` refuses a zero vector afterwards, as it does for `embed`).
fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|&x| x / (norm + 1e-12)).collect()
}

/// What became of one text of a batch.
#[derive(Debug, PartialEq)]
enum Retried<T> {
    /// Its vectors.
    Embedded(T),
    /// The model failed on it alone too; the error of that call.
    Failed(String),
    /// The batch failed and its check can no longer be answered in time.
    Late,
}

/// Runs `texts` as one batch; if that fails, runs each text for which `still_wanted` holds on
/// its own (at most one more model call per text), so one bad text or one transient error
/// does not fail the others.
fn embed_or_isolate<T>(
    texts: &[&str],
    mut run: impl FnMut(&[&str]) -> Result<Vec<T>, String>,
    still_wanted: impl Fn(usize) -> bool,
) -> Vec<Retried<T>> {
    let error = match run(texts) {
        Ok(vectors) => return vectors.into_iter().map(Retried::Embedded).collect(),
        Err(error) => error,
    };
    tracing::warn!(
        batch = texts.len(),
        error = %error,
        "embedding batch failed; embedding its texts again one at a time"
    );
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            if !still_wanted(i) {
                return Retried::Late;
            }
            match run(std::slice::from_ref(text)) {
                Ok(mut one) => one.pop().map_or_else(
                    || Retried::Failed("the model returned no embedding".to_owned()),
                    Retried::Embedded,
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "embedding a text on its own failed too");
                    Retried::Failed(e)
                }
            }
        })
        .collect()
}

/// Splits a batch into runs of similar length (shortest first), so that padding each run to
/// its longest text adds at most `MAX_PADDING` to its real tokens.
fn by_length(mut jobs: Vec<Job>) -> Vec<Vec<Job>> {
    jobs.sort_by_key(|j| j.tokens);
    let mut groups: Vec<Vec<Job>> = Vec::new();
    let mut real = 0u64;
    for job in jobs {
        let t = u64::from(job.tokens);
        let fits = groups.last().is_some_and(|g| {
            let padded = t * (g.len() as u64 + 1);
            padded as f64 <= (real + t) as f64 * (1.0 + MAX_PADDING)
        });
        match groups.last_mut() {
            Some(g) if fits => {
                g.push(job);
                real += t;
            }
            _ => {
                groups.push(vec![job]);
                real = t;
            }
        }
    }
    groups
}

/// A queued job as the batch rule sees it at `now`.
fn waiting(job: &Job, now: std::time::Instant) -> Waiting {
    Waiting {
        tokens: job.tokens,
        left: job.deadline.saturating_duration_since(now),
    }
}

fn log_batch(size: usize, took: Duration) {
    tracing::trace!(
        batch = size,
        took_us = took.as_micros() as u64,
        "embedded batch"
    );
}

/// The longest prefix of `text` with at most `max_chars` characters.
fn truncate_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;
    use std::time::Duration;
    use tokio::time::Instant;

    /// The repository's models folder; panics with the fix when the files are not there.
    fn models_dir() -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        if let Err(e) = check_files(&dir, None) {
            panic!("{e}\nthe local model tests need the real model: run `make models` first");
        }
        dir
    }

    fn embedder(config: LocalEmbedderConfig) -> LocalEmbedder {
        LocalEmbedder::new(LocalEmbedderConfig {
            models_dir: models_dir(),
            ..config
        })
        .expect("the local model loads")
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    /// A model stand-in: fails any batch containing `bad`, and the first `flaky` calls.
    fn model_failing(
        bad: &'static str,
        flaky: usize,
    ) -> impl FnMut(&[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut calls = 0;
        move |texts: &[&str]| {
            calls += 1;
            if calls <= flaky || texts.contains(&bad) {
                return Err(format!("failed on call {calls}"));
            }
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    #[test]
    fn a_batch_that_runs_is_not_run_again() {
        let mut calls = 0;
        let out = embed_or_isolate(
            &["a", "bb"],
            |texts| {
                calls += 1;
                model_failing("-", 0)(texts)
            },
            |_| true,
        );
        assert_eq!(
            out,
            vec![Retried::Embedded(vec![1.0]), Retried::Embedded(vec![2.0])]
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_transient_batch_failure_is_retried_text_by_text() {
        let out = embed_or_isolate(&["a", "bb", "ccc"], model_failing("-", 1), |_| true);
        let want: Vec<Retried<Vec<f32>>> =
            [1.0, 2.0, 3.0].map(|x| Retried::Embedded(vec![x])).into();
        assert_eq!(out, want);
    }

    #[test]
    fn a_text_the_model_cannot_embed_fails_only_its_own_check() {
        let out = embed_or_isolate(&["a", "bad", "ccc"], model_failing("bad", 0), |_| true);
        assert_eq!(out[0], Retried::Embedded(vec![1.0]));
        assert!(matches!(&out[1], Retried::Failed(e) if e.contains("failed")));
        assert_eq!(out[2], Retried::Embedded(vec![3.0]));
    }

    #[test]
    fn a_late_text_of_a_failed_batch_is_not_embedded_again() {
        let mut singles = Vec::new();
        let mut model = model_failing("-", 1);
        let out = embed_or_isolate(
            &["a", "bb"],
            |texts| {
                if texts.len() == 1 {
                    singles.push(texts[0].to_owned());
                }
                model(texts)
            },
            |i| i == 1,
        );
        assert_eq!(out, vec![Retried::Late, Retried::Embedded(vec![2.0])]);
        assert_eq!(singles, vec!["bb".to_owned()]);
    }

    #[test]
    fn missing_model_is_reported_not_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalEmbedder::new(LocalEmbedderConfig {
            models_dir: dir.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap_err();
        match &err {
            EmbedError::ModelMissing { file, .. } => assert_eq!(file, &dir.path().join(MODEL_FILE)),
            other => panic!("expected ModelMissing, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("model.onnx") && msg.contains("make models"),
            "{msg}"
        );
    }

    #[test]
    fn missing_runtime_library_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        for name in std::iter::once(MODEL_FILE).chain(TOKENIZER_FILES) {
            std::fs::write(dir.path().join(name), b"{}").unwrap();
        }
        match check_files(dir.path(), None) {
            Err(EmbedError::ModelMissing { file, .. }) => {
                assert_eq!(file, dir.path().join(ORT_LIBRARY))
            }
            other => panic!("expected ModelMissing, got {other:?}"),
        }
        let elsewhere = dir.path().join("nowhere.so");
        match check_files(dir.path(), Some(&elsewhere)) {
            Err(EmbedError::ModelMissing { file, hint }) => {
                assert_eq!(file, elsewhere);
                assert!(hint.contains("ORT_DYLIB_PATH"));
            }
            other => panic!("expected ModelMissing, got {other:?}"),
        }
    }

    fn job(tokens: u32) -> Job {
        Job {
            text: String::new(),
            tokens,
            deadline: std::time::Instant::now(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn batches_are_grouped_by_length_with_little_padding() {
        let groups = by_length(vec![job(40), job(10), job(42), job(11), job(200), job(12)]);
        let lengths: Vec<Vec<u32>> = groups
            .iter()
            .map(|g| g.iter().map(|j| j.tokens).collect())
            .collect();
        assert_eq!(lengths, vec![vec![10, 11, 12], vec![40, 42], vec![200]]);
        for g in &groups {
            let real: u32 = g.iter().map(|j| j.tokens).sum();
            let padded = g.iter().map(|j| j.tokens).max().unwrap() * g.len() as u32;
            assert!(f64::from(padded) <= f64::from(real) * (1.0 + MAX_PADDING));
        }
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("héllo", 10), "héllo");
        assert_eq!(truncate_chars("", 3), "");
    }

    #[tokio::test]
    async fn embedding_has_model_dimension_and_unit_norm() {
        let embedder = embedder(LocalEmbedderConfig::default());
        let v = embedder
            .embed("Create a ticket for the login bug", soon())
            .await
            .unwrap();
        assert_eq!(v.len(), EMBEDDING_DIM);
        assert_eq!(embedder.dim(), EMBEDDING_DIM);
        let norm = cosine(&v, &v).sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }

    #[tokio::test]
    async fn paraphrase_is_closer_than_unrelated_text() {
        let embedder = embedder(LocalEmbedderConfig::default());
        let a = embedder
            .embed("Send the quarterly report to the finance team", soon())
            .await
            .unwrap();
        let b = embedder
            .embed("Email the finance team the quarterly report", soon())
            .await
            .unwrap();
        let c = embedder
            .embed(
                "Book a table for two at an Italian restaurant tonight",
                soon(),
            )
            .await
            .unwrap();
        let paraphrase = cosine(&a, &b);
        let unrelated = cosine(&a, &c);
        assert!(
            paraphrase > unrelated + 0.2,
            "paraphrase {paraphrase}, unrelated {unrelated}"
        );
        assert!(paraphrase > 0.8, "paraphrase {paraphrase}");
    }

    #[tokio::test]
    async fn same_text_gives_same_embedding_alone_or_batched() {
        let embedder = Arc::new(embedder(LocalEmbedderConfig::default()));
        let alone = embedder.embed("refund order 1234", soon()).await.unwrap();
        let texts = [
            "refund order 1234",
            "a much longer text that pads the batch out a lot",
        ];
        let batched =
            futures::future::join_all(texts.iter().map(|t| embedder.embed(t, soon()))).await;
        let batched = batched[0].as_ref().unwrap();
        assert!(cosine(&alone, batched) > 0.999);
    }

    /// The sentence vector pooled here from the token states is the one fastembed's `embed`
    /// gives, and the word vectors come from the same call.
    #[test]
    fn word_vectors_come_from_the_same_pass_and_leave_the_sentence_vector_unchanged() {
        load_onnx_runtime(&check_files(&models_dir(), None).unwrap()).unwrap();
        let mut model = load_model(read_model(&models_dir()).unwrap(), 1).unwrap();
        let texts = [
            "Send the quarterly report to the finance team",
            "A woman is slicing an unbelievably large onion, quickly!",
            "hi",
        ];
        let reference = model.embed(texts, Some(texts.len())).unwrap();
        let ours = embed_with_words(&mut model, &texts).unwrap();
        assert_eq!(ours.len(), texts.len());
        for ((v, words), r) in ours.iter().zip(&reference) {
            assert_eq!(v.len(), EMBEDDING_DIM);
            let worst = v
                .iter()
                .zip(r)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 1e-6, "sentence vector differs by {worst}");
            assert!(!words.is_empty());
        }
        let w = &ours[1].1;
        let listed: Vec<&str> = (0..w.len()).map(|i| w.word(i)).collect();
        assert_eq!(
            listed,
            [
                "a",
                "woman",
                "is",
                "slicing",
                "an",
                "unbelievably",
                "large",
                "onion",
                "quickly"
            ]
        );
        // A word is closest to itself in another sentence of the same meaning, and a
        // synonym is closer than an unrelated word.
        let mut m = |t: &str| embed_with_words(&mut model, &[t]).unwrap().remove(0).1;
        let (a, b) = (
            m("a woman is slicing an onion"),
            m("a lady is slicing an onion"),
        );
        let c = m("a truck is slicing an onion");
        assert!(a.cosine(1, &b, 1) > a.cosine(1, &c, 1) + 0.05);
    }

    #[tokio::test]
    async fn overload_refuses_some_and_answers_all() {
        let embedder = Arc::new(embedder(LocalEmbedderConfig {
            queue_capacity: 1,
            max_batch: 1,
            ..Default::default()
        }));
        let text = "Schedule a meeting with the design team next Tuesday at 10am";
        let calls = (0..32).map(|_| {
            let embedder = Arc::clone(&embedder);
            tokio::spawn(async move { embedder.embed(text, soon()).await })
        });
        let results =
            tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(calls))
                .await
                .expect("every call is answered");
        let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
        let overloaded = results
            .iter()
            .filter(|r| matches!(r, Err(EmbedError::Overloaded)))
            .count();
        let embedded = results.iter().filter(|r| r.is_ok()).count();
        assert!(overloaded > 0, "no call was refused");
        assert!(embedded > 0, "no call was embedded");
        assert_eq!(overloaded + embedded, results.len(), "{results:?}");
    }

    #[tokio::test]
    async fn past_deadline_is_refused_before_queueing() {
        let embedder = embedder(LocalEmbedderConfig::default());
        let result = embedder.embed("anything", Instant::now()).await;
        assert!(matches!(result, Err(EmbedError::DeadlineExceeded)));
    }

    #[tokio::test]
    async fn worker_skips_a_request_whose_deadline_passed_in_the_queue() {
        let embedder = embedder(LocalEmbedderConfig::default());
        let expired = std::time::Instant::now() - Duration::from_millis(1);
        let answer = embedder
            .enqueue(Lane::Request, "anything", expired)
            .unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("the worker answers")
            .expect("the worker is alive");
        assert!(matches!(result, Err(EmbedError::DeadlineExceeded)));
    }

    #[tokio::test]
    async fn tight_deadline_never_answers_late() {
        let embedder = embedder(LocalEmbedderConfig::default());
        let long = "word ".repeat(400);
        let start = Instant::now();
        let deadline = start + Duration::from_micros(200);
        let result = embedder.embed(&long, deadline).await;
        assert!(
            matches!(result, Err(EmbedError::DeadlineExceeded)),
            "{result:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
