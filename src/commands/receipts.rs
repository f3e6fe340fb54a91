//! Delivery receipts: find the notification a provider receipt is about and record what happened.
//!
//! Receipts arrive unauthenticated as far as tenants go (the provider signs
//! them, not a tenant), so the tenant is always the one of the notification
//! found, never anything the receipt claims, and the only address a
//! bounce or complaint can suppress is the one that notification went to.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::notifications::{self, stream_id};
use super::{Actor, CommandError, suppressions};
use crate::domain::suppression::{MAX_NOTE_CHARS, SuppressedAddress, SuppressionReason};
use crate::domain::values::{Channel, NotificationId, TenantId};
use crate::domain::{DomainError, NotificationCommand, NotificationState, NotificationStatus};
use crate::eventstore::EventStore;
use crate::signing::Secret;

/// `[receipts]`: inbound delivery receipts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiptsConfig {
    pub sns: SnsReceiptsConfig,
    /// `[receipts.providers.NAME]`: providers posting signed receipts to
    /// `/webhooks/NAME`; a name not listed here is answered 404.
    pub providers: BTreeMap<String, ReceiptProviderConfig>,
}

/// `[receipts.sns]`: `POST /webhooks/sns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnsReceiptsConfig {
    /// Off (the default), the route answers 404. On, `topic_arns` must name
    /// at least one topic: Herald refuses to start otherwise.
    pub enabled: bool,
    /// Off, anyone who can reach the route can claim deliveries and bounces.
    pub verify_signatures: bool,
    /// Hosts a `SigningCertURL` may point at; `*` stands for one DNS label.
    /// Certificates are fetched over HTTPS only (plain HTTP is accepted for
    /// loopback hosts, which exist for tests).
    pub cert_hosts: Vec<String>,
    /// Hosts a `SubscribeURL` may point at; others are not confirmed.
    pub subscribe_hosts: Vec<String>,
    /// The only topics whose messages are accepted (and whose subscriptions
    /// are confirmed). A valid signature proves only that some AWS account
    /// sent the message, so without this list any account's topic would do.
    pub topic_arns: Vec<String>,
}

impl SnsReceiptsConfig {
    /// Why this configuration cannot serve SNS receipts, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        (self.enabled && self.topic_arns.is_empty()).then_some(
            "receipts.sns.enabled is set but receipts.sns.topic_arns is empty: \
             list the ARNs of the SNS topics your receipts are published to",
        )
    }
}

impl Default for SnsReceiptsConfig {
    fn default() -> Self {
        let sns_hosts = vec![
            "sns.*.amazonaws.com".to_string(),
            "sns.*.amazonaws.com.cn".to_string(),
        ];
        SnsReceiptsConfig {
            enabled: false,
            verify_signatures: true,
            cert_hosts: sns_hosts.clone(),
            subscribe_hosts: sns_hosts,
            topic_arns: Vec::new(),
        }
    }
}

/// `[receipts.providers.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptProviderConfig {
    /// The Standard Webhooks secret (`whsec_...`) the provider signs with.
    pub secret: Secret,
}

/// How a receipt names its notification; tried in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptTarget {
    /// Herald's own id, echoed back (the `X-Herald-Notification-Id` header).
    Notification(NotificationId),
    /// The id the provider answered the send with (`NotificationSent`).
    ProviderMessageId(String),
}

/// What the provider reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptOutcome {
    Delivered,
    Bounced { hard: bool, reason: String },
    Complained,
}

impl ReceiptOutcome {
    /// The `kind` label of `receipts_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiptOutcome::Delivered => "delivered",
            ReceiptOutcome::Bounced { hard: true, .. } => "hard_bounce",
            ReceiptOutcome::Bounced { hard: false, .. } => "soft_bounce",
            ReceiptOutcome::Complained => "complaint",
        }
    }

    /// Hard bounces and complaints put the address on the suppression list.
    pub fn suppresses(&self) -> bool {
        matches!(
            self,
            ReceiptOutcome::Bounced { hard: true, .. } | ReceiptOutcome::Complained
        )
    }
}

/// One provider report about one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// Who reported it (`sns`, `ses`, a configured provider name), for logs and metrics.
    pub provider: String,
    pub targets: Vec<ReceiptTarget>,
    pub outcome: ReceiptOutcome,
    /// When the provider says it happened.
    pub at: DateTime<Utc>,
    /// Addresses the provider names (bounced or complaining recipients, the
    /// SMS destination), as written. A receipt that names addresses counts
    /// only when the notification's own address is among them, and only
    /// that address is ever suppressed.
    pub addresses: Vec<String>,
}

