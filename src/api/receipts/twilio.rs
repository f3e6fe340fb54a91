//! Twilio's status callbacks (`POST /webhooks/twilio/{provider}`): a form
//! signed in `X-Twilio-Signature` with the provider's auth token, read into
//! one [`Receipt`].
//! <https://www.twilio.com/docs/usage/webhooks/webhooks-security>

use std::collections::{BTreeMap, BTreeSet};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;

use super::Refusal;
use crate::commands::receipts::{Receipt, ReceiptOutcome, ReceiptTarget};
use crate::domain::values::HttpUrl;
use crate::signing::Secret;

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Callbacks are forms of a few dozen short fields.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the callback route of one `twilio` provider instance checks with.
#[derive(Debug, Clone, PartialEq)]
pub struct TwilioReceiver {
    pub auth_token: Secret,
    /// The `StatusCallback` Herald gives Twilio: the URL Twilio signs.
    pub callback_url: Option<HttpUrl>,
}

/// Error codes of a failed message that will fail the same way for this
/// number every time (<https://www.twilio.com/docs/api/errors>): invalid
/// `To` (21211), unsubscribed recipient (21610), not a mobile number
/// (21614), unknown handset (30005), landline or unreachable carrier (30006).
const HARD_FAILURES: [&str; 5] = ["21211", "21610", "21614", "30005", "30006"];

/// What a callback reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Receipt(Receipt),
    /// A status on the way (`queued`, `sent`, ...): nothing to record.
    Ignored(String),
}

/// Twilio's signature: HMAC-SHA1 keyed with the auth token over the URL
/// followed by every POST parameter, sorted by name (then value), each
/// name directly followed by its value; base64.
pub fn signature(auth_token: &Secret, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name).or_default().insert(value);
    }
    let mut text = url.to_string();
    for (name, values) in sorted {
        for value in values {
            text.push_str(name);
            text.push_str(value);
        }
    }
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        auth_token.expose().as_bytes(),
    );
    STANDARD.encode(hmac::sign(&key, text.as_bytes()).as_ref())
}

/// The URLs Twilio may have signed for `url`: as given, and with its
/// scheme's default port written out (Twilio's own validators accept both).
fn signed_urls(url: &HttpUrl) -> Vec<String> {
    let mut urls = vec![url.as_str().to_string()];
    let parsed = url.as_url();
    if parsed.port().is_none()
        && let Some(port) = parsed.port_or_known_default()
    {
        // `set_port` with the default port leaves the URL unchanged, so the
        // port goes into the text by hand.
        let host = parsed.host_str().unwrap_or_default();
        let authority = format!("{host}:{port}");
        let with_port =
            parsed
                .as_str()
                .replacen(&format!("://{host}"), &format!("://{authority}"), 1);
        urls.push(with_port);
    }
    urls
}

/// Checks `X-Twilio-Signature` (`header`) over `params`, comparing in
/// constant time.
pub fn verify(
    receiver: &TwilioReceiver,
    header: Option<&str>,
    params: &[(String, String)],
) -> Result<(), Refusal> {
    let Some(url) = &receiver.callback_url else {
        return Err(Refusal::NotFound(
            "this provider has no status callback URL: set links.public_base_url or status_callback_url".into(),
        ));
    };
    let given = header
        .map(str::trim)
        .filter(|given| !given.is_empty())
        .ok_or_else(|| Refusal::Forbidden("the X-Twilio-Signature header is missing".into()))?;
    let matches = signed_urls(url).iter().any(|url| {
        let expected = signature(&receiver.auth_token, url, params);
        aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes())
            .is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(Refusal::Forbidden(
            "the X-Twilio-Signature does not verify for this URL, body and auth token".into(),
        ))
    }
}

