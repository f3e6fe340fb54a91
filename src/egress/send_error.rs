//! Why a call out of Herald failed, classified for the retry policy: the
//! providers' sends, callbacks and attachment fetches all answer with it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::EgressError;

/// Why a send failed, classified for the retry policy. Messages never carry
/// secrets: they end up in events and logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (timeouts, 5xx, 408, 429, SMTP 4xx).
    #[error("{message}")]
    Transient {
        message: String,
        /// The provider asked for this pause (HTTP `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Trying again will not help (SMTP 5xx, HTTP 4xx, an invalid number).
    #[error("{message}")]
    Permanent { message: String },
}

impl SendError {
    pub fn transient(message: impl Into<String>) -> Self {
        SendError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        SendError::Permanent {
            message: message.into(),
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent { .. })
    }
}

/// A call that got no answer, by reason class: worth retrying when the
/// network failed, not when the target was refused or the request was bad.
pub fn send_error(service: &str, error: EgressError) -> SendError {
    let message = format!("{service}: {error}");
    if error.is_transient() {
        SendError::transient(message)
    } else {
        SendError::permanent(message)
    }
}

/// A non-2xx answer: 408, 429 and 5xx are worth retrying (after the
/// `Retry-After` the receiver asked for); any other status, including a
/// redirect, will get the same answer again. Only the status and its class
/// are told: what the target said never reaches a tenant (it may be an
/// internal service's page, or echo a credential).
pub fn status_error(service: &str, status: StatusCode, headers: &HeaderMap) -> SendError {
    let class = match status.as_u16() {
        300..=399 => "redirect, not followed",
        408 => "request timeout",
        429 => "rate limited",
        400..=499 => "client error",
        500..=599 => "server error",
        _ => "unexpected status",
    };
    let message = format!("{service} answered HTTP {} ({class})", status.as_u16());
    let retryable = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    if retryable {
        SendError::Transient {
            message,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| retry_after(value, Utc::now())),
        }
    } else {
        SendError::permanent(message)
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (a date already past
/// means no wait); anything else is ignored.
fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for junk in ["", "-5", "1.5", "soon"] {
            assert_eq!(retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn classifies_statuses_without_quoting_the_answer() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        for (status, class) in [
            (408, "request timeout"),
            (429, "rate limited"),
            (500, "server error"),
            (502, "server error"),
            (503, "server error"),
        ] {
            let error = status_error("webhook", StatusCode::from_u16(status).unwrap(), &headers);
            assert_eq!(
                error,
                SendError::Transient {
                    message: format!("webhook answered HTTP {status} ({class})"),
                    retry_after: Some(Duration::from_secs(7)),
                }
            );
        }
        for status in [301, 302, 400, 401, 403, 404, 410, 422] {
            let error = status_error("webhook", StatusCode::from_u16(status).unwrap(), &headers);
            assert!(error.is_permanent(), "{status}");
        }
    }
}
