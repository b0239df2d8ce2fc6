//! The shape every network or file output shares: a thread of its own fed through a bounded
//! queue. The live loop hands records over without waiting (`try_send`: a full queue is the
//! caller's drop to count); replay may wait for room (`send`). Dropping the worker closes the
//! queue and waits until the thread has handled everything in it.

use std::{sync::mpsc, thread::JoinHandle};

pub struct Worker<T> {
    tx: Option<mpsc::SyncSender<T>>,
    join: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts thread `name` running `run` over a queue of `queue` items at most.
    pub fn spawn(
        name: &str,
        queue: usize,
        run: impl FnOnce(mpsc::Receiver<T>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let join = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(rx))?;
        Ok(Self {
            tx: Some(tx),
            join: Some(join),
        })
    }

    /// Queues `v` unless the queue is full; false when it was not queued.
    pub fn try_send(&self, v: T) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.try_send(v).is_ok())
    }

    /// Queues `v`, waiting for room; false when the thread has stopped.
    pub fn send(&self, v: T) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(v).is_ok())
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(j) = self.join.take() {
            let _ignored = j.join();
        }
    }
}
