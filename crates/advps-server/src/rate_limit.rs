//! Per-key request quotas over a fixed window (15 minutes by default).
//!
//! The window of a key opens with its first request and admits `limit`
//! requests until it closes; the next request opens a new one. The
//! [`RateLimiter`] trait lets a shared backend replace the in-process one
//! when several instances must hold one quota.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

/// The verdict on one request, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window closes (at least 1).
    pub reset_secs: u64,
    /// Length of the window, in seconds.
    pub window_secs: u64,
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key_id` at `now_ms` against `limit`.
    async fn check(&self, key_id: &str, limit: u32, now_ms: i64) -> RateDecision;
    /// Gives back one request that [`RateLimiter::check`] counted in the
    /// window open at `now_ms` (answers that cost no quota, such as
    /// `304 Not Modified`). Nothing happens if that window has closed.
    async fn release(&self, key_id: &str, now_ms: i64);
    /// The quota of `key_id` at `now_ms` without counting a request
    /// (`GET /api/v1/me`). `allowed` says whether a request would be admitted.
    async fn peek(&self, key_id: &str, limit: u32, now_ms: i64) -> RateDecision;
}

struct Window {
    opened_ms: i64,
    count: u32,
}

/// Quotas held in this process's memory.
pub struct MemoryRateLimiter {
    window_ms: i64,
    windows: Mutex<HashMap<String, Window>>,
}

impl MemoryRateLimiter {
    pub fn new(window_secs: u64) -> MemoryRateLimiter {
        MemoryRateLimiter {
            window_ms: (window_secs as i64).saturating_mul(1000),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets windows that have closed, so memory follows active keys only.
    pub fn prune(&self, now_ms: i64) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.retain(|_, w| now_ms < w.opened_ms + self.window_ms);
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key_id: &str, limit: u32, now_ms: i64) -> RateDecision {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.entry(key_id.to_string()).or_insert(Window {
            opened_ms: now_ms,
            count: 0,
        });
        if now_ms >= window.opened_ms + self.window_ms {
            *window = Window {
                opened_ms: now_ms,
                count: 0,
            };
        }
        let allowed = window.count < limit;
        if allowed {
            window.count += 1;
        }
        self.decision(allowed, limit, window.count, window.opened_ms, now_ms)
    }

    async fn release(&self, key_id: &str, now_ms: i64) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = windows.get_mut(key_id) {
            if now_ms < window.opened_ms + self.window_ms {
                window.count = window.count.saturating_sub(1);
            }
        }
    }

    async fn peek(&self, key_id: &str, limit: u32, now_ms: i64) -> RateDecision {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(key_id) {
            Some(w) if now_ms < w.opened_ms + self.window_ms => {
                self.decision(w.count < limit, limit, w.count, w.opened_ms, now_ms)
            }
            // No open window: the next request would open a full one.
            _ => self.decision(limit > 0, limit, 0, now_ms, now_ms),
        }
    }
}

impl MemoryRateLimiter {
    fn decision(
        &self,
        allowed: bool,
        limit: u32,
        count: u32,
        opened_ms: i64,
        now_ms: i64,
    ) -> RateDecision {
        // A request that arrived a moment before the one that opened the
        // window still reports at most a full window.
        let left_ms = (opened_ms + self.window_ms - now_ms).clamp(0, self.window_ms);
        RateDecision {
            allowed,
            limit,
            remaining: limit - count.min(limit),
            reset_secs: ((left_ms + 999) / 1000).max(1) as u64,
            window_secs: (self.window_ms / 1000) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_exactly_the_limit_then_resets_with_the_window() {
        let limiter = MemoryRateLimiter::new(900);
        let t0 = 1_000_000;
        for i in 0..3 {
            let d = limiter.check("k", 3, t0 + i).await;
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i as u32);
        }
        let refused = limiter.check("k", 3, t0 + 10).await;
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_secs, 900);
        // Another key has its own window.
        assert!(limiter.check("other", 3, t0 + 10).await.allowed);
        // The window closes 900 s after it opened.
        let later = limiter.check("k", 3, t0 + 900_000).await;
        assert!(later.allowed);
        assert_eq!(later.remaining, 2);
    }

    #[tokio::test]
    async fn a_request_older_than_the_window_reports_at_most_a_full_window() {
        let limiter = MemoryRateLimiter::new(900);
        limiter.check("k", 10, 5_000).await;
        let earlier = limiter.check("k", 10, 4_000).await;
        assert!(earlier.allowed);
        assert_eq!(earlier.reset_secs, 900);
    }

    #[tokio::test]
    async fn release_gives_back_a_request_and_peek_counts_none() {
        let limiter = MemoryRateLimiter::new(900);
        assert_eq!(limiter.peek("k", 3, 0).await.remaining, 3);
        limiter.check("k", 3, 0).await;
        limiter.check("k", 3, 1).await;
        assert_eq!(limiter.peek("k", 3, 2).await.remaining, 1);
        assert_eq!(limiter.peek("k", 3, 2).await.remaining, 1);
        limiter.release("k", 3).await;
        assert_eq!(limiter.peek("k", 3, 4).await.remaining, 2);
        // A release after the window closed leaves the new window alone.
        limiter.release("k", 900_000).await;
        limiter.release("unknown", 5).await;
        assert_eq!(limiter.check("k", 3, 900_001).await.remaining, 2);
    }

    #[tokio::test]
    async fn prune_drops_closed_windows_only() {
        let limiter = MemoryRateLimiter::new(1);
        limiter.check("old", 5, 0).await;
        limiter.check("new", 5, 1_500).await;
        limiter.prune(1_600);
        let windows = limiter.windows.lock().unwrap();
        assert!(!windows.contains_key("old"));
        assert!(windows.contains_key("new"));
    }
}
