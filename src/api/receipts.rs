//! Inbound delivery receipts: `POST /webhooks/sns`, signed `POST
//! /webhooks/{provider}` and Twilio's `POST /webhooks/twilio/{provider}`.
//!
//! Every receipt that verifies is answered 2xx, even one that matches no
//! notification or that the notification's state ignores: providers retry
//! anything else for days. Refusals are plain text saying why.

mod signed;
mod sns;
mod sns_payload;
mod twilio;

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use serde_json::{Value, json};

use self::sns::{SnsKind, SnsMessage, SnsVerifier};
use self::sns_payload::Parsed;
pub use self::twilio::TwilioReceiver;
use super::{ApiError, ApiState};
use crate::commands::receipts::{self, Receipt, ReceiptsConfig, Recorded};
use crate::commands::{Actor, CommandError};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/webhooks/sns", post(sns_receipt))
        .route("/webhooks/{provider}", post(provider_receipt))
        .route(
            "/webhooks/twilio/{provider}",
            post(twilio_receipt).layer(DefaultBodyLimit::max(twilio::MAX_BODY_BYTES)),
        )
}

/// What the receipt routes keep between requests.
pub struct Receivers {
    config: ReceiptsConfig,
    sns: SnsVerifier,
    /// By `twilio` provider instance name.
    twilio: BTreeMap<String, TwilioReceiver>,
}

impl Receivers {
    pub fn new(config: &ReceiptsConfig, twilio: &BTreeMap<String, TwilioReceiver>) -> Receivers {
        Receivers {
            config: config.clone(),
            sns: SnsVerifier::new(config.sns.clone()),
            twilio: twilio.clone(),
        }
    }
}

/// Why a receipt was not taken.
#[derive(Debug)]
pub enum Refusal {
    /// Unreadable: not worth sending again.
    BadRequest(String),
    /// A signed-webhook signature or timestamp that does not verify.
    Unauthorized(String),
    /// An SNS signature, certificate or topic, or a Twilio signature, that
    /// is not accepted.
    Forbidden(String),
    NotFound(String),
    /// Something Herald needs (the certificate, the subscribe URL) did not
    /// answer; the sender may try again.
    Unavailable(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
            Refusal::Unavailable(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Refusal::BadRequest(reason)
            | Refusal::Unauthorized(reason)
            | Refusal::Forbidden(reason)
            | Refusal::NotFound(reason)
            | Refusal::Unavailable(reason) => reason,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status(), format!("{}\n", self.reason())).into_response()
    }
}

/// A refusal, logged and counted; or an internal error, answered 500 so the
/// provider tries again.
fn refused(provider: &str, refusal: Refusal) -> Response {
    tracing::info!(provider, status = %refusal.status(), reason = refusal.reason(), "receipt refused");
    metrics::counter!(
        "receipts_refused_total",
        "provider" => provider.to_string(),
        "status" => refusal.status().as_u16().to_string()
    )
    .increment(1);
    refusal.into_response()
}

fn failed(error: CommandError) -> Response {
    ApiError::from(error).into_response()
}

/// SNS posts JSON as `text/plain`, so the body is read as bytes.
async fn sns_receipt(State(state): State<ApiState>, body: Bytes) -> Response {
    sns_answer(&state, &body)
        .await
        .unwrap_or_else(|refusal| refused("sns", refusal))
}

/// The answer to an SNS post, or the refusal `sns_receipt` logs and counts.
async fn sns_answer(state: &ApiState, body: &[u8]) -> Result<Response, Refusal> {
    let verifier = &state.receipts.sns;
    let message = SnsMessage::parse(body)?;
    let kind = message.kind()?;
    if !verifier.config().enabled {
        return Ok(Refusal::NotFound("SNS receipts are not enabled here".into()).into_response());
    }
    let sent_at = verifier.verify(&message, Utc::now()).await?;
    Ok(match kind {
        SnsKind::SubscriptionConfirmation => confirm(state, verifier, &message).await?,
        SnsKind::UnsubscribeConfirmation => {
            tracing::info!(topic_arn = %message.topic_arn, "SNS unsubscribed this endpoint");
            match note_subscription(state, &message, "unsubscribed").await {
                Ok(()) => answer(json!({ "status": "unsubscribed" })),
                Err(error) => failed(error),
            }
        }
        SnsKind::Notification => match sns_payload::parse(&message.message, sent_at)? {
            Parsed::Receipt(receipt) => record(state, &receipt, "receipts:sns").await,
            Parsed::Ignored(what) => {
                tracing::debug!(message_id = %message.message_id, "ignoring {what}");
                answer(json!({ "status": "ignored" }))
            }
        },
    })
}

