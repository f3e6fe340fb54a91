//! Who a claimed notification may reach, looked up once per batch: the
//! recipient's stored profile and preferences, quiet hours (the recipient's
//! own, else the tenant's) and the tenant's suppression list. The dispatcher
//! asks it where each channel reaches the recipient, why a channel is
//! refused, and whether the notification must wait for quiet hours to end.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::commands::recipients::{self, Audience};
use crate::commands::suppressions;
use crate::domain::NotificationState;
use crate::domain::quiet_hours::QuietHours;
use crate::domain::suppression::{SuppressedAddress, SuppressionReason};
use crate::domain::values::{Channel, Locale, Priority, RecipientId, TenantId};
use crate::providers::Destination;
use crate::ttl_cache::TtlCache;

/// A change to a tenant's quiet hours reaches the dispatchers within this time.
const QUIET_HOURS_TTL: Duration = Duration::from_secs(5);

pub type Reach = crate::domain::delivery_plan::Reach<Destination>;

/// Caches what changes rarely; everything else is read per batch.
pub struct AudienceGate {
    quiet_hours: TtlCache<TenantId, Option<QuietHours>>,
}

impl Default for AudienceGate {
    fn default() -> Self {
        AudienceGate {
            quiet_hours: TtlCache::new(QUIET_HOURS_TTL),
        }
    }
}

/// What one batch knows about its recipients.
#[derive(Default)]
pub struct BatchAudience {
    audiences: HashMap<(TenantId, RecipientId), Audience>,
    quiet_hours: HashMap<TenantId, Option<QuietHours>>,
    suppressed: HashMap<(TenantId, SuppressedAddress), SuppressionReason>,
}

impl AudienceGate {
    /// One query per tenant for profiles and one for suppressions, only for
    /// notifications that name a recipient or an email/SMS address.
    pub async fn look_up(
        &self,
        pool: &sqlx::PgPool,
        states: &[&NotificationState],
    ) -> Result<BatchAudience, sqlx::Error> {
        let mut batch = BatchAudience::default();
        let mut ids: HashMap<&TenantId, Vec<RecipientId>> = HashMap::new();
        for state in states {
            if let Some(id) = &state.request.recipient.id {
                ids.entry(&state.tenant_id).or_default().push(id.clone());
            }
        }
        for (tenant, ids) in ids {
            for (id, audience) in recipients::audiences(pool, tenant, &ids).await? {
                batch.audiences.insert((tenant.clone(), id), audience);
            }
        }
        for state in states {
            let tenant = &state.tenant_id;
            if state.request.priority != Priority::High && !batch.quiet_hours.contains_key(tenant) {
                let window = match self.quiet_hours.get(tenant) {
                    Some(window) => window,
                    None => {
                        let window = recipients::tenant_quiet_hours(pool, tenant).await?;
                        self.quiet_hours.insert(tenant.clone(), window);
                        window
                    }
                };
                batch.quiet_hours.insert(tenant.clone(), window);
            }
        }
        let mut addresses: HashMap<&TenantId, Vec<SuppressedAddress>> = HashMap::new();
        for state in states {
            for (_, destination) in batch.candidates(state) {
                if let Some(address) = suppressible(&destination) {
                    addresses.entry(&state.tenant_id).or_default().push(address);
                }
            }
        }
        for (tenant, addresses) in addresses {
            for (address, reason) in suppressions::suppressed(pool, tenant, &addresses).await? {
                batch.suppressed.insert((tenant.clone(), address), reason);
            }
        }
        Ok(batch)
    }
}

impl BatchAudience {
    fn audience(&self, state: &NotificationState) -> Option<&Audience> {
        let id = state.request.recipient.id.as_ref()?;
        self.audiences.get(&(state.tenant_id.clone(), id.clone()))
    }

    /// Every requested channel with an address, from the request or else the
    /// stored profile, in the send's order.
    fn candidates(&self, state: &NotificationState) -> Vec<(Channel, Destination)> {
        let given = &state.request.recipient;
        let profile = self.audience(state).and_then(|a| a.profile.as_ref());
        state
            .request
            .channels
            .iter()
            .filter_map(|&channel| {
                let destination = match channel {
                    Channel::Email => given
                        .email
                        .clone()
                        .or_else(|| profile?.email.clone())
                        .map(Destination::Email),
                    Channel::Sms => given
                        .phone
                        .clone()
                        .or_else(|| profile?.phone.clone())
                        .map(Destination::Sms),
                    Channel::Push => given
                        .push_target
                        .clone()
                        .or_else(|| profile?.push_target.clone())
                        .map(Destination::Push),
                    Channel::Webhook => given
                        .webhook_url
                        .clone()
                        .or_else(|| profile?.webhook_url.clone())
                        .map(Destination::Webhook),
                    Channel::Ntfy => given
                        .ntfy_topic
                        .clone()
                        .or_else(|| profile?.ntfy_topic.clone())
                        .map(Destination::Ntfy),
                    Channel::InApp => given.id.clone().map(Destination::InApp),
                }?;
                Some((channel, destination))
            })
            .collect()
    }

    /// The channels this notification may use, minus those the recipient
    /// opted out of for its category and the suppressed addresses.
    pub fn reach(&self, state: &NotificationState) -> Reach {
        let category = state.request.category.as_ref();
        let preferences = self.audience(state).map(|a| &a.preferences);
        let mut reach = Reach::default();
        for (channel, destination) in self.candidates(state) {
            if preferences.is_some_and(|p| !p.allows(category, channel)) {
                reach.refusals.push(match category {
                    Some(category) => format!(
                        "the recipient opted out of {} on {channel}",
                        category.as_str()
                    ),
                    None => format!("the recipient opted out of {channel}"),
                });
                continue;
            }
            if let Some(reason) = suppressible(&destination)
                .and_then(|a| self.suppressed.get(&(state.tenant_id.clone(), a)))
            {
                reach.refusals.push(format!(
                    "the {channel} address is on the suppression list ({})",
                    reason.as_str()
                ));
                continue;
            }
            reach.routes.push((channel, destination));
        }
        reach
    }

    /// When quiet hours in the recipient's timezone end, if `now` is inside
    /// them; HIGH priority never waits.
    pub fn quiet_until(
        &self,
        state: &NotificationState,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if state.request.priority == Priority::High {
            return None;
        }
        let profile = self.audience(state).and_then(|a| a.profile.as_ref());
        let timezone = state
            .request
            .recipient
            .timezone
            .or_else(|| profile?.timezone)?;
        let window = profile
            .and_then(|p| p.quiet_hours)
            .or_else(|| self.quiet_hours.get(&state.tenant_id).copied().flatten())?;
        window.release_at(now, timezone.tz())
    }

    /// The stored profile's locale, for choosing a template's variant.
    pub fn locale(&self, state: &NotificationState) -> Option<Locale> {
        self.audience(state)?.profile.as_ref()?.locale.clone()
    }
}

fn suppressible(destination: &Destination) -> Option<SuppressedAddress> {
    match destination {
        Destination::Email(email) => Some(SuppressedAddress::Email(email.clone())),
        Destination::Sms(phone) => Some(SuppressedAddress::Phone(phone.clone())),
        _ => None,
    }
}
