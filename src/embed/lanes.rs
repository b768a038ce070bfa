//! A bounded two-lane job queue for the embedding workers: requests first, background after.
//!
//! A check waits for its embedding; backfilling the embedding of a call recorded without one (its
//! check hit the deadline) does not. With one FIFO the backfills queue ahead of checks, checks miss
//! their deadline, which makes more backfills: under load the embedder stops serving checks at all.
//! Here a worker takes background jobs only when no request waits, one at a time, so a request
//! waits at most one background embedding.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, PoisonError};

/// Which lane a job goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A check is waiting for the answer.
    Request,
    /// Nobody waits; run when the workers are otherwise idle.
    Background,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// The lane is at its capacity; the job is handed back.
    Full(T),
    /// The queue was closed; the job is handed back.
    Closed(T),
}

struct State<T> {
    request: VecDeque<T>,
    background: VecDeque<T>,
    closed: bool,
}

/// The queue: producers `push`, worker threads block in `next_batch`.
pub struct Lanes<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    request_capacity: usize,
    background_capacity: usize,
}

impl<T> Lanes<T> {
    /// A queue holding at most `request_capacity` requests and `background_capacity` background
    /// jobs (each at least 1).
    pub fn new(request_capacity: usize, background_capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                request: VecDeque::new(),
                background: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            request_capacity: request_capacity.max(1),
            background_capacity: background_capacity.max(1),
        }
    }

    /// Queues `job` in `lane`, or hands it back at once when the lane is full or closed.
    pub fn push(&self, lane: Lane, job: T) -> Result<(), PushError<T>> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.closed {
            return Err(PushError::Closed(job));
        }
        let (queue, capacity) = match lane {
            Lane::Request => (&mut s.request, self.request_capacity),
            Lane::Background => (&mut s.background, self.background_capacity),
        };
        if queue.len() >= capacity {
            return Err(PushError::Full(job));
        }
        queue.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Blocks until there is work: up to `max_batch` waiting requests, or else one background
    /// job. `None` once the queue is closed and drained.
    #[cfg(test)]
    pub fn next_batch(&self, max_batch: usize) -> Option<(Lane, Vec<T>)> {
        let mut n = 0;
        self.next_batch_by(|_| {
            n += 1;
            n <= max_batch.max(1)
        })
    }

    /// Blocks until there is work: the waiting requests in order while `take` accepts them
    /// (the first one whatever it says), or else one background job. `None` once the queue
    /// is closed and drained.
    pub fn next_batch_by(&self, mut take: impl FnMut(&T) -> bool) -> Option<(Lane, Vec<T>)> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(first) = s.request.pop_front() {
                take(&first);
                let mut batch = vec![first];
                while let Some(next) = s.request.front() {
                    if !take(next) {
                        break;
                    }
                    batch.extend(s.request.pop_front());
                }
                return Some((Lane::Request, batch));
            }
            if let Some(job) = s.background.pop_front() {
                return Some((Lane::Background, vec![job]));
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// `weight` of each request waiting, in queue order (for the admission estimate).
    pub fn waiting_requests<W>(&self, weight: impl Fn(&T) -> W) -> Vec<W> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.request.iter().map(weight).collect()
    }

    /// Refuses new jobs and wakes every worker; jobs already queued are still handed out.
    pub fn close(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn requests_go_before_background_jobs() {
        let q = Lanes::new(8, 8);
        q.push(Lane::Background, "b1").unwrap();
        q.push(Lane::Request, "r1").unwrap();
        q.push(Lane::Background, "b2").unwrap();
        q.push(Lane::Request, "r2").unwrap();
        assert_eq!(q.next_batch(16), Some((Lane::Request, vec!["r1", "r2"])));
        assert_eq!(q.next_batch(16), Some((Lane::Background, vec!["b1"])));
        q.push(Lane::Request, "r3").unwrap();
        assert_eq!(q.next_batch(16), Some((Lane::Request, vec!["r3"])));
        assert_eq!(q.next_batch(16), Some((Lane::Background, vec!["b2"])));
    }

    #[test]
    fn batches_are_capped_and_fifo() {
        let q = Lanes::new(8, 1);
        for i in 0..5 {
            q.push(Lane::Request, i).unwrap();
        }
        assert_eq!(q.next_batch(2), Some((Lane::Request, vec![0, 1])));
        assert_eq!(q.next_batch(0), Some((Lane::Request, vec![2])));
        assert_eq!(q.next_batch(9), Some((Lane::Request, vec![3, 4])));
    }

    #[test]
    fn a_batch_ends_at_the_first_request_not_taken() {
        let q = Lanes::new(8, 1);
        for i in [5, 1, 1, 9, 1] {
            q.push(Lane::Request, i).unwrap();
        }
        // Take while the sum stays under 8: the first always, then 1, 1; 9 ends the batch and
        // stays first in the queue.
        let mut sum = 0;
        let batch = q.next_batch_by(|&x| {
            sum += x;
            sum <= 8
        });
        assert_eq!(batch, Some((Lane::Request, vec![5, 1, 1])));
        assert_eq!(q.next_batch_by(|_| false), Some((Lane::Request, vec![9])));
        assert_eq!(q.next_batch(8), Some((Lane::Request, vec![1])));
    }

    #[test]
    fn full_lane_hands_the_job_back_without_touching_the_other() {
        let q = Lanes::new(1, 1);
        q.push(Lane::Request, 1).unwrap();
        assert_eq!(q.push(Lane::Request, 2), Err(PushError::Full(2)));
        q.push(Lane::Background, 3).unwrap();
        assert_eq!(q.push(Lane::Background, 4), Err(PushError::Full(4)));
    }

    #[test]
    fn close_drains_then_ends_and_wakes_waiting_workers() {
        let q = Arc::new(Lanes::new(4, 4));
        q.push(Lane::Background, 7).unwrap();
        let worker = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while let Some((_, batch)) = q.next_batch(4) {
                    seen.extend(batch);
                }
                seen
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.close();
        assert_eq!(worker.join().unwrap(), vec![7]);
        assert_eq!(q.push(Lane::Request, 8), Err(PushError::Closed(8)));
    }
}
