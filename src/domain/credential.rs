//! A credential as the ledger knows it, the values it is made of, and `apply`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    /// The stream version of the last event applied.
    pub version: i32,
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
