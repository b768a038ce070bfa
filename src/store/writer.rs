//! Group commit for the embedded store: one writer thread owns redb's write transactions and
//! commits whatever writes are waiting together, with one fsync, answering each after the
//! commit.
//!
//! redb has one writer at a time and a durable commit costs an fsync (milliseconds), so with
//! a transaction per write, concurrent NEWs and Completes queue behind each other's fsync. A
//! write is acknowledged only after the commit that holds it is durable, as before. Contract
//! for every operation: it validates before it writes (an `Err` leaves the transaction as it
//! found it), because the operations of one batch share one transaction.

use std::sync::{Arc, Mutex};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Writes waiting for the writer at most; more wait for room (async, never blocking a worker).
const QUEUE: usize = 1024;
/// Writes committed together at most.
const MAX_BATCH: usize = 256;

/// What the writer calls once the batch's commit is known.
type Finish = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// One write: applies itself to the batch's transaction, then waits for the commit.
type Op = Box<dyn FnOnce(&WriteTransaction) -> Finish + Send>;

struct Job {
    op: Op,
    /// Whether the write must be durable (fsync) before it is acknowledged.
    durable: bool,
}

/// The handle the store writes through; dropping it lets the writer drain and stop.
pub struct Writer {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread over `db`.
    pub fn spawn(db: Arc<Database>) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("idem-store-writer".into())
            .spawn(move || run(&db, rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `f` in the next batch's transaction; answers once that batch is committed
    /// (durably when `durable`).
    pub async fn write<T, F>(&self, durable: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: Op = Box::new(move |tx| {
            let outcome = f(tx);
            Box::new(move |commit: Result<(), &StoreError>| {
                let out = match (outcome, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                };
                // The caller may have gone (cancelled); the write stands either way.
                let _ = reply.send(out);
            })
        });
        let sender = self
            .queue
            .lock()
            .map_err(|_| StoreError::Backend("the store writer's handle is poisoned".into()))?
            .clone()
            .ok_or_else(|| StoreError::Backend("the store is closed".into()))?;
        sender
            .send(Job { op, durable })
            .await
            .map_err(|_| StoreError::Backend("the store writer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Backend(
                "the write was not committed: the store could not begin a transaction (see the \
                 server log)"
                    .into(),
            )
        })?
    }
}

impl Drop for Writer {
    /// Closes the queue and waits for the writer to commit what it holds and let go of the
    /// database, so the file can be reopened at once.
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the store writer panicked");
        }
    }
}

/// The writer loop: takes the first waiting write, then whatever else waits (up to
/// `MAX_BATCH`), applies them in one transaction and commits once.
fn run(db: &Database, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let durable = jobs.iter().any(|j| j.durable);
        let mut tx = match db.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                let e = StoreError::Backend(format!("cannot begin a write: {e}"));
                fail_all(jobs, &e);
                continue;
            }
        };
        if !durable && let Err(e) = tx.set_durability(Durability::None) {
            let e = StoreError::Backend(format!("cannot set durability: {e}"));
            fail_all(jobs, &e);
            continue;
        }
        let finishes: Vec<Finish> = jobs.into_iter().map(|j| (j.op)(&tx)).collect();
        let commit = tx
            .commit()
            .map_err(|e| StoreError::Backend(format!("{e}")));
        for finish in finishes {
            finish(commit.as_ref().map(|_| ()));
        }
    }
}

/// Drops every job of a batch that could not start: each caller is answered that its write
/// was not committed.
fn fail_all(jobs: Vec<Job>, e: &StoreError) {
    tracing::error!(%e, writes = jobs.len(), "store write batch failed");
    drop(jobs);
}
