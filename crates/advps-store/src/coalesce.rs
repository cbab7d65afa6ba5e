//! Work that can be done together, done together: callers hand items to a
//! [`Coalescer`] under a key, and while one batch of a key is being served
//! the items that arrive queue for the next, which is served in one go.
//!
//! This is group commit. Under light load a batch is one item and nothing
//! changes; under load, many requests that would each wait their turn at
//! one resource (SQLite's one writer, one key's row of a shared counter)
//! share a turn instead, and the queue in front of that resource shortens
//! by as much. Every caller still waits for its own item's outcome, so what
//! a caller is told has happened has happened.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The items of one key waiting for the next batch.
struct Queue<I, O> {
    /// A task is serving this key's batches; new items join `waiting`.
    serving: bool,
    waiting: Vec<(I, oneshot::Sender<O>)>,
}

type Queues<K, I, O> = Arc<Mutex<HashMap<K, Queue<I, O>>>>;

/// Batches of items by key; see the module's documentation.
pub struct Coalescer<K, I, O> {
    queues: Queues<K, I, O>,
    max_batch: usize,
}

impl<K, I, O> Clone for Coalescer<K, I, O> {
    fn clone(&self) -> Self {
        Coalescer {
            queues: Arc::clone(&self.queues),
            max_batch: self.max_batch,
        }
    }
}

impl<K, I, O> Coalescer<K, I, O>
where
    K: Eq + Hash + Clone + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    /// Batches of at most `max_batch` items.
    pub fn new(max_batch: usize) -> Coalescer<K, I, O> {
        Coalescer {
            queues: Arc::new(Mutex::new(HashMap::new())),
            max_batch: max_batch.max(1),
        }
    }

    /// Hands `item` to the next batch of `key` and waits for its outcome.
    ///
    /// The first item of a key with nothing queued starts a task that calls
    /// `serve` with the key's queued items, oldest first, again and again
    /// until none is left; `serve` gives one outcome per item, in the same
    /// order. The task is a task of its own, so a caller that goes away
    /// cannot stop a batch halfway or leave the key without a server.
    /// `None` means the item's batch was lost: `serve` panicked or gave
    /// fewer outcomes than items.
    pub async fn submit<F, Fut>(&self, key: K, item: I, serve: F) -> Option<O>
    where
        F: Fn(K, Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel();
        let start = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queues.entry(key.clone()).or_insert_with(|| Queue {
                serving: false,
                waiting: Vec::new(),
            });
            queue.waiting.push((item, reply));
            !std::mem::replace(&mut queue.serving, true)
        };
        if start {
            tokio::spawn(serve_batches(
                Arc::clone(&self.queues),
                key,
                self.max_batch,
                serve,
            ));
        }
        outcome.await.ok()
    }

    /// Whether nothing is queued or being served.
    pub fn is_idle(&self) -> bool {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// Serves the batches of `key` until its queue is empty.
async fn serve_batches<K, I, O, F, Fut>(queues: Queues<K, I, O>, key: K, max_batch: usize, serve: F)
where
    K: Eq + Hash + Clone,
    F: Fn(K, Vec<I>) -> Fut,
    Fut: Future<Output = Vec<O>>,
{
    /// Hands the key back if the task ends any other way than by emptying
    /// its queue (a panic in `serve`): its queued callers are answered
    /// `None` (their senders are dropped) and the next item starts anew.
    struct Release<K: Eq + Hash, I, O> {
        queues: Queues<K, I, O>,
        key: K,
        done: bool,
    }
    impl<K: Eq + Hash, I, O> Drop for Release<K, I, O> {
        fn drop(&mut self) {
            if !self.done {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                queues.remove(&self.key);
            }
        }
    }
    let mut release = Release {
        queues: Arc::clone(&queues),
        key: key.clone(),
        done: false,
    };
    loop {
        let batch: Vec<(I, oneshot::Sender<O>)> = {
            let mut all = queues.lock().unwrap_or_else(|e| e.into_inner());
            match all.get_mut(&key) {
                Some(queue) if !queue.waiting.is_empty() => {
                    let n = queue.waiting.len().min(max_batch);
                    queue.waiting.drain(..n).collect()
                }
                _ => {
                    all.remove(&key);
                    release.done = true;
                    return;
                }
            }
        };
        let (items, replies): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.into_iter().unzip();
        let outcomes = serve(key.clone(), items).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Items that arrive while a batch is served are served together in the
    /// next one, each caller gets its own outcome, and nothing stays queued.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn items_queued_behind_a_batch_share_the_next() {
        let coalescer = Coalescer::<&'static str, u32, u32>::new(1000);
        let batches = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..200u32 {
            let coalescer = coalescer.clone();
            let batches = Arc::clone(&batches);
            handles.push(tokio::spawn(async move {
                coalescer
                    .submit("k", i, move |_, items: Vec<u32>| {
                        let batches = Arc::clone(&batches);
                        async move {
                            batches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            items.into_iter().map(|i| i * 2).collect()
                        }
                    })
                    .await
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), Some(i as u32 * 2));
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!(batches < 100, "{batches} batches for 200 items");
        assert!(coalescer.is_idle());
    }

    /// A batch that panics answers its callers `None` and does not leave the
    /// key stuck: the next item is served.
    #[tokio::test]
    async fn a_lost_batch_frees_its_key() {
        let coalescer = Coalescer::<u8, u32, u32>::new(8);
        let lost = coalescer
            .submit(1, 7, |_, items: Vec<u32>| async move {
                assert!(items.is_empty(), "lost");
                items
            })
            .await;
        assert_eq!(lost, None);
        let served = coalescer
            .submit(1, 7, |_, items: Vec<u32>| async move { items })
            .await;
        assert_eq!(served, Some(7));
        assert!(coalescer.is_idle());
    }
}