/// Subscribes this endpoint by visiting the `SubscribeURL`, when its host
/// is allowed; a failed visit is answered 502 so SNS asks again.
async fn confirm(
    state: &ApiState,
    verifier: &SnsVerifier,
    message: &SnsMessage,
) -> Result<Response, Refusal> {
    let raw = message
        .subscribe_url
        .as_deref()
        .ok_or_else(|| Refusal::BadRequest("the confirmation has no SubscribeURL".into()))?;
    let url = sns::allowed_url(raw, &verifier.config().subscribe_hosts, "SubscribeURL")?;
    let status = verifier
        .client()?
        .get(url.as_str())
        .send()
        .await
        .map_err(|error| {
            let error = error.without_url();
            Refusal::Unavailable(format!("the SubscribeURL did not answer: {error}"))
        })?
        .status();
    if !status.is_success() {
        return Err(Refusal::Unavailable(format!(
            "the SubscribeURL answered {status}"
        )));
    }
    tracing::info!(topic_arn = %message.topic_arn, "confirmed the SNS subscription");
    Ok(match note_subscription(state, message, "confirmed").await {
        Ok(()) => answer(json!({ "status": "confirmed" })),
        Err(error) => failed(error),
    })
}

/// Keeps `sns_subscriptions` saying which topics this installation listens to.
async fn note_subscription(
    state: &ApiState,
    message: &SnsMessage,
    status: &str,
) -> Result<(), CommandError> {
    sqlx::query(
        "INSERT INTO sns_subscriptions (topic_arn, status, message_id, updated_at) \
         VALUES ($1, $2, $3, now()) \
         ON CONFLICT (topic_arn) DO UPDATE \
             SET status = EXCLUDED.status, message_id = EXCLUDED.message_id, updated_at = now()",
    )
    .bind(&message.topic_arn)
    .bind(status)
    .bind(&message.message_id)
    .execute(state.api.store.pool())
    .await?;
    Ok(())
}

/// `POST /webhooks/{provider}`: a receipt signed per Standard Webhooks with
/// the provider's configured secret.
async fn provider_receipt(
    State(state): State<ApiState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(config) = state.receipts.config.providers.get(&provider) else {
        return Refusal::NotFound(format!("no receipt provider named {provider:?}"))
            .into_response();
    };
    if let Err(refusal) = signed::verify(&config.secret, &headers, &body, Utc::now()) {
        return refused(&provider, refusal);
    }
    match signed::parse(&provider, &body) {
        Ok(receipt) => record(&state, &receipt, &format!("receipts:{provider}")).await,
        Err(refusal) => refused(&provider, refusal),
    }
}

/// `POST /webhooks/twilio/{provider}`: a status callback of the `twilio`
/// provider instance so named, signed with its auth token.
async fn twilio_receipt(
    State(state): State<ApiState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(receiver) = state.receipts.twilio.get(&provider) else {
        return Refusal::NotFound(format!("no twilio provider named {provider:?}")).into_response();
    };
    let params = twilio::form(&body);
    let signature = headers
        .get(twilio::SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    if let Err(refusal) = twilio::verify(receiver, signature, &params) {
        return refused(&provider, refusal);
    }
    match twilio::parse(&provider, &params) {
        Ok(twilio::Parsed::Receipt(receipt)) => {
            record(&state, &receipt, &format!("receipts:{provider}")).await
        }
        Ok(twilio::Parsed::Ignored(what)) => {
            tracing::debug!(%provider, "ignoring {what}");
            answer(json!({ "status": "ignored" }))
        }
        Err(refusal) => refused(&provider, refusal),
    }
}

async fn record(state: &ApiState, receipt: &Receipt, actor: &str) -> Response {
    match receipts::record(&state.api.store, receipt, &Actor::new(actor)).await {
        Ok(Recorded::Recorded {
            notification_id, ..
        }) => answer(json!({ "status": "recorded", "notificationId": notification_id })),
        Ok(Recorded::Ignored {
            notification_id,
            reason,
            ..
        }) => answer(
            json!({ "status": "ignored", "notificationId": notification_id, "reason": reason }),
        ),
        Ok(Recorded::Unmatched) => answer(json!({ "status": "unmatched" })),
        Ok(Recorded::TooEarly { notification_id }) => {
            tracing::debug!(%notification_id, "receipt arrived while the notification is being sent");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "30")],
                "the notification is still being sent; send the receipt again later\n",
            )
                .into_response()
        }
        Err(error) => failed(error),
    }
}

/// 200 with a small JSON body saying what became of the receipt.
fn answer(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_their_statuses() {
        assert_eq!(Refusal::BadRequest("x".into()).status(), 400);
        assert_eq!(Refusal::Unauthorized("x".into()).status(), 401);
        assert_eq!(Refusal::Forbidden("x".into()).status(), 403);
        assert_eq!(Refusal::NotFound("x".into()).status(), 404);
        assert_eq!(Refusal::Unavailable("x".into()).status(), 502);
    }
}
