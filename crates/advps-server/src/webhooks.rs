//! Webhooks following the Standard Webhooks specification.
//!
//! Events are written to an outbox in the same transaction as the change
//! they describe (see the store). The dispatcher here turns them into one
//! delivery per interested endpoint, sends each with `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` (HMAC-SHA256 over
//! `id.timestamp.body` with the endpoint's `whsec_` secret, and with the
//! previous secret too for a day after a rotation), and retries failures
//! with exponential backoff. Deliveries are rows, so a restart loses none.
//!
//! Destinations are checked when registered and again before every attempt
//! (a name may resolve elsewhere later): loopback, private, link-local and
//! other non-public addresses are refused unless the operator allows them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::sync::watch;

use advps_domain::time;
use advps_store::{DeliveryAttempt, Store, WebhookDelivery};

use crate::secrets::Cipher;

/// The event types an endpoint can ask for.
pub const EVENT_TYPES: [&str; 6] = [
    "task.completed",
    "task.failed",
    "service.power_state_changed",
    "order.completed",
    "order.failed",
    "product.stock_changed",
];

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_MS: i64 = 86_400_000;

/// A fresh `whsec_` secret: 32 random bytes, base64.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("whsec_{}", B64.encode(bytes))
}

/// `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// Whether an address is one webhooks may reach without the operator's leave.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || v6 == Ipv6Addr::UNSPECIFIED)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || a >= 240)
}

/// Checks a destination URL: http(s), a host, and (unless allowed) only
/// public addresses behind it.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|_| format!("'{raw}' is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("Webhook URL must use http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Webhook URL must not carry credentials".into());
    }
    let host = url.host_str().ok_or("Webhook URL has no host")?.to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let host_for_lookup = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addrs: Vec<IpAddr> = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host_for_lookup.as_str(), port)),
    )
    .await
    .map_err(|_| format!("Webhook host '{host}' did not resolve in time"))?
    .map_err(|_| format!("Webhook host '{host}' does not resolve"))?
    .map(|a| a.ip())
    .collect();
    if addrs.is_empty() {
        return Err(format!("Webhook host '{host}' does not resolve"));
    }
    if !allow_private && addrs.iter().any(|ip| !is_public(*ip)) {
        return Err("Webhook URL resolves to a private or loopback address, which this server does not allow".into());
    }
    Ok(url)
}

/// Delay before attempt `attempts + 1`: base × 4^attempts, at most 6 hours.
pub fn backoff_ms(base_ms: i64, attempts: i64) -> i64 {
    let factor = 4_i64.saturating_pow(attempts.clamp(0, 20) as u32);
    base_ms.saturating_mul(factor).min(6 * 3_600_000)
}

pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub cipher: Cipher,
    pub client: reqwest::Client,
    pub allow_private: bool,
    pub retry_base_ms: i64,
    pub max_attempts: i64,
    pub every: Duration,
}

impl Dispatcher {
    pub fn client(timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("advps-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    }

    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = time::now_millis();
            if let Err(e) = self.store.fan_out_events(now, 200).await {
                tracing::warn!(error = %e, "could not fan out events");
            }
            let due = match self.store.claim_deliveries(now, 60_000, 20).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim deliveries");
                    continue;
                }
            };
            // Each delivery on its own task: one slow endpoint delays no other.
            let mut sends = tokio::task::JoinSet::new();
            for delivery in due {
                let me = Arc::clone(&self);
                sends.spawn(async move { me.deliver(delivery).await });
            }
            while sends.join_next().await.is_some() {}
        }
    }

    async fn deliver(&self, delivery: WebhookDelivery) {
        let result = self.attempt(&delivery).await;
        let now = time::now_millis();
        let attempts = delivery.attempts + 1;
        let (delivered, status_code, error) = match result {
            Ok(code) => (true, Some(code), None),
            Err((code, error)) => (false, code, Some(error)),
        };
        let retry_at = (!delivered && attempts < self.max_attempts)
            .then(|| now + backoff_ms(self.retry_base_ms, attempts - 1));
        if !delivered {
            tracing::info!(delivery = %delivery.id, attempts, error = ?error, "webhook delivery failed");
        }
        let record = DeliveryAttempt {
            delivered,
            status_code,
            error,
            now,
            retry_at,
        };
        if let Err(e) = self.store.record_delivery(&delivery.id, &record).await {
            tracing::warn!(delivery = %delivery.id, error = %e, "could not record a delivery attempt");
        }
    }

    /// One POST; `Ok(status)` on 2xx, else the status (if any) and why.
    async fn attempt(&self, delivery: &WebhookDelivery) -> Result<i64, (Option<i64>, String)> {
        let endpoint = match self.store.find_webhook(&delivery.endpoint_id).await {
            Ok(Some(e)) => e,
            Ok(None) => return Err((None, "the endpoint was deleted".into())),
            Err(e) => return Err((None, e.to_string())),
        };
        let url = check_url(&endpoint.url, self.allow_private)
            .await
            .map_err(|e| (None, e))?;
        let now = time::now_millis();
        let timestamp = now / 1000;
        let mut signatures = Vec::new();
        for (secret_enc, valid) in [
            (Some(&endpoint.secret_enc), true),
            (
                endpoint.previous_secret_enc.as_ref(),
                endpoint.previous_until.is_some_and(|until| until > now),
            ),
        ] {
            if let (Some(enc), true) = (secret_enc, valid) {
                let secret = self
                    .cipher
                    .decrypt(enc)
                    .map_err(|e| (None, e.to_string()))?;
                if let Some(sig) = sign(&secret, &delivery.id, timestamp, &delivery.payload) {
                    signatures.push(sig);
                }
            }
        }
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(delivery.payload.clone())
            .send()
            .await
            .map_err(|e| (None, describe_send_error(&e)))?;
        let code = i64::from(response.status().as_u16());
        if response.status().is_success() {
            Ok(code)
        } else {
            Err((Some(code), format!("the endpoint answered {code}")))
        }
    }
}

fn describe_send_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the endpoint did not answer in time".into()
    } else if e.is_connect() {
        "could not connect to the endpoint".into()
    } else {
        "the request to the endpoint failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The specification's own example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "198.51.100.7",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_ms(5_000, 0), 5_000);
        assert_eq!(backoff_ms(5_000, 1), 20_000);
        assert_eq!(backoff_ms(5_000, 2), 80_000);
        assert_eq!(backoff_ms(5_000, 30), 6 * 3_600_000);
    }

    #[tokio::test]
    async fn urls_are_checked() {
        assert!(check_url("ftp://example.com/x", true).await.is_err());
        assert!(check_url("not a url", true).await.is_err());
        assert!(check_url("http://user:pw@127.0.0.1/", true).await.is_err());
        let refused = check_url("http://127.0.0.1:9/hook", false)
            .await
            .unwrap_err();
        assert!(refused.contains("private or loopback"), "{refused}");
        assert!(check_url("http://127.0.0.1:9/hook", true).await.is_ok());
    }
}
