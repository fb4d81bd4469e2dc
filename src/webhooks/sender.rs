//! Sending one webhook: a guarded HTTP client that never calls the service's own network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};

use crate::domain::{is_public_address, AttemptResult, WebhookSecret, WebhookUrl};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationRefused {
    #[error("the url's host resolves to a loopback, private or otherwise internal address")]
    Internal,
    #[error("the url's host could not be resolved")]
    Unresolvable,
}

/// Refuses URLs whose host is, or resolves to, an internal address (unless allowed).
pub async fn check_destination(url: &WebhookUrl, allow_private: bool) -> Result<(), DestinationRefused> {
    if allow_private {
        return Ok(());
    }
    if let Some(ip) = url.literal_ip() {
        return if is_public_address(ip) { Ok(()) } else { Err(DestinationRefused::Internal) };
    }
    let host = url.as_url().host_str().ok_or(DestinationRefused::Unresolvable)?;
    let addresses: Vec<SocketAddr> =
        tokio::net::lookup_host((host, 0)).await.map_err(|_| DestinationRefused::Unresolvable)?.collect();
    if addresses.is_empty() {
        return Err(DestinationRefused::Unresolvable);
    }
    if addresses.iter().all(|address| is_public_address(address.ip())) {
        Ok(())
    } else {
        Err(DestinationRefused::Internal)
    }
}

/// Resolves names for the HTTP client and refuses internal addresses at connection time, so a
/// name that changes its answer after the endpoint was registered (DNS rebinding) gains nothing.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addresses.iter().any(|address| !is_public_address(address.ip())) {
                return Err(Box::new(DestinationRefused::Internal) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would bypass the destination guard.
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(Sender { client: builder.build()?, allow_private })
    }

    /// POSTs `body` signed for `webhook_id`; returns what happened and how long it took.
    pub async fn send(&self, url: &str, secret: &str, webhook_id: &str, body: &str) -> (AttemptResult, Duration) {
        let started = Instant::now();
        let outcome = self.try_send(url, secret, webhook_id, body).await;
        (outcome, started.elapsed())
    }

    async fn try_send(&self, url: &str, secret: &str, webhook_id: &str, body: &str) -> AttemptResult {
        let Ok(url) = WebhookUrl::parse(url) else {
            return AttemptResult::Unanswered("the endpoint's url is invalid".into());
        };
        if !self.allow_private && url.literal_ip().is_some_and(|ip| !is_public_address(ip)) {
            return AttemptResult::Unanswered(DestinationRefused::Internal.to_string());
        }
        let Ok(secret) = WebhookSecret::parse(secret) else {
            return AttemptResult::Unanswered("the endpoint's secret is unreadable".into());
        };
        let timestamp = chrono::Utc::now().timestamp();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("credential-ledger/", env!("CARGO_PKG_VERSION"))));
        let signed = [
            ("webhook-id", webhook_id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", secret.sign(webhook_id, timestamp, body.as_bytes())),
        ];
        for (name, value) in signed {
            match HeaderValue::from_str(&value) {
                Ok(value) => headers.insert(name, value),
                Err(_) => return AttemptResult::Unanswered(format!("{name} is not a valid header value")),
            };
        }
        match self.client.post(url.as_url().clone()).headers(headers).body(body.to_owned()).send().await {
            Ok(response) => AttemptResult::Answered(response.status().as_u16()),
            Err(error) => AttemptResult::Unanswered(describe(&error)),
        }
    }
}

/// A short cause without the URL (which is the customer's and may carry tokens in its query).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}
