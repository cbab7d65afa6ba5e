//! Rate limits held in the database, for several server instances behind a
//! load balancer: each key's window is a row counted in one atomic
//! statement, so the quota is global across instances, not per process.
//!
//! One key's concurrent requests are counted together: while a count of
//! that key is on its way to the database, the requests that arrive wait in
//! a queue, and the next statement counts all of them at once (`n` added to
//! the window in one upsert). Each request then gets the number it would
//! have had one by one, so admission stays exact across instances, but a
//! busy key costs one round trip per burst instead of one per request, and
//! its requests no longer queue one by one on the key's row lock. Under
//! light load a burst is one request, as before.
//!
//! If the database cannot be reached the request is admitted (and the
//! failure logged): an unavailable limiter must not take the whole API down
//! with it, and the request will meet the same database right after.

use std::sync::Arc;

use async_trait::async_trait;

use advps_store::coalesce::Coalescer;
use advps_store::{RateHit, Store};

use crate::rate_limit::{RateDecision, RateLimiter};

/// A request waiting to be counted: its own limit and time.
struct Hit {
    limit: u32,
    now_ms: i64,
}

pub struct StoreRateLimiter {
    store: Arc<dyn Store>,
    window_ms: i64,
    /// One key's requests, counted in bursts; `None` when the database did
    /// not answer.
    bursts: Coalescer<String, Hit, Option<RateHit>>,
}

/// A key's requests waiting at once, at most.
const MAX_BURST: usize = 256;

impl StoreRateLimiter {
    pub fn new(store: Arc<dyn Store>, window_secs: u64) -> StoreRateLimiter {
        StoreRateLimiter {
            store,
            window_ms: (window_secs as i64).saturating_mul(1000),
            bursts: Coalescer::new(MAX_BURST),
        }
    }

    fn decision(
        &self,
        hit: Option<RateHit>,
        limit: u32,
        now_ms: i64,
        allowed: bool,
    ) -> RateDecision {
        let (count, opened) = hit.map(|h| (h.count, h.opened_at)).unwrap_or((0, now_ms));
        let left_ms = (opened + self.window_ms - now_ms).clamp(0, self.window_ms);
        RateDecision {
            allowed,
            limit,
            remaining: limit.saturating_sub(count),
            reset_secs: ((left_ms + 999) / 1000).max(1) as u64,
            window_secs: (self.window_ms / 1000) as u64,
        }
    }
}

/// Counts one burst of `key`'s requests in one statement and gives each the
/// number it would have had one by one.
async fn count_burst(
    store: Arc<dyn Store>,
    window_ms: i64,
    key: String,
    burst: Vec<Hit>,
) -> Vec<Option<RateHit>> {
    let n = u32::try_from(burst.len()).unwrap_or(u32::MAX);
    let now_ms = burst.iter().map(|h| h.now_ms).max().unwrap_or_default();
    match store.rate_count(&key, n, now_ms, window_ms).await {
        Ok(window) => {
            let first = i64::from(window.count) - i64::from(n) + 1;
            burst
                .iter()
                .enumerate()
                .map(|(i, hit)| {
                    let number = first + i as i64;
                    Some(RateHit {
                        counted: number <= i64::from(hit.limit),
                        count: number.clamp(0, i64::from(u32::MAX)) as u32,
                        opened_at: window.opened_at,
                    })
                })
                .collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, "rate limiter unavailable; admitting the request");
            burst.iter().map(|_| None).collect()
        }
    }
}

#[async_trait]
impl RateLimiter for StoreRateLimiter {
    async fn check(&self, key_id: &str, limit: u32, now_ms: i64) -> RateDecision {
        let (store, window_ms) = (Arc::clone(&self.store), self.window_ms);
        let hit = self
            .bursts
            .submit(
                key_id.to_string(),
                Hit { limit, now_ms },
                move |key, burst| count_burst(Arc::clone(&store), window_ms, key, burst),
            )
            .await
            .flatten();
        match hit {
            Some(hit) => self.decision(Some(hit), limit, now_ms, hit.counted),
            // The database did not answer (logged once per burst).
            None => self.decision(None, limit, now_ms, true),
        }
    }

    async fn release(&self, key_id: &str, now_ms: i64) {
        if let Err(e) = self
            .store
            .rate_release(key_id, now_ms, self.window_ms)
            .await
        {
            tracing::warn!(error = %e, "could not give back a request's quota");
        }
    }

    async fn peek(&self, key_id: &str, limit: u32, now_ms: i64) -> RateDecision {
        let hit = self
            .store
            .rate_peek(key_id, now_ms, self.window_ms)
            .await
            .ok()
            .flatten();
        let allowed = hit.map(|h| h.count < limit).unwrap_or(limit > 0);
        self.decision(hit, limit, now_ms, allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many concurrent requests of one key, counted in bursts: exactly
    /// `limit` admitted, each request with its own number, and what is
    /// stored equals what was asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn bursts_admit_exactly_the_limit_and_number_every_request() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            advps_store::SqlStore::open_sqlite(dir.path())
                .await
                .unwrap(),
        );
        let limiter = Arc::new(StoreRateLimiter::new(Arc::clone(&store), 900));
        let mut handles = Vec::new();
        for _ in 0..300 {
            let limiter = Arc::clone(&limiter);
            handles.push(tokio::spawn(async move {
                limiter.check("key_a", 120, 1_000).await
            }));
        }
        let mut allowed = 0;
        let mut remaining = Vec::new();
        for h in handles {
            let decision = h.await.unwrap();
            allowed += usize::from(decision.allowed);
            remaining.push(decision.remaining);
        }
        assert_eq!(allowed, 120);
        // Numbers 1..=120 leave 119..=0; the other 180 leave 0.
        remaining.sort_unstable();
        let expected: Vec<u32> = std::iter::repeat_n(0, 181).chain(1..=119).collect();
        assert_eq!(remaining, expected);
        let stored = store.rate_peek("key_a", 2_000, 900_000).await.unwrap();
        assert_eq!(stored.map(|h| h.count), Some(300));
        // Nothing is left queued once the bursts are counted.
        assert!(limiter.bursts.is_idle());
    }
}