/// What became of a receipt. Every one is acknowledged to the provider,
/// which would otherwise retry it for days.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The event was appended (or was already there: a retried receipt).
    Recorded {
        tenant_id: TenantId,
        notification_id: NotificationId,
    },
    /// The notification's state does not allow it (a delivery after a bounce).
    Ignored {
        tenant_id: TenantId,
        notification_id: NotificationId,
        reason: String,
    },
    /// No notification matches any of the receipt's targets.
    Unmatched,
    /// The notification is still being sent: the receipt overtook the
    /// dispatcher's `NotificationSent`, and should be sent again shortly.
    TooEarly { notification_id: NotificationId },
}

/// Records a receipt on its notification.
#[tracing::instrument(name = "record_receipt", skip_all, fields(provider = %receipt.provider, kind = receipt.outcome.kind()))]
pub async fn record(
    store: &EventStore,
    receipt: &Receipt,
    actor: &Actor,
) -> Result<Recorded, CommandError> {
    metrics::counter!(
        "receipts_total",
        "provider" => receipt.provider.clone(),
        "kind" => receipt.outcome.kind()
    )
    .increment(1);
    let Some((tenant_id, notification_id)) = find(store, &receipt.targets).await? else {
        metrics::counter!("receipts_unmatched_total", "provider" => receipt.provider.clone())
            .increment(1);
        tracing::info!(targets = ?receipt.targets, "receipt matches no notification");
        return Ok(Recorded::Unmatched);
    };
    let Some(details) = notifications::get(store, &tenant_id, &notification_id).await? else {
        return Ok(Recorded::Unmatched);
    };
    let own = sent_address(&details.state);
    if !names_own_address(receipt, own.as_ref()) {
        metrics::counter!("receipts_foreign_address_total", "provider" => receipt.provider.clone())
            .increment(1);
        tracing::warn!(%notification_id, "receipt names no address the notification was sent to; ignored");
        return Ok(Recorded::Ignored {
            tenant_id,
            notification_id,
            reason: "the receipt names no address this notification was sent to".into(),
        });
    }
    let command = || match &receipt.outcome {
        ReceiptOutcome::Delivered => NotificationCommand::RecordDelivered { at: receipt.at },
        ReceiptOutcome::Bounced { hard, reason } => NotificationCommand::RecordBounce {
            hard: *hard,
            reason: reason.clone(),
            at: receipt.at,
        },
        ReceiptOutcome::Complained => NotificationCommand::RecordComplaint { at: receipt.at },
    };
    let recorded = match notifications::handle(store, &tenant_id, &notification_id, command, actor)
        .await
    {
        Ok(_) => Recorded::Recorded {
            tenant_id: tenant_id.clone(),
            notification_id,
        },
        Err(CommandError::Domain(DomainError::IllegalTransition {
            from: NotificationStatus::Sending,
            ..
        })) => return Ok(Recorded::TooEarly { notification_id }),
        Err(CommandError::Domain(error @ DomainError::IllegalTransition { .. })) => {
            tracing::debug!(%notification_id, %error, "receipt does not apply to the notification's state");
            Recorded::Ignored {
                tenant_id: tenant_id.clone(),
                notification_id,
                reason: error.to_string(),
            }
        }
        Err(error) => return Err(error),
    };
    // The address is suppressed even when the notification had already
    // ended otherwise: the report is about the address, not the message.
    if receipt.outcome.suppresses() {
        suppress(store, &tenant_id, receipt, own, actor).await?;
    }
    Ok(recorded)
}

/// Whether the addresses a receipt names (if it names any that can be
/// read) include the one the notification went to. A receipt about some
/// other address is not about this notification, whatever id it carries.
fn names_own_address(receipt: &Receipt, own: Option<&SuppressedAddress>) -> bool {
    let mut named = receipt
        .addresses
        .iter()
        // SNS masks digits of SMS destinations: such a number says nothing.
        .filter_map(|raw| SuppressedAddress::parse(raw, None).ok())
        .peekable();
    named.peek().is_none() || own.is_some_and(|own| named.any(|address| &address == own))
}

/// Puts the address the notification went to on its tenant's suppression
/// list after a hard bounce or complaint: never any other address the
/// receipt names.
async fn suppress(
    store: &EventStore,
    tenant_id: &TenantId,
    receipt: &Receipt,
    own: Option<SuppressedAddress>,
    actor: &Actor,
) -> Result<(), CommandError> {
    let Some(address) = own else {
        tracing::info!("no email or phone address to suppress for this receipt");
        return Ok(());
    };
    let (reason, why) = match &receipt.outcome {
        ReceiptOutcome::Complained => (SuppressionReason::Complaint, "complaint".to_string()),
        ReceiptOutcome::Bounced { reason, .. } => (
            SuppressionReason::HardBounce,
            format!("hard bounce: {reason}"),
        ),
        ReceiptOutcome::Delivered => return Ok(()),
    };
    let note = note(&format!("{} {why}", receipt.provider));
    suppressions::add(store, tenant_id, address, reason, Some(note), actor).await?;
    Ok(())
}

