//! The `list` answer, written straight into bytes. It is the read path's hot loop: serialised
//! through serde, field by field with every key escaped, it was a third of the instructions of
//! a `list` of ten (issue 18's profile). The shape is `ListedCredential`'s, byte for byte, which
//! the tests below hold it to.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use uuid::Uuid;

use crate::app::replica::ReplicaCredential;

/// What comes before the first credential.
pub const OPENING: &[u8] = br#"{"status":"success","data":["#;
/// What comes after the last.
pub const CLOSING: &[u8] = b"]}";
/// About what one listed credential takes, to size the answer's buffer.
pub const CREDENTIAL_BYTES: usize = 148;

/// The whole answer for `credentials`, as [`write_page`] writes them.
pub fn answer(credentials: &[ReplicaCredential], last_used: &[Option<DateTime<Utc>>], at: DateTime<Utc>) -> Vec<u8> {
    let mut body = Vec::with_capacity(OPENING.len() + credentials.len() * CREDENTIAL_BYTES + CLOSING.len());
    body.extend_from_slice(OPENING);
    write_page(&mut body, credentials, last_used, at, false);
    body.extend_from_slice(CLOSING);
    body
}

/// Writes `page` as members of the answer's array, each as it stands at `at`, with its
/// `last_used_at` from `last_used` (same order); with a comma first if `continuing` (members
/// were written before).
pub fn write_page(
    out: &mut Vec<u8>,
    page: &[ReplicaCredential],
    last_used: &[Option<DateTime<Utc>>],
    at: DateTime<Utc>,
    continuing: bool,
) {
    for (index, credential) in page.iter().enumerate() {
        if continuing || index > 0 {
            out.push(b',');
        }
        write_credential(out, credential, last_used.get(index).copied().flatten(), at);
    }
}

