//! Which provider carries the next attempt: failover, and cost for marketing.
//!
//! Channels are tried in the order the send gives. Within a channel the
//! providers come in the configured order (reliability first), or cheapest
//! first for marketing categories; a route that failed permanently is never
//! tried again, a transient failure moves to the provider after the one that
//! failed (at once, until each has failed in turn; see the dispatcher's
//! `retry_at`), and a provider whose breaker is open is passed over.

use crate::domain::NotificationState;
use crate::domain::delivery_plan;
use crate::domain::values::Channel;
use crate::providers::Destination;

use super::RoutingConfig;

pub type Route = delivery_plan::Route<Destination>;
pub type RouteDecision = delivery_plan::RouteDecision<Destination>;

/// The ISO 3166 country a destination is in, where it has one (phone numbers).
fn country(destination: &Destination) -> Option<String> {
    match destination {
        Destination::Sms(phone) => phone.country(),
        _ => None,
    }
}

impl RoutingConfig {
    /// The cost of one message through `provider` to `destination`, if known.
    pub fn cost(&self, provider: &str, destination: &Destination) -> Option<f64> {
        let table = self.costs.get(provider)?;
        country(destination)
            .and_then(|country| table.get(&country))
            .or_else(|| table.get("default"))
            .copied()
    }

    /// The providers of `channel` this notification may still try: the
    /// tenant's allowed ones that have not failed permanently for it, in
    /// the order it tries them.
    pub fn candidates(
        &self,
        state: &NotificationState,
        channel: Channel,
        destination: &Destination,
    ) -> Vec<String> {
        let allowed = self.tenant_providers.get(state.tenant_id.as_str());
        self.ordered(state, channel, destination)
            .into_iter()
            .filter(|p| allowed.is_none_or(|allowed| allowed.contains(p)))
            .filter(|p| {
                !state
                    .failed_routes
                    .iter()
                    .any(|(c, f)| *c == channel && f == p)
            })
            .collect()
    }

    /// The providers of `channel` in the order this notification tries them.
    fn ordered(
        &self,
        state: &NotificationState,
        channel: Channel,
        destination: &Destination,
    ) -> Vec<String> {
        let mut providers = self.channels.get(&channel).cloned().unwrap_or_default();
        let category = state.request.category.as_ref().map(|c| c.as_str());
        let marketing = category.is_some_and(|c| self.marketing_categories.iter().any(|m| m == c));
        if marketing {
            // Cheapest first; unknown costs last, keeping the configured order among equals.
            providers.sort_by(|a, b| {
                let cost = |p: &str| self.cost(p, destination).unwrap_or(f64::INFINITY);
                cost(a).total_cmp(&cost(b))
            });
        }
        providers
    }
}

/// Whether a provider can take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Ready,
    /// Its breaker is open: later, perhaps.
    Busy,
    /// Not configured, or cannot carry the channel.
    Missing,
}

