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

/// Whether a webhook may be sent to `ip`.
///
/// An address may be called only if IANA's special-purpose address registries
/// (iana-ipv4-special-registry, iana-ipv6-special-registry) leave it globally reachable: every
/// block they list without "Globally Reachable = True" is refused, since it reaches the service's
/// own network or nobody. Refused as well: multicast, the deprecated 6to4 relay anycast block
/// 192.88.99.0/24, and the deprecated IPv6 site-local, IPv4-compatible and IPv4-translated forms.
/// An IPv6 form that the network delivers to an IPv4 address (IPv4-mapped `::ffff:0:0/96`, NAT64
/// well-known `64:ff9b::/96`) is judged by that IPv4 address instead. The anycast addresses the
/// registries mark reachable inside 192.0.0.0/24 and 2001::/23 (PCP, TURN, DNS-SD SRP) are refused
/// too: the nearest such server is the service's own or its provider's, never a customer's.
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match embedded_ipv4(ip) {
            Some(embedded) => is_public_v4(embedded),
            None => is_public_v6(ip),
        },
    }
}

type V4Block = (Ipv4Addr, u32, &'static str);
type V6Block = (Ipv6Addr, u32, &'static str);

const V4_REFUSED: [V4Block; 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "this network"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private use"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space (carrier-grade NAT)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local, home of cloud metadata services"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private use"),
    // The whole /24, although the registry marks 192.0.0.9 (PCP) and 192.0.0.10 (TURN) anycast
    // reachable: the nearest such server is the caller's own or its provider's, never a customer's.
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation (TEST-NET-1)"),
    // Hands packets to whichever 6to4 relay is nearest (deprecated by RFC 7526).
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private use"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation (TEST-NET-2)"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation (TEST-NET-3)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved, and the limited broadcast 255.255.255.255"),
];

// Judged by the IPv4 address in their last 32 bits, because that is where packets end up: the
// socket layer turns a mapped address into IPv4, a NAT64 gateway translates to the embedded one.
const V6_EMBEDDING_IPV4: [V6Block; 2] = [
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96, "IPv4-mapped"),
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96, "NAT64 well-known prefix"),
];

const V6_REFUSED: [V6Block; 17] = [
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    // Deprecated forms that embed an IPv4 address; nothing legitimate uses them any more, so
    // they are refused whatever address they carry.
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, "IPv4-compatible (deprecated)"),
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96, "IPv4-translated (obsolete SIIT)"),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, "local-use IPv4/IPv6 translation"),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "discard-only"),
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0), 64, "dummy prefix"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, "IETF protocol assignments"),
    // Inside the block above, but named because it tunnels to an (obfuscated) IPv4 address.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, "Teredo"),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, "documentation"),
    // All of it, not only the 6to4 addresses of refused IPv4 addresses: the registry leaves its
    // reachability open and the relays that would carry it are deprecated.
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4"),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation"),
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16, "segment routing (SRv6) SIDs"),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "unique local"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local (deprecated)"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

// The registry marks these reachable although they lie in 2001::/23. The anycast addresses
// 2001:1::1 to 2001:1::3 are left out for the same reason as 192.0.0.9 and 192.0.0.10.
const V6_REACHABLE_IN_REFUSED: [V6Block; 4] = [
    (Ipv6Addr::new(0x2001, 3, 0, 0, 0, 0, 0, 0), 32, "AMT"),
    (Ipv6Addr::new(0x2001, 4, 0x112, 0, 0, 0, 0, 0), 48, "AS112-v6"),
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28, "ORCHIDv2"),
    (Ipv6Addr::new(0x2001, 0x30, 0, 0, 0, 0, 0, 0), 28, "drone remote ID entity tags"),
];

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !V4_REFUSED.iter().any(|&(network, len, _)| in_v4_block(ip, network, len))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let within = |&(network, len, _): &V6Block| in_v6_block(ip, network, len);
    // Only 2000::/3 is allocated as global unicast; the rest of the space is reserved.
    in_v6_block(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3)
        && (V6_REACHABLE_IN_REFUSED.iter().any(within) || !V6_REFUSED.iter().any(within))
}

fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let [.., a, b, c, d] = ip.octets();
    V6_EMBEDDING_IPV4
        .iter()
        .any(|&(network, len, _)| in_v6_block(ip, network, len))
        .then_some(Ipv4Addr::new(a, b, c, d))
}

fn in_v4_block(ip: Ipv4Addr, network: Ipv4Addr, len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    (u32::from(ip) & mask) == (u32::from(network) & mask)
}

fn in_v6_block(ip: Ipv6Addr, network: Ipv6Addr, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    (u128::from(ip) & mask) == (u128::from(network) & mask)
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
        for refused in [
            // IPv4
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.0",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.0",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.9",
            "192.0.0.10",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:7f00:1",
            "::ffff:0:808:808",
            "64:ff9b::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::8.8.8.8",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "100:0:0:1::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:1::1",
            "2001:1::2",
            "2001:1::3",
            "2001:1::4",
            "2001:2::1",
            "2001:4:113::1",
            "2001:10::1",
            "2001:1f::1",
            "2001:40::1",
            "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db8::",
            "2001:db8::1",
            "2002:7f00:1::",
            "2002:808:808::1",
            "3fff::1",
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            "5f00::1",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "ff0e::1",
            "4000::1",
            "::1:0:0:1",
        ] {
            assert!(!is_public_address(refused.parse().unwrap()), "{refused}");
        }
        for public in [
            // IPv4
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.31.196.1",
            "192.52.193.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            // IPv6
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:30::1",
            "2001:200::1",
            "2001:db7:ffff::",
            "2001:db9::",
            "2003::1",
            "2606:4700:4700::1111",
            "2620:4f:8000::1",
            "2a00:1450:4001::1",
            "3fff:1000::",
        ] {
            assert!(is_public_address(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn every_block_is_judged_from_its_first_to_its_last_address() {
        for (network, len, name) in V4_REFUSED {
            let first = u32::from(network);
            for ip in [first, first | u32::MAX.checked_shr(len).unwrap_or(0)] {
                let ip = Ipv4Addr::from(ip);
                assert!(!is_public_address(IpAddr::V4(ip)), "{name}: {ip}");
            }
        }
        for (blocks, public) in [(&V6_REFUSED[..], false), (&V6_REACHABLE_IN_REFUSED[..], true)] {
            for &(network, len, name) in blocks {
                let first = u128::from(network);
                for ip in [first, first | u128::MAX.checked_shr(len).unwrap_or(0)] {
                    let ip = Ipv6Addr::from(ip);
                    assert_eq!(is_public_address(IpAddr::V6(ip)), public, "{name}: {ip}");
                }
            }
        }
    }
}
