//! Webhook endpoints as values: the URL, the event filter, the signing secret and the Standard
//! Webhooks signature. Whether an address may be called is decided here too; resolving names
//! is the adapter's job.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use sha2::Sha256;

use super::event::CREDENTIAL_LOCKED;

const MAX_URL_LEN: usize = 2048;
const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;
/// The events an endpoint can subscribe to (the webhook workers consume these from the bus).
pub const WEBHOOK_EVENTS: [&str; 1] = [CREDENTIAL_LOCKED];
pub const DEFAULT_WEBHOOK_EVENTS: [&str; 1] = [CREDENTIAL_LOCKED];

/// An absolute `http` or `https` URL with a host and no credentials in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUrl {
    #[error("url must be an absolute http or https URL")]
    Malformed,
    #[error("url must use http or https")]
    Scheme,
    #[error("url must not contain a user name or password")]
    Credentials,
    #[error("url must be at most {MAX_URL_LEN} characters")]
    TooLong,
}

impl WebhookUrl {
    pub fn parse(raw: &str) -> Result<Self, InvalidUrl> {
        if raw.len() > MAX_URL_LEN {
            return Err(InvalidUrl::TooLong);
        }
        let url = url::Url::parse(raw.trim()).map_err(|_| InvalidUrl::Malformed)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidUrl::Scheme);
        }
        if url.host().is_none() {
            return Err(InvalidUrl::Malformed);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidUrl::Credentials);
        }
        Ok(WebhookUrl(url))
    }

    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host's address when the URL names one directly (no DNS needed).
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match self.0.host()? {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        }
    }
}

/// The event types an endpoint subscribes to: known names, at least one, no repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter(Vec<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEventFilter {
    #[error("events must not be empty")]
    Empty,
    #[error("unknown event {0:?}; the known event is CredentialLocked")]
    Unknown(String),
}

impl EventFilter {
    pub fn parse(names: Option<&[String]>) -> Result<Self, InvalidEventFilter> {
        let Some(names) = names else {
            return Ok(EventFilter(DEFAULT_WEBHOOK_EVENTS.iter().map(|name| (*name).to_owned()).collect()));
        };
        if names.is_empty() {
            return Err(InvalidEventFilter::Empty);
        }
        let mut accepted: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            if !WEBHOOK_EVENTS.contains(&name.as_str()) {
                return Err(InvalidEventFilter::Unknown(name.chars().take(64).collect()));
            }
            if !accepted.contains(name) {
                accepted.push(name.clone());
            }
        }
        Ok(EventFilter(accepted))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

/// A signing secret in the Standard Webhooks format: `whsec_` + base64 of 32 random bytes.
/// `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored webhook secret is malformed")]
pub struct InvalidSecret;

impl WebhookSecret {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut bytes);
        WebhookSecret(format!("{SECRET_PREFIX}{}", BASE64.encode(bytes)))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let key = text.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
        let bytes = BASE64.decode(key).map_err(|_| InvalidSecret)?;
        if bytes.len() < 24 {
            return Err(InvalidSecret);
        }
        Ok(WebhookSecret(text.to_owned()))
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The `webhook-signature` header value: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")).
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = self.0.strip_prefix(SECRET_PREFIX).and_then(|key| BASE64.decode(key).ok()).unwrap_or_default();
        // HMAC accepts keys of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else { return String::new() };
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// Whether a webhook may be sent to `ip`: only globally routable unicast addresses may.
/// Loopback, private, shared, link-local, unspecified, multicast, broadcast and documentation
/// ranges are refused (they reach the service's own network, not a customer's).
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64, which can reach IPv4 private space
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn urls_must_be_absolute_http_or_https_without_credentials() {
        assert!(WebhookUrl::parse("https://hooks.example.com/ledger?x=1").is_ok());
        assert!(WebhookUrl::parse("http://203.0.113.9:8080/").is_ok());
        assert_eq!(WebhookUrl::parse("ftp://example.com/"), Err(InvalidUrl::Scheme));
        assert_eq!(WebhookUrl::parse("javascript:alert(1)"), Err(InvalidUrl::Scheme));
        assert_eq!(WebhookUrl::parse("/relative"), Err(InvalidUrl::Malformed));
        assert_eq!(WebhookUrl::parse("not a url"), Err(InvalidUrl::Malformed));
        assert_eq!(WebhookUrl::parse("https://user:pw@example.com/"), Err(InvalidUrl::Credentials));
        assert_eq!(WebhookUrl::parse(&format!("https://e.com/{}", "a".repeat(2048))), Err(InvalidUrl::TooLong));
    }

    #[test]
    fn event_filters_default_to_credential_locked_and_refuse_unknown_names() {
        assert_eq!(EventFilter::parse(None).unwrap().names(), ["CredentialLocked"]);
        let repeated = vec!["CredentialLocked".to_owned(), "CredentialLocked".to_owned()];
        assert_eq!(EventFilter::parse(Some(&repeated)).unwrap().names(), ["CredentialLocked"]);
        assert!(matches!(
            EventFilter::parse(Some(&["CredentialCreated".to_owned()])),
            Err(InvalidEventFilter::Unknown(_))
        ));
        assert_eq!(EventFilter::parse(Some(&[])), Err(InvalidEventFilter::Empty));
        assert!(matches!(
            EventFilter::parse(Some(&["credential.locked".to_owned()])),
            Err(InvalidEventFilter::Unknown(_))
        ));
    }

    #[test]
    fn secrets_have_the_standard_webhooks_format() {
        let secret = WebhookSecret::generate(&mut StdRng::seed_from_u64(3));
        let text = secret.expose_secret();
        assert!(text.starts_with("whsec_"));
        assert_eq!(BASE64.decode(&text[6..]).unwrap().len(), 32);
        assert_eq!(WebhookSecret::parse(text), Ok(secret.clone()));
        assert!(!format!("{secret:?}").contains(&text[6..]));
        assert_eq!(WebhookSecret::parse("whsec_c2hvcnQ="), Err(InvalidSecret));
    }

    #[test]
    fn signatures_follow_the_specs_example() {
        // The example of the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn only_public_addresses_are_called() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public_address(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public_address(public.parse().unwrap()), "{public}");
        }
    }
}