fn write_credential(
    out: &mut Vec<u8>,
    credential: &ReplicaCredential,
    last_used_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) {
    out.extend_from_slice(br#"{"id":"#);
    out.extend_from_slice(itoa::Buffer::new().format(credential.id).as_bytes());
    out.extend_from_slice(br#","uuid":"#);
    write_uuid(out, credential.uuid);
    out.extend_from_slice(br#","name":"#);
    write_string(out, &credential.name);
    out.extend_from_slice(br#","type":""#);
    out.extend_from_slice(credential.credential_type.as_str().as_bytes());
    out.extend_from_slice(if credential.held_at(at) { br#"","hold":true"# } else { br#"","hold":false"# });
    out.extend_from_slice(br#","last_used_at":"#);
    write_instant(out, last_used_at, SecondsFormat::Secs);
    out.extend_from_slice(br#","expires_at":"#);
    write_instant(out, credential.expires_at, SecondsFormat::Micros);
    out.extend_from_slice(br#","replaced_by":"#);
    match credential.replaced_by {
        Some(uuid) => write_uuid(out, uuid),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

fn write_uuid(out: &mut Vec<u8>, uuid: Uuid) {
    out.push(b'"');
    out.extend_from_slice(uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
    out.push(b'"');
}

/// A JSON string. A name holds no control character (`CredentialName`), so almost every one is
/// copied as it is; one with a quote or a backslash goes through serde_json's escaping.
fn write_string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|byte| byte == b'"' || byte == b'\\' || byte < 0x20) {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// An instant in RFC 3339 UTC (`Z`), to the second or the microsecond as chrono writes it, or
/// `null`.
fn write_instant(out: &mut Vec<u8>, at: Option<DateTime<Utc>>, precision: SecondsFormat) {
    let Some(at) = at else {
        out.extend_from_slice(b"null");
        return;
    };
    let nanos = at.nanosecond();
    // Years of five digits and leap seconds are chrono's to write.
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        out.push(b'"');
        out.extend_from_slice(at.to_rfc3339_opts(precision, true).as_bytes());
        out.push(b'"');
        return;
    }
    let mut text = *b"\"0000-00-00T00:00:00.000000Z\"";
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut value = value;
        for position in (at..at + digits).rev() {
            text[position] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(1, at.year() as u32, 4);
    put(6, at.month(), 2);
    put(9, at.day(), 2);
    put(12, at.hour(), 2);
    put(15, at.minute(), 2);
    put(18, at.second(), 2);
    match precision {
        SecondsFormat::Micros => put(21, nanos / 1000, 6),
        _ => {
            text[20] = b'Z';
            text[21] = b'"';
            out.extend_from_slice(&text[..22]);
            return;
        }
    }
    out.extend_from_slice(&text);
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::CredentialType;

    fn credential(name: &str, hold: bool, expires_at: Option<DateTime<Utc>>, replaced: bool) -> ReplicaCredential {
        ReplicaCredential {
            id: 9_007_199_254_740_993,
            uuid: Uuid::from_u128(0x0b5bb9c2_3f3c_4a8e_9a53_a3a0e4e6c1d2),
            server_uuid: Uuid::from_u128(7),
            name: name.to_owned(),
            credential_type: if hold { CredentialType::Smtp } else { CredentialType::Api },
            hold,
            expires_at,
            replaced_by: replaced.then(|| Uuid::from_u128(0xffff_0000_ffff_0000_1234_5678_9abc_def0)),
        }
    }

    /// What serde writes for the same credential: the shape the document declares.
    fn by_serde(credential: &ReplicaCredential, last_used_at: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Vec<u8> {
        serde_json::to_vec(&super::super::credentials::ListedCredential::new(credential, last_used_at, at))
            .expect("serialise")
    }

    #[test]
    fn each_credential_is_written_byte_for_byte_as_serde_writes_it() {
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).single().expect("instant");
        let instants = [
            None,
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("instant")),
            Some(Utc.timestamp_opt(1_790_000_000, 123_456_789).single().expect("instant")),
            Some(Utc.timestamp_opt(0, 1_000).single().expect("instant")),
            Some(Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().expect("instant")),
            Some(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single().expect("instant")),
            Some(Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).single().expect("instant")),
            // A leap second, which chrono writes as :60.
            Some(Utc.timestamp_opt(1_483_228_799, 1_500_000_000).single().expect("instant")),
            // Before `at` (so held) and after it.
            Some(at - chrono::Duration::microseconds(1)),
            Some(at + chrono::Duration::days(400)),
        ];
        let names = ["Production API", "say \"hi\"", r"back\slash", "ünïcödé ✓ 中文", "tab\tin", "\u{7f}del", "😀"];
        let mut checked = 0;
        for name in names {
            for hold in [false, true] {
                for replaced in [false, true] {
                    for expires_at in instants {
                        for last_used_at in instants {
                            let credential = credential(name, hold, expires_at, replaced);
                            let mut ours = Vec::new();
                            write_page(&mut ours, std::slice::from_ref(&credential), &[last_used_at], at, false);
                            let theirs = by_serde(&credential, last_used_at, at);
                            assert_eq!(
                                String::from_utf8_lossy(&ours),
                                String::from_utf8_lossy(&theirs),
                                "{name:?} hold {hold} expires {expires_at:?} used {last_used_at:?}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 2 * 2 * 10 * 10);
    }

    #[test]
    fn a_page_is_a_comma_separated_run_that_continues_one_written_before() {
        let at = Utc::now();
        let page = [credential("a", false, None, false), credential("b", true, None, true)];
        let mut body = answer(&page[..1], &[], at);
        body.truncate(body.len() - CLOSING.len());
        write_page(&mut body, &page[1..], &[None], at, true);
        write_page(&mut body, &[], &[], at, true);
        body.extend_from_slice(CLOSING);
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(answer["status"], "success");
        let names: Vec<_> = answer["data"].as_array().expect("array").iter().map(|item| item["name"].clone()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(answer["data"][1]["hold"], true);
    }
}