/// The form's fields, in order.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// Reads a verified callback: `delivered` is a delivery; `undelivered` and
/// `failed` a bounce, hard for the error codes above; any other status is
/// on the way and ignored.
pub fn parse(provider: &str, params: &[(String, String)]) -> Result<Parsed, Refusal> {
    let field = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    };
    let sid = field("MessageSid")
        .or(field("SmsSid"))
        .ok_or_else(|| Refusal::BadRequest("the callback has no MessageSid".into()))?;
    let status = field("MessageStatus")
        .or(field("SmsStatus"))
        .ok_or_else(|| Refusal::BadRequest("the callback has no MessageStatus".into()))?;
    let outcome = match status {
        "delivered" => ReceiptOutcome::Delivered,
        "undelivered" | "failed" => {
            let code = field("ErrorCode");
            ReceiptOutcome::Bounced {
                hard: code.is_some_and(|code| HARD_FAILURES.contains(&code)),
                reason: match code {
                    Some(code) => format!("twilio {status}: error {code}"),
                    None => format!("twilio {status}"),
                },
            }
        }
        other => return Ok(Parsed::Ignored(format!("a message status {other:?}"))),
    };
    Ok(Parsed::Receipt(Receipt {
        provider: provider.to_string(),
        targets: vec![ReceiptTarget::ProviderMessageId(sid.to_string())],
        outcome,
        // Callbacks carry no time of their own.
        at: Utc::now(),
        addresses: field("To").map(str::to_string).into_iter().collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn receiver(url: &str) -> TwilioReceiver {
        TwilioReceiver {
            auth_token: Secret::new("12345"),
            callback_url: Some(HttpUrl::parse(url).unwrap()),
        }
    }

    // Twilio's documented example request and its signature (also computed
    // apart from this code with Python's hmac and base64).
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const EXPECTED: &str = "GvWf1cFY/Q7PnoempGyD5oXAezc=";

    fn example() -> Vec<(String, String)> {
        params(&[
            ("From", "+14158675310"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("Caller", "+14158675310"),
        ])
    }

    #[test]
    fn signs_the_url_and_the_sorted_parameters() {
        assert_eq!(signature(&Secret::new("12345"), URL, &example()), EXPECTED);
    }

    #[test]
    fn verifies_only_the_right_signature_url_and_body() {
        let receiver = receiver(URL);
        assert!(verify(&receiver, Some(EXPECTED), &example()).is_ok());
        let mut tampered = example();
        tampered[2].1 = "9999".into();
        for (header, params) in [
            (Some(EXPECTED), tampered),
            (Some("GvWf1cFY/Q7PnoempGyD5oXAezd="), example()),
            (None, example()),
            (Some(""), example()),
        ] {
            assert!(
                matches!(
                    verify(&receiver, header, &params),
                    Err(Refusal::Forbidden(_))
                ),
                "{header:?}"
            );
        }
        let elsewhere = super::tests::receiver("https://mycompany.com/other.php?foo=1&bar=2");
        assert!(verify(&elsewhere, Some(EXPECTED), &example()).is_err());
    }

    #[test]
    fn the_default_port_may_be_written_out() {
        let url = HttpUrl::parse("https://herald.example/webhooks/twilio/sms").unwrap();
        assert_eq!(
            signed_urls(&url),
            [
                "https://herald.example/webhooks/twilio/sms",
                "https://herald.example:443/webhooks/twilio/sms"
            ]
        );
        let with_port = HttpUrl::parse("http://127.0.0.1:8080/webhooks/twilio/sms").unwrap();
        assert_eq!(signed_urls(&with_port).len(), 1);
    }

    #[test]
    fn statuses_become_receipts_or_are_ignored() {
        let read = |status: &str, code: Option<&str>| {
            let mut pairs = vec![
                ("MessageSid", "SM0123"),
                ("MessageStatus", status),
                ("To", "+447700900123"),
            ];
            if let Some(code) = code {
                pairs.push(("ErrorCode", code));
            }
            parse("sms-main", &params(&pairs)).unwrap()
        };
        let Parsed::Receipt(delivered) = read("delivered", None) else {
            panic!("a receipt")
        };
        assert_eq!(delivered.outcome, ReceiptOutcome::Delivered);
        assert_eq!(
            delivered.targets,
            [ReceiptTarget::ProviderMessageId("SM0123".into())]
        );
        assert_eq!(delivered.addresses, ["+447700900123"]);
        assert_eq!(delivered.provider, "sms-main");
        let Parsed::Receipt(failed) = read("undelivered", Some("30006")) else {
            panic!("a receipt")
        };
        assert_eq!(
            failed.outcome,
            ReceiptOutcome::Bounced {
                hard: true,
                reason: "twilio undelivered: error 30006".into()
            }
        );
        let Parsed::Receipt(soft) = read("failed", Some("30003")) else {
            panic!("a receipt")
        };
        assert!(matches!(
            soft.outcome,
            ReceiptOutcome::Bounced { hard: false, .. }
        ));
        for on_the_way in ["queued", "sending", "sent", "accepted"] {
            assert!(matches!(read(on_the_way, None), Parsed::Ignored(_)));
        }
        assert!(matches!(
            parse("sms-main", &params(&[("MessageStatus", "delivered")])),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn reads_the_form_as_twilio_encodes_it() {
        assert_eq!(
            form(b"To=%2B447700900123&Body=a+b%26c&Empty="),
            params(&[("To", "+447700900123"), ("Body", "a b&c"), ("Empty", "")])
        );
    }
}
