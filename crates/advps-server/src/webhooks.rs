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
//! Destinations are checked when registered and again at every attempt:
//! addresses that are not globally reachable (see
//! `advps_domain::net::non_global_range`) are refused unless the operator
//! allows them. The delivery client resolves names through
//! [`CheckedResolver`], which drops refused addresses from the very answer
//! it connects to, so a second lookup cannot hand it another address. It
//! follows no redirects and uses no proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::sync::watch;

use advps_domain::{net, time};
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

/// Why a destination was refused; kept as its own type so the refusal can be
/// told apart from other connection errors when a delivery fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

const PRIVATE_REFUSED: &str =
    "Webhook URL resolves to a private or loopback address, which this server does not allow";

/// Whether an address is one webhooks may reach without the operator's leave.
pub fn is_public(ip: IpAddr) -> bool {
    net::is_globally_reachable(ip)
}

/// The addresses of a lookup that webhooks may connect to: all of them when
/// the operator allows private destinations, else only the globally
/// reachable ones; an error when none is left.
pub fn filter_addrs(
    host: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Refused> {
    let all: Vec<SocketAddr> = addrs.into_iter().collect();
    if all.is_empty() {
        return Err(Refused(format!("Webhook host '{host}' does not resolve")));
    }
    if allow_private {
        return Ok(all);
    }
    let kept: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
    if kept.is_empty() {
        return Err(Refused(PRIVATE_REFUSED.into()));
    }
    Ok(kept)
}

/// Resolves `host` once and keeps only the addresses it may connect to.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Refused> {
    let addrs = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await
    .map_err(|_| Refused(format!("Webhook host '{host}' did not resolve in time")))?
    .map_err(|_| Refused(format!("Webhook host '{host}' does not resolve")))?;
    filter_addrs(host, addrs, allow_private)
}

/// The resolver of the delivery client. The addresses it hands to the
/// connector are the ones it checked, so a name that answers differently
/// on a second lookup (DNS rebinding) cannot slip past the check. Literal
/// IP hosts never reach a resolver; [`check_url_shape`] judges those.
#[derive(Debug, Clone, Copy)]
pub struct CheckedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: the connector puts in the URL's port.
            let addrs = resolve_checked(&host, 0, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The URL's host when it is an IP address (the URL parser has already
/// turned forms like `2130706433` or `0x7f.1` into dotted IPv4).
fn literal_ip(url: &reqwest::Url) -> Result<Option<IpAddr>, String> {
    let host = url.host_str().ok_or("Webhook URL has no host")?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(bare.parse().ok())
}

/// Checks a destination URL without a lookup: http(s), a host, no
/// credentials, and (unless allowed) no literal IP that is not public.
pub fn check_url_shape(raw: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|_| format!("'{raw}' is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("Webhook URL must use http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Webhook URL must not carry credentials".into());
    }
    if let Some(ip) = literal_ip(&url)? {
        if !allow_private && !is_public(ip) {
            return Err(PRIVATE_REFUSED.into());
        }
    }
    Ok(url)
}

/// Checks a destination URL: [`check_url_shape`], then for a name, a lookup
/// that must leave at least one address it may connect to.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let url = check_url_shape(raw, allow_private)?;
    if literal_ip(&url)?.is_none() {
        let host = url.host_str().ok_or("Webhook URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(443);
        resolve_checked(host, port, allow_private)
            .await
            .map_err(|e| e.0)?;
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
    /// The delivery client: checked resolution, no redirects, no proxy
    /// (not even one named in the environment).
    pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver { allow_private }))
            .user_agent(concat!("advps-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
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
        // Names are resolved and checked by the client's resolver, on the
        // answer it connects to; literal addresses are checked here.
        let url = check_url_shape(&endpoint.url, self.allow_private).map_err(|e| (None, e))?;
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
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return refused.0.clone();
        }
        source = cause.source();
    }
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
            "198.18.0.1",
            "::7f00:1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
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

    fn sock(raw: &str) -> SocketAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn the_filter_keeps_only_public_addresses() {
        let mixed = [
            sock("127.0.0.1:443"),
            sock("93.184.216.34:443"),
            sock("[::ffff:10.0.0.1]:443"),
        ];
        assert_eq!(
            filter_addrs("mixed.example", mixed, false),
            Ok(vec![sock("93.184.216.34:443")])
        );
        let forbidden = [
            sock("10.0.0.1:80"),
            sock("[fe80::1]:80"),
            sock("198.18.0.1:80"),
        ];
        assert_eq!(
            filter_addrs("rebind.example", forbidden, false),
            Err(Refused(PRIVATE_REFUSED.into()))
        );
        // The operator's leave keeps everything.
        assert_eq!(filter_addrs("x", forbidden, true), Ok(forbidden.to_vec()));
        assert!(filter_addrs("none.example", [], true).is_err());
    }

    #[tokio::test]
    async fn the_resolver_filters_what_it_resolves() {
        use reqwest::dns::Resolve;
        let name = |n: &str| n.parse::<reqwest::dns::Name>().unwrap();
        let refused = CheckedResolver {
            allow_private: false,
        }
        .resolve(name("localhost"))
        .await
        .err()
        .expect("localhost is refused");
        assert_eq!(refused.to_string(), PRIVATE_REFUSED);
        let allowed: Vec<SocketAddr> = CheckedResolver {
            allow_private: true,
        }
        .resolve(name("localhost"))
        .await
        .expect("allowed")
        .collect();
        assert!(!allowed.is_empty());
        assert!(allowed.iter().all(|a| a.ip().is_loopback()), "{allowed:?}");
    }

    /// A listener on loopback that answers every request with 204.
    async fn loopback_receiver() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn the_client_connects_only_through_the_checked_resolver() {
        let port = loopback_receiver().await;
        let url = format!("http://localhost:{port}/hook");
        let strict = Dispatcher::client(Duration::from_secs(5), false).unwrap();
        let err = strict.post(&url).send().await.unwrap_err();
        assert_eq!(describe_send_error(&err), PRIVATE_REFUSED);
        let lenient = Dispatcher::client(Duration::from_secs(5), true).unwrap();
        let ok = lenient.post(&url).send().await.unwrap();
        assert_eq!(ok.status().as_u16(), 204);
        // Literal addresses skip any resolver: the shape check covers them.
        assert_eq!(
            check_url_shape(&format!("http://127.0.0.1:{port}/"), false).unwrap_err(),
            PRIVATE_REFUSED
        );
        assert_eq!(
            check_url_shape("http://[::ffff:7f00:1]/", false).unwrap_err(),
            PRIVATE_REFUSED
        );
        assert_eq!(
            check_url_shape("http://2130706433/", false).unwrap_err(),
            PRIVATE_REFUSED
        );
        assert!(check_url_shape(&format!("http://127.0.0.1:{port}/"), true).is_ok());
        assert!(check_url_shape("https://93.184.216.34/", false).is_ok());
    }

    #[tokio::test]
    async fn registration_resolves_through_the_same_filter() {
        let refused = check_url("http://localhost:9/hook", false)
            .await
            .unwrap_err();
        assert_eq!(refused, PRIVATE_REFUSED);
        assert!(check_url("http://localhost:9/hook", true).await.is_ok());
    }
}
