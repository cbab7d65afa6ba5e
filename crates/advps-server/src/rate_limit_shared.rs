//! Rate limits held in the database, for several server instances behind a
//! load balancer: each key's window is a row counted in one atomic
//! statement, so the quota is global across instances, not per process.
//!
//! If the database cannot be reached the request is admitted (and the
//! failure logged): an unavailable limiter must not take the whole API down
//! with it, and the request will meet the same database right after.

use std::sync::Arc;

use async_trait::async_trait;

use advps_store::{RateHit, Store};

use crate::rate_limit::{RateDecision, RateLimiter};

pub struct StoreRateLimiter {
    store: Arc<dyn Store>,
    window_ms: i64,
}

impl StoreRateLimiter {
    pub fn new(store: Arc<dyn Store>, window_secs: u64) -> StoreRateLimiter {
        StoreRateLimiter {
            store,
            window_ms: (window_secs as i64).saturating_mul(1000),
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

#[async_trait]
impl RateLimiter for StoreRateLimiter {
    async fn check(&self, key_id: &str, limit: u32, now_ms: i64) -> RateDecision {
        match self
            .store
            .rate_hit(key_id, limit, now_ms, self.window_ms)
            .await
        {
            Ok(hit) => self.decision(Some(hit), limit, now_ms, hit.counted),
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; admitting the request");
                self.decision(None, limit, now_ms, true)
            }
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