/// The email or phone number the notification was sent to, if it went by one.
fn sent_address(state: &NotificationState) -> Option<SuppressedAddress> {
    let recipient = &state.request.recipient;
    match state.channel? {
        Channel::Email => recipient.email.clone().map(SuppressedAddress::Email),
        Channel::Sms => recipient.phone.clone().map(SuppressedAddress::Phone),
        _ => None,
    }
}

/// Provider text made fit for a suppression note: one line, bounded.
fn note(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_NOTE_CHARS)
        .collect()
}

/// The first target that names a notification, with its tenant.
async fn find(
    store: &EventStore,
    targets: &[ReceiptTarget],
) -> Result<Option<(TenantId, NotificationId)>, CommandError> {
    for target in targets {
        let found = match target {
            ReceiptTarget::Notification(id) => by_notification_id(store, id).await?,
            ReceiptTarget::ProviderMessageId(message_id) => {
                by_provider_message_id(store, message_id).await?
            }
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

async fn by_notification_id(
    store: &EventStore,
    id: &NotificationId,
) -> Result<Option<(TenantId, NotificationId)>, CommandError> {
    let tenant: Option<String> = sqlx::query_scalar(
        "SELECT tenant_id FROM events WHERE stream_id = $1 AND stream_version = 1",
    )
    .bind(stream_id(id))
    .fetch_optional(store.pool())
    .await?;
    tenant
        .map(|tenant| Ok((stored_tenant(&tenant)?, *id)))
        .transpose()
}

/// Read from the log rather than a projection, so a receipt that arrives
/// right after the send (SNS answers within a second) still finds it; the
/// partial index of migration 0015 keeps it cheap. A resent message has
/// several `NotificationSent`; any of them names the same notification.
async fn by_provider_message_id(
    store: &EventStore,
    message_id: &str,
) -> Result<Option<(TenantId, NotificationId)>, CommandError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT tenant_id, stream_id FROM events \
         WHERE event_type = 'NotificationSent' AND payload->>'provider_message_id' = $1 \
         ORDER BY global_position DESC LIMIT 1",
    )
    .bind(message_id)
    .fetch_optional(store.pool())
    .await?;
    let Some((tenant, stream)) = row else {
        return Ok(None);
    };
    let id = stream
        .strip_prefix("notification-")
        .and_then(|uuid| NotificationId::parse(uuid).ok())
        .ok_or_else(|| CommandError::CorruptEvent {
            position: 0,
            reason: format!("NotificationSent in stream {stream:?}, not a notification's"),
        })?;
    Ok(Some((stored_tenant(&tenant)?, id)))
}

fn stored_tenant(raw: &str) -> Result<TenantId, CommandError> {
    TenantId::parse(raw).map_err(|error| CommandError::CorruptEvent {
        position: 0,
        reason: format!("tenant id {raw:?}: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_toml_and_never_shows_a_secret() {
        let config: ReceiptsConfig = toml::from_str(
            "[sns]\nverify_signatures = false\ntopic_arns = [\"arn:aws:sns:eu-west-1:1:t\"]\n\
             [providers.acme]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        )
        .expect("valid");
        assert!(!config.sns.verify_signatures);
        assert_eq!(
            config.sns.cert_hosts,
            SnsReceiptsConfig::default().cert_hosts
        );
        assert_eq!(
            config.providers["acme"].secret.expose(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        );
        let shown = toml::to_string(&config).expect("serialises");
        assert!(!shown.contains("MfKQ9r8G"), "{shown}");
        assert!(toml::from_str::<ReceiptsConfig>("[sns]\nverify = true\n").is_err());
    }

    #[test]
    fn a_receipt_counts_only_when_it_names_the_notifications_own_address() {
        let receipt = |addresses: &[&str]| Receipt {
            provider: "ses".into(),
            targets: Vec::new(),
            outcome: ReceiptOutcome::Complained,
            at: Utc::now(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        };
        let own = SuppressedAddress::parse("Ada@Example.com", None).unwrap();
        assert!(names_own_address(&receipt(&[]), Some(&own)));
        assert!(names_own_address(
            &receipt(&["eve@example.com", "ada@example.com"]),
            Some(&own)
        ));
        assert!(!names_own_address(
            &receipt(&["eve@example.com"]),
            Some(&own)
        ));
        assert!(!names_own_address(&receipt(&["eve@example.com"]), None));
        // A masked SMS destination names nobody in particular.
        assert!(names_own_address(&receipt(&["+1425XXX0100"]), Some(&own)));
    }

    #[test]
    fn only_hard_bounces_and_complaints_suppress() {
        let bounce = |hard| ReceiptOutcome::Bounced {
            hard,
            reason: "x".into(),
        };
        assert!(bounce(true).suppresses());
        assert!(!bounce(false).suppresses());
        assert!(ReceiptOutcome::Complained.suppresses());
        assert!(!ReceiptOutcome::Delivered.suppresses());
        assert_eq!(bounce(false).kind(), "soft_bounce");
    }
}
