//! Group commit for the embedded store: one writer thread owns redb's write transactions and
//! commits whatever writes are waiting together, with one fsync, answering each after the
//! commit.
//!
//! redb has one writer at a time and a durable commit costs an fsync (milliseconds), so with
//! a transaction per write, concurrent NEWs and Completes queue behind each other's fsync. A
//! write is acknowledged only after the commit that holds it is durable, as before. Contract
//! for every operation: it validates before it writes (an `Err` leaves the transaction as it
//! found it), because the operations of one batch share one transaction.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Transactions committed so far (each holds one or more writes).
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread over `db`.
    pub fn spawn(db: Arc<Database>) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let thread = std::thread::Builder::new()
            .name("idem-store-writer".into())
            .spawn(move || run(&db, rx, &counted))
            .map_err(|e| StoreError::Backend(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            commits,
        })
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
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
fn run(db: &Database, mut rx: mpsc::Receiver<Job>, commits: &AtomicU64) {
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
        let commit = tx.commit().map_err(|e| StoreError::Backend(format!("{e}")));
        commits.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    fn put(tx: &WriteTransaction, k: u64, v: u64) -> Result<(), StoreError> {
        let be = |e: &dyn std::fmt::Display| StoreError::Backend(e.to_string());
        let mut t = tx.open_table(T).map_err(|e| be(&e))?;
        t.insert(k, v).map_err(|e| be(&e))?;
        Ok(())
    }

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn db() -> (tempfile::TempDir, Arc<Database>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("w.redb")).unwrap();
        (dir, Arc::new(db))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_share_commits_and_all_land() {
        let (_dir, db) = db();
        let w = Arc::new(Writer::spawn(db.clone()).unwrap());
        let writes = (0..200u64).map(|i| {
            let w = w.clone();
            async move { w.write(true, move |tx| put(tx, i, i * 2)).await }
        });
        for r in futures::future::join_all(writes).await {
            r.unwrap();
        }
        let commits = w.commits();
        assert!(
            (1..200).contains(&commits),
            "{commits} commits for 200 writes"
        );
        let t = db.begin_read().unwrap().open_table(T).unwrap();
        for i in 0..200u64 {
            assert_eq!(t.get(i).unwrap().unwrap().value(), i * 2);
        }
    }

    #[tokio::test]
    async fn a_failed_write_is_answered_and_the_others_commit() {
        let (_dir, db) = db();
        let w = Writer::spawn(db.clone()).unwrap();
        let bad = w.write(true, |_tx| -> Result<(), StoreError> {
            Err(StoreError::Missing("x".into()))
        });
        let good = w.write(true, |tx| put(tx, 1, 1));
        let (bad, good) = tokio::join!(bad, good);
        assert!(matches!(bad, Err(StoreError::Missing(_))));
        good.unwrap();
        let t = db.begin_read().unwrap().open_table(T).unwrap();
        assert_eq!(t.get(1).unwrap().unwrap().value(), 1);
    }

    #[tokio::test]
    async fn dropping_the_writer_lets_go_of_the_database() {
        let (_dir, db) = db();
        let w = Writer::spawn(db.clone()).unwrap();
        w.write(true, |_tx| Ok(())).await.unwrap();
        drop(w);
        assert_eq!(
            Arc::strong_count(&db),
            1,
            "the writer thread still holds the database"
        );
    }
}
