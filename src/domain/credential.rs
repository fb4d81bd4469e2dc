//! A credential as the ledger knows it, the values it is made of, and `apply`.

use std::fmt;

use chrono::{DateTime, Months, SubsecRound as _, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{CredentialLocked, LockReason};
use super::key::{ApiKey, KeyHash};

const MAX_NAME_CHARS: usize = 255;

/// A credential's human-readable name: trimmed, 1 to 255 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CredentialName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("name must not be empty")]
    Empty,
    #[error("name must be at most {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("name must not contain control characters")]
    ControlCharacter,
    #[error("name must contain a visible character")]
    Invisible,
    #[error("name must not contain bidirectional embedding, override or isolate controls")]
    BidiControl,
    #[error("name must not contain a credential key")]
    ContainsKey,
}

impl CredentialName {
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidName::Empty);
        }
        if trimmed.chars().count() > MAX_NAME_CHARS {
            return Err(InvalidName::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(InvalidName::ControlCharacter);
        }
        // They reorder how the text around them is shown ("Trojan Source"), so a name could
        // read differently from what it is.
        if trimmed.chars().any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')) {
            return Err(InvalidName::BidiControl);
        }
        if trimmed.chars().all(is_invisible) {
            return Err(InvalidName::Invisible);
        }
        // Names are in the append-only log, the view and the bus for ever: a key pasted into
        // one could never be taken back.
        if ApiKey::occurs_in(trimmed) {
            return Err(InvalidName::ContainsKey);
        }
        Ok(CredentialName(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that show nothing by themselves: white space, Unicode's default-ignorable code
/// points (zero-width characters, joiners, the byte order mark, variation selectors, tags) and
/// the Hangul fillers that render blank.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFF8}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

impl TryFrom<String> for CredentialName {
    type Error = InvalidName;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        CredentialName::parse(&raw)
    }
}

impl From<CredentialName> for String {
    fn from(name: CredentialName) -> String {
        name.0
    }
}

/// A server's (tenant's) name: the same rules as a credential name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerName(String);

impl ServerName {
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        CredentialName::parse(raw).map(|name| ServerName(name.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a credential is for. Only `Api` credentials authenticate against this service;
/// `Smtp` credentials are issued here for a mail relay to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CredentialType {
    #[default]
    #[serde(rename = "SMTP")]
    Smtp,
    #[serde(rename = "API")]
    Api,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("type must be \"SMTP\" or \"API\"")]
pub struct InvalidType;

impl CredentialType {
    pub fn parse(raw: &str) -> Result<Self, InvalidType> {
        match raw {
            "SMTP" => Ok(CredentialType::Smtp),
            "API" => Ok(CredentialType::Api),
            _ => Err(InvalidType),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::Smtp => "SMTP",
            CredentialType::Api => "API",
        }
    }
}

impl fmt::Display for CredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one credential: the fold of its stream with [`apply`](super::apply).
/// This is also exactly one row of the credential view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: i64,
    pub uuid: Uuid,
    pub server_uuid: Uuid,
    pub name: CredentialName,
    pub credential_type: CredentialType,
    pub hold: bool,
    pub key_hash: KeyHash,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub locked_at: Option<DateTime<Utc>>,
    /// The deadline: when the key stops working by itself (its expiry, or the end of a
    /// rotation's grace period), pending or enforced. A lock made by a request clears it.
    pub expires_at: Option<DateTime<Utc>>,
    /// The credential that replaced this one in a rotation with a grace period.
    pub replaced_by: Option<Uuid>,
    /// The stream version of the last event applied.
    pub version: i32,
}

impl Credential {
    /// Whether the key is refused at instant `at`: put on hold, or past its deadline, whether
    /// or not the deadline's lock has been appended yet. Authentication, `list`, `as_of` and
    /// `decide` all ask this, so none of them depends on when the scheduler ran.
    pub fn held_at(&self, at: DateTime<Utc>) -> bool {
        self.hold || self.expires_at.is_some_and(|deadline| deadline <= at)
    }

    /// The deadline still to be recorded by a lock, if any.
    pub fn pending_deadline(&self) -> Option<DateTime<Utc>> {
        self.expires_at.filter(|_| !self.hold)
    }

    /// The lock that records this credential's deadline, once it has passed at `at` and while
    /// no lock has been recorded.
    pub fn due_lock(&self, at: DateTime<Utc>) -> Option<CredentialLocked> {
        let deadline = self.pending_deadline().filter(|deadline| *deadline <= at)?;
        let reason = if self.replaced_by.is_some() { LockReason::Rotated } else { LockReason::Expired };
        Some(CredentialLocked { reason, replaced_by: self.replaced_by, deadline: Some(deadline) })
    }
}

/// How long a rotated key keeps working: whole seconds, at most 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GracePeriod(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("grace_period must be a whole number of seconds from 0 to {}", GracePeriod::MAX_SECONDS)]
pub struct InvalidGracePeriod;

impl GracePeriod {
    pub const MAX_SECONDS: u32 = 30 * 24 * 3600;
    pub const NONE: GracePeriod = GracePeriod(0);

    /// From a JSON value: a whole number in range, as JSON Schema's `integer` counts them (so
    /// `600.0` and `6e2` are 600). `"10"`, `1.5` and `-1` are not.
    pub fn parse(raw: &serde_json::Value) -> Result<Self, InvalidGracePeriod> {
        let seconds = match raw {
            serde_json::Value::Number(number) => match number.as_u64() {
                Some(seconds) => Some(seconds),
                None => number.as_f64().filter(|seconds| seconds.fract() == 0.0 && *seconds >= 0.0).map(|s| s as u64),
            },
            _ => None,
        };
        seconds
            .filter(|seconds| *seconds <= u64::from(Self::MAX_SECONDS))
            .and_then(|seconds| u32::try_from(seconds).ok())
            .map(GracePeriod)
            .ok_or(InvalidGracePeriod)
    }

    pub fn from_seconds(seconds: u32) -> Result<Self, InvalidGracePeriod> {
        Self::parse(&serde_json::Value::from(seconds))
    }

    pub fn seconds(self) -> u32 {
        self.0
    }
}

/// When a new credential is to expire: an RFC 3339 instant with an offset, in the future, at
/// most ten years out, kept to the microsecond (the log's precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiresAt(DateTime<Utc>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidExpiresAt {
    #[error("expires_at must be an RFC 3339 date-time with an offset, such as 2027-01-31T12:00:00Z")]
    Unreadable,
    #[error("expires_at must be in the future")]
    NotInFuture,
    #[error("expires_at must be at most 10 years from now")]
    TooFar,
}

impl ExpiresAt {
    pub const MAX_MONTHS: u32 = 120;

    pub fn parse(raw: &serde_json::Value, now: DateTime<Utc>) -> Result<Self, InvalidExpiresAt> {
        let text = raw.as_str().ok_or(InvalidExpiresAt::Unreadable)?;
        let at = DateTime::parse_from_rfc3339(text).map_err(|_| InvalidExpiresAt::Unreadable)?.to_utc();
        Self::at(at, now)
    }

    pub fn at(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<Self, InvalidExpiresAt> {
        let at = at.trunc_subsecs(6);
        if at <= now {
            return Err(InvalidExpiresAt::NotInFuture);
        }
        let latest = now.checked_add_months(Months::new(Self::MAX_MONTHS)).ok_or(InvalidExpiresAt::TooFar)?;
        if at > latest {
            return Err(InvalidExpiresAt::TooFar);
        }
        Ok(ExpiresAt(at))
    }

    pub fn instant(self) -> DateTime<Utc> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(CredentialName::parse("  Production API \n").unwrap().as_str(), "Production API");
        assert_eq!(CredentialName::parse("   "), Err(InvalidName::Empty));
        assert_eq!(CredentialName::parse(""), Err(InvalidName::Empty));
        assert!(CredentialName::parse(&"é".repeat(255)).is_ok());
        assert_eq!(CredentialName::parse(&"é".repeat(256)), Err(InvalidName::TooLong));
        assert_eq!(CredentialName::parse("a\u{0}b"), Err(InvalidName::ControlCharacter));
        assert_eq!(CredentialName::parse("a\u{1b}[31mb"), Err(InvalidName::ControlCharacter));
    }

    #[test]
    fn names_need_a_visible_character_and_no_reordering_controls() {
        for blank in ["\u{200B}", "\u{FEFF}", "\u{200B}\u{200C}\u{200D}\u{2060}", " \u{FEFF} \u{3164}", "\u{E0041}"] {
            assert_eq!(CredentialName::parse(blank), Err(InvalidName::Invisible), "{blank:?}");
        }
        for trojan in ["admin\u{202E}txt.exe", "\u{2066}key\u{2069}", "a\u{202A}b", "x\u{2068}y"] {
            assert_eq!(CredentialName::parse(trojan), Err(InvalidName::BidiControl), "{trojan:?}");
        }
        // Right-to-left text, and the marks that shape it, are names like any other.
        assert!(CredentialName::parse("מפתח ראשי").is_ok());
        assert!(CredentialName::parse("\u{200F}שרת\u{200F}").is_ok());
        assert!(CredentialName::parse("emoji 👩\u{200D}💻").is_ok());
    }

    #[test]
    fn names_never_hold_a_key() {
        let key = ApiKey::generate(&mut rand::thread_rng());
        let key = key.expose_secret();
        for name in [key.to_owned(), format!("prod {key}"), format!("{key}suffix"), format!("x:{key}:y")] {
            assert_eq!(CredentialName::parse(&name), Err(InvalidName::ContainsKey), "{name}");
        }
        // Key-shaped text whose checksum is wrong is no key: a name may mention the prefix.
        let wrong_checksum = format!("{}000000", &key[..key.len() - 6]);
        assert!(CredentialName::parse(&wrong_checksum).is_ok());
        assert!(CredentialName::parse("keys start with vml_").is_ok());
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn grace_periods_are_whole_seconds_up_to_thirty_days() {
        use serde_json::json;
        assert_eq!(GracePeriod::parse(&json!(0)), Ok(GracePeriod::NONE));
        assert_eq!(GracePeriod::parse(&json!(2_592_000)).map(GracePeriod::seconds), Ok(2_592_000));
        // Whole numbers written as floats are integers to JSON Schema, and so here.
        assert_eq!(GracePeriod::parse(&json!(819.0)).map(GracePeriod::seconds), Ok(819));
        assert_eq!(GracePeriod::parse(&json!(1e3)).map(GracePeriod::seconds), Ok(1000));
        for bad in
            [json!(-1), json!(1.5), json!(-0.5), json!(2.6e6), json!("10"), json!(true), json!(2_592_001), json!(null)]
        {
            assert_eq!(GracePeriod::parse(&bad), Err(InvalidGracePeriod), "{bad}");
        }
    }

    #[test]
    fn expiries_are_instants_with_an_offset_in_the_next_ten_years() {
        use serde_json::json;
        let now = at("2026-12-03T10:00:00Z");
        let parse = |raw: serde_json::Value| ExpiresAt::parse(&raw, now).map(ExpiresAt::instant);
        assert_eq!(parse(json!("2026-12-03T10:59:59.9999999+01:00")), Err(InvalidExpiresAt::NotInFuture));
        assert_eq!(parse(json!("2026-12-03T12:00:00.1234567+01:00")), Ok(at("2026-12-03T11:00:00.123456Z")));
        assert_eq!(parse(json!("2036-12-03T10:00:00Z")), Ok(at("2036-12-03T10:00:00Z")));
        assert_eq!(parse(json!("2036-12-03T10:00:01Z")), Err(InvalidExpiresAt::TooFar));
        assert_eq!(parse(json!("2026-12-03T10:00:00Z")), Err(InvalidExpiresAt::NotInFuture));
        for bad in [json!("tomorrow"), json!("2030-01-01T00:00:00"), json!("2030-01-01"), json!(5), json!(null)] {
            assert_eq!(parse(bad.clone()), Err(InvalidExpiresAt::Unreadable), "{bad}");
        }
    }

    fn expiring(expires_at: &str) -> Credential {
        Credential {
            id: 1,
            uuid: Uuid::from_u128(1),
            server_uuid: Uuid::from_u128(9),
            name: CredentialName::parse("a").unwrap(),
            credential_type: CredentialType::Api,
            hold: false,
            key_hash: KeyHash([1; 32]),
            key_prefix: "vml_AbCd".into(),
            created_at: at("2026-12-03T09:00:00Z"),
            locked_at: None,
            expires_at: Some(at(expires_at)),
            replaced_by: None,
            version: 1,
        }
    }

    #[test]
    fn a_key_is_refused_from_its_deadline_exactly() {
        let credential = expiring("2026-12-03T10:00:00Z");
        let deadline = at("2026-12-03T10:00:00Z");
        let micro = chrono::Duration::microseconds(1);
        assert!(!credential.held_at(deadline - micro));
        assert!(credential.held_at(deadline));
        assert_eq!(credential.due_lock(deadline - micro), None);
        assert_eq!(
            credential.due_lock(deadline + micro),
            Some(CredentialLocked { reason: LockReason::Expired, replaced_by: None, deadline: Some(deadline) })
        );
        let replaced = Credential { replaced_by: Some(Uuid::from_u128(2)), ..credential.clone() };
        assert_eq!(replaced.due_lock(deadline).map(|lock| lock.reason), Some(LockReason::Rotated));
        let locked = Credential { hold: true, ..credential };
        assert_eq!(locked.due_lock(deadline), None, "a held credential has no lock left to record");
        assert_eq!(locked.pending_deadline(), None);
    }

    #[test]
    fn types_are_exactly_smtp_or_api() {
        assert_eq!(CredentialType::parse("SMTP"), Ok(CredentialType::Smtp));
        assert_eq!(CredentialType::parse("API"), Ok(CredentialType::Api));
        for bad in ["api", "smtp", "", "API ", "WEBHOOK"] {
            assert_eq!(CredentialType::parse(bad), Err(InvalidType));
        }
        assert_eq!(CredentialType::default(), CredentialType::Smtp);
    }
}