/// Picks the route for the next attempt among the channels the recipient
/// can be reached on (`reach`, in the send's order; see `workers::audience`);
/// `availability` tells about each provider for a destination (a webhook's
/// endpoint has a breaker of its own).
pub fn next_route(
    state: &NotificationState,
    reach: &[(Channel, Destination)],
    routing: &RoutingConfig,
    mut availability: impl FnMut(&str, &Destination) -> Availability,
) -> RouteDecision {
    let mut blocked = false;
    for (channel, destination) in reach {
        let (channel, destination) = (*channel, destination.clone());
        let mut providers = routing.candidates(state, channel, &destination);
        // After a transient failure, start with the provider after the one that failed.
        if state.channel == Some(channel)
            && let Some(failed) = &state.last_failed_provider
            && let Some(index) = providers.iter().position(|p| p == failed)
        {
            let len = providers.len();
            providers.rotate_left((index + 1) % len);
        }
        for provider in providers {
            match availability(&provider, &destination) {
                Availability::Ready => {
                    return RouteDecision::Use(Route {
                        channel,
                        provider,
                        destination,
                    });
                }
                Availability::Busy => blocked = true,
                Availability::Missing => {}
            }
        }
    }
    if blocked {
        RouteDecision::Blocked
    } else {
        let channels: Vec<&str> = state.request.channels.iter().map(|c| c.as_str()).collect();
        RouteDecision::Exhausted(format!(
            "no provider can reach the recipient on {}: no address, no configured provider, or every route failed permanently",
            channels.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::domain::values::{NotificationId, TenantId};
    use crate::domain::{Aggregate, Notification, NotificationEvent, SendNotification};
    use crate::workers::audience::BatchAudience;

    fn state(input: serde_json::Value, failures: &[(&str, bool)]) -> NotificationState {
        let request = serde_json::from_value::<SendNotification>(input)
            .unwrap()
            .parse(Utc::now())
            .unwrap();
        let channel = request.channels[0];
        let mut events = vec![NotificationEvent::Requested {
            tenant_id: TenantId::parse("acme").unwrap(),
            notification_id: NotificationId::new(),
            request,
            requested_at: Utc::now(),
        }];
        for (n, (provider, permanent)) in failures.iter().enumerate() {
            events.push(NotificationEvent::DeliveryAttempted {
                attempt: n as u32 + 1,
                channel,
                provider: provider.to_string(),
            });
            events.push(NotificationEvent::DeliveryFailed {
                attempt: n as u32 + 1,
                provider: provider.to_string(),
                error: "x".into(),
                permanent: *permanent,
                retry_at: Some(Utc::now()),
            });
        }
        Notification::fold(&events).state().unwrap().clone()
    }

    fn sms(category: Option<&str>) -> serde_json::Value {
        json!({ "recipient": { "phone": "+33612345678", "email": "a@example.com" },
                "channels": ["sms", "email"], "content": { "text": "hi" }, "category": category })
    }

    fn routing() -> RoutingConfig {
        RoutingConfig {
            channels: BTreeMap::from([
                (Channel::Sms, vec!["sms-a".into(), "sms-b".into()]),
                (Channel::Email, vec!["mail".into()]),
            ]),
            costs: BTreeMap::from([
                (
                    "sms-a".into(),
                    BTreeMap::from([("default".into(), 0.05), ("FR".into(), 0.09)]),
                ),
                ("sms-b".into(), BTreeMap::from([("default".into(), 0.07)])),
            ]),
            ..RoutingConfig::default()
        }
    }

    fn provider(decision: RouteDecision) -> String {
        match decision {
            RouteDecision::Use(route) => format!("{}:{}", route.channel, route.provider),
            other => format!("{other:?}"),
        }
    }

    const READY: fn(&str, &Destination) -> Availability = |_, _| Availability::Ready;

    /// Routes for a notification without a stored profile or suppressions.
    fn route(
        state: &NotificationState,
        routing: &RoutingConfig,
        availability: impl FnMut(&str, &Destination) -> Availability,
    ) -> RouteDecision {
        let reach = BatchAudience::default().reach(state);
        next_route(state, &reach.routes, routing, availability)
    }

    #[test]
    fn takes_the_configured_order_then_the_next_provider_after_a_transient_failure() {
        assert_eq!(
            provider(route(&state(sms(None), &[]), &routing(), READY)),
            "sms:sms-a"
        );
        let after = state(sms(None), &[("sms-a", false)]);
        assert_eq!(provider(route(&after, &routing(), READY)), "sms:sms-b");
    }

    #[test]
    fn marketing_goes_cheapest_first_by_destination_country() {
        // sms-a costs 0.09 to France, sms-b 0.07.
        let state = state(sms(Some("marketing")), &[]);
        assert_eq!(provider(route(&state, &routing(), READY)), "sms:sms-b");
    }

    #[test]
    fn permanent_failures_move_to_the_next_channel_when_a_channel_is_used_up() {
        let state = state(sms(None), &[("sms-a", true), ("sms-b", true)]);
        assert_eq!(provider(route(&state, &routing(), READY)), "email:mail");
    }

    #[test]
    fn an_open_breaker_passes_over_and_only_busy_routes_mean_wait() {
        let state = state(sms(None), &[]);
        let busy_a = |p: &str, _: &Destination| {
            if p == "sms-a" {
                Availability::Busy
            } else {
                Availability::Ready
            }
        };
        assert_eq!(provider(route(&state, &routing(), busy_a)), "sms:sms-b");
        let all_busy = |_: &str, _: &Destination| Availability::Busy;
        assert_eq!(route(&state, &routing(), all_busy), RouteDecision::Blocked);
        let missing = |_: &str, _: &Destination| Availability::Missing;
        assert!(matches!(
            route(&state, &routing(), missing),
            RouteDecision::Exhausted(_)
        ));
    }

    #[test]
    fn a_tenant_allow_list_restricts_the_providers() {
        let mut routing = routing();
        routing
            .tenant_providers
            .insert("acme".into(), vec!["sms-b".into(), "mail".into()]);
        assert_eq!(
            provider(route(&state(sms(None), &[]), &routing, READY)),
            "sms:sms-b"
        );
    }
}
