//! The suppression list: `suppressions`, `addSuppression`,
//! `removeSuppression`. Hard bounces, complaints and unsubscribes arrive on
//! their own; these are for reading the list and for manual entries.

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::connection::Connection;
use super::types::Channel;
use super::{ApiError, api, require, run};
use crate::api::cursor::{self, page_size};
use crate::commands::suppressions::{
    self, SuppressionCursor, SuppressionFilter as Filter, SuppressionRow,
};
use crate::domain::Scope;
use crate::domain::suppression::{AddSuppression, SuppressedAddress};
use crate::domain::values::Channel as DomainChannel;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::suppression::SuppressionReason")]
pub enum SuppressionReason {
    /// The provider reported a permanent bounce.
    HardBounce,
    /// The recipient marked a message as spam.
    Complaint,
    /// Added through the API.
    Manual,
    /// The recipient followed an unsubscribe link of a message sent to a
    /// bare address (with a recipient id, a preference is recorded instead).
    Unsubscribe,
}

/// An address Herald will not send to.
#[derive(SimpleObject)]
pub struct Suppression {
    pub address: String,
    /// `EMAIL` or `SMS`.
    pub channel: Channel,
    pub reason: SuppressionReason,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<SuppressionRow> for Suppression {
    type Error = ApiError;

    fn try_from(row: SuppressionRow) -> Result<Self, ApiError> {
        let channel = DomainChannel::parse(&row.channel).map_err(ApiError::internal)?;
        let reason = crate::domain::suppression::SuppressionReason::parse(&row.reason)
            .map_err(ApiError::internal)?;
        Ok(Suppression {
            address: row.address,
            channel: channel.into(),
            reason: reason.into(),
            note: row.note,
            created_at: row.created_at,
        })
    }
}

#[derive(InputObject, Default)]
pub struct SuppressionFilter {
    pub channel: Option<Channel>,
    pub reason: Option<SuppressionReason>,
    /// Case-insensitive part of the address.
    pub address_contains: Option<String>,
}

/// A channel named for the list is one of its two.
fn list_channel(channel: Channel) -> Result<DomainChannel, ApiError> {
    match DomainChannel::from(channel) {
        channel @ (DomainChannel::Email | DomainChannel::Sms) => Ok(channel),
        other => Err(ApiError::field(
            "filter.channel",
            format!("only email and sms addresses can be suppressed, not {other}"),
        )),
    }
}

#[derive(Default)]
pub struct SuppressionsQuery;

#[Object]
impl SuppressionsQuery {
    /// The tenant's suppression list, newest first (requires `read`).
    async fn suppressions(
        &self,
        ctx: &Context<'_>,
        filter: Option<SuppressionFilter>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<Suppression>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let first = page_size("first", first.into())?;
        let filter = filter.unwrap_or_default();
        // No stored address holds a NUL, and PostgreSQL refuses it in a pattern.
        if filter
            .address_contains
            .as_deref()
            .is_some_and(|text| text.contains('\0'))
        {
            return Err(ApiError::field(
                "filter.addressContains",
                "must not contain NUL characters",
            ));
        }
        let filter = Filter {
            channel: filter.channel.map(list_channel).transpose()?,
            reason: filter.reason.map(Into::into),
            address_contains: filter
                .address_contains
                .map(|text| text.trim().to_string())
                .filter(|text| !text.is_empty()),
        };
        let after: Option<SuppressionCursor> = cursor::decode(after.as_deref())?;
        let page = suppressions::list(
            api(ctx)?.store.pool(),
            &principal.tenant_id,
            &filter,
            first,
            after.as_ref(),
        )
        .await?;
        Connection::try_page(
            page,
            |row| SuppressionCursor {
                created_at: row.created_at,
                address_key: row.address_key.clone(),
            },
            Suppression::try_from,
        )
    }
}

#[derive(Default)]
pub struct SuppressionsMutation;

#[Object]
impl SuppressionsMutation {
    /// Puts an address on the list (requires `admin`). Without `channel`, an
    /// address starting with `+` is a phone number, anything else an email
    /// address; the reason defaults to `MANUAL`. Adding an address already
    /// on the list changes nothing and returns its entry.
    async fn add_suppression(
        &self,
        ctx: &Context<'_>,
        address: String,
        channel: Option<Channel>,
        reason: Option<SuppressionReason>,
        note: Option<String>,
    ) -> Result<Suppression, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let input = AddSuppression {
            address,
            channel: channel.map(Into::into),
            reason: reason.map(Into::into),
            note,
        };
        let row = run(ctx, principal, input, suppressions::add_manual).await?;
        row.try_into()
    }

    /// Takes an address off the list (requires `admin`); `NOT_FOUND` when it
    /// is not on it. A recipient's own opt-outs are preferences, not
    /// suppressions, and stay.
    async fn remove_suppression(
        &self,
        ctx: &Context<'_>,
        address: String,
        channel: Option<Channel>,
    ) -> Result<bool, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let address = SuppressedAddress::parse(&address, channel.map(Into::into))
            .map_err(|error| ApiError::field("address", error.to_string()))?;
        run(ctx, principal, &address, suppressions::remove).await?;
        Ok(true)
    }
}
