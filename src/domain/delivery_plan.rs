//! The next step of a due notification, which the dispatcher records before
//! any provider call: count a dead worker's call as failed, record its
//! ranking, then expire it, let it wait (its send time, a retry, quiet hours,
//! a token bucket, open circuits), suppress it, attempt a route, or give up.
//!
//! What it needs from outside (where the recipient can be reached, their
//! quiet hours, which provider can take a call now) comes through
//! [`DeliveryFacts`], which the dispatcher answers from what it read for its
//! batch; routes are generic over the destination, a driver's type.

use chrono::{DateTime, TimeDelta, Utc};

use super::ranking::Ranking;
use super::values::Channel;
use super::{
    Aggregate, DomainError, Notification, NotificationCommand, NotificationEvent,
    NotificationState, NotificationStatus,
};

/// Where a notification may go, in the send's channel order.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach<D> {
    pub routes: Vec<(Channel, D)>,
    /// Why channels with an address were refused (opt-out, suppression).
    pub refusals: Vec<String>,
}

// Derived, it would ask `D: Default`, which no destination has.
impl<D> Default for Reach<D> {
    fn default() -> Self {
        Reach {
            routes: Vec::new(),
            refusals: Vec::new(),
        }
    }
}

/// One attempt's channel, provider instance and destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Route<D> {
    pub channel: Channel,
    pub provider: String,
    pub destination: D,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteDecision<D> {
    Use(Route<D>),
    /// Routes remain, but every one of them is unavailable right now.
    Blocked,
    /// Nothing can carry it: no address for any requested channel, no
    /// provider configured, or every route failed permanently.
    Exhausted(String),
}

/// A token bucket refused the attempt until `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttled {
    pub until: DateTime<Utc>,
    pub bucket: String,
}

/// What a planned notification does next, besides recording its events.
#[derive(Debug, Clone, PartialEq)]
pub enum Next<D> {
    /// Call this route now.
    Send(Route<D>),
    /// Held again for the reason already recorded: no event; its queue row
    /// comes due again at this time.
    Recheck(DateTime<Utc>),
    /// Nothing now: its events say what happened.
    Rest,
}

/// The events that move a notification on, its state after them, and what
/// it does next.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned<D> {
    pub events: Vec<NotificationEvent>,
    pub state: NotificationState,
    pub next: Next<D>,
}

/// What the plan asks about the world.
pub trait DeliveryFacts {
    /// Where a channel reaches the recipient.
    type Destination;

    /// The channels the recipient may be reached on, and why others were refused.
    fn reach(&self, state: &NotificationState) -> Reach<Self::Destination>;

    /// When the recipient's quiet hours end, if they hold the notification now.
    fn quiet_until(&self, state: &NotificationState, now: DateTime<Utc>) -> Option<DateTime<Utc>>;

    /// The route for the attempt among `routes`. Asked only when an attempt
    /// is due, as answering may take a half-open circuit's one probe call.
    fn next_route(
        &self,
        state: &NotificationState,
        routes: &[(Channel, Self::Destination)],
    ) -> RouteDecision<Self::Destination>;
}

/// When and how a due notification is planned.
#[derive(Debug, Clone)]
pub struct Occasion {
    pub now: DateTime<Utc>,
    /// A fresh verdict of the ranker, to record first.
    pub ranking: Option<Ranking>,
    /// The token buckets refused its attempt: it must wait instead.
    pub throttled: Option<Throttled>,
    /// How often a hold (throttle, open circuits) is looked at again.
    pub recheck: TimeDelta,
}

/// The events that move `notification` on, and what it does next.
pub fn plan<F: DeliveryFacts>(
    mut notification: Notification,
    occasion: Occasion,
    facts: &F,
) -> Result<Planned<F::Destination>, DomainError> {
    let Occasion {
        now,
        ranking,
        throttled,
        recheck,
    } = occasion;
    let mut events = Vec::new();
    // Returns how many events the command recorded.
    let mut decide = |notification: &mut Notification,
                      command: NotificationCommand|
     -> Result<usize, DomainError> {
        let decided = notification.decide(command, now)?;
        for event in &decided {
            notification.apply(event);
        }
        let count = decided.len();
        events.extend(decided);
        Ok(count)
    };
    // A hold looked at again every `recheck` is recorded only when it is
    // news (see `NotificationCommand::Schedule`); otherwise only its queue
    // row moves.
    let hold = |schedule_at: DateTime<Utc>, reason: String| NotificationCommand::Schedule {
        schedule_at,
        reason,
        recheck: Some(recheck),
    };
    let state = notification
        .state()
        .ok_or(DomainError::NotRequested)?
        .clone();
    let mut next = Next::Rest;
    // A claim of a notification still SENDING means its worker died mid-call:
    // the outcome is unknown, so count it as a transient failure and go on.
    if state.status == NotificationStatus::Sending {
        decide(
            &mut notification,
            NotificationCommand::RecordFailure {
                attempt: state.attempts,
                provider: state.provider.clone().unwrap_or_default(),
                error: "the worker's lease ran out before the provider answered; the outcome is unknown".into(),
                permanent: false,
                retry_at: Some(now),
            },
        )?;
    }
    if let Some(ranking) = ranking {
        decide(
            &mut notification,
            NotificationCommand::Rank {
                score: ranking.score,
                breakdown: ranking.breakdown,
                scorer: ranking.scorer,
                send_after: ranking.send_after,
            },
        )?;
    }
    let state = notification
        .state()
        .ok_or(DomainError::NotRequested)?
        .clone();
    if state.status.is_pending() {
        let reach = facts.reach(&state);
        if state.expires_at().is_some_and(|at| at <= now) {
            decide(&mut notification, NotificationCommand::Expire)?;
        } else if let Some(wait_until) = wait_until(&state, now) {
            // A retry's wait is already recorded by its DeliveryFailed.
            let recorded = state.status == NotificationStatus::Scheduled
                && state.schedule_at == Some(wait_until);
            if !recorded && state.retry_at.is_none_or(|retry_at| retry_at <= now) {
                decide(
                    &mut notification,
                    NotificationCommand::Schedule {
                        schedule_at: wait_until,
                        reason: "scheduled send time".into(),
                        recheck: None,
                    },
                )?;
            }
        } else if reach.routes.is_empty() && !reach.refusals.is_empty() {
            decide(
                &mut notification,
                NotificationCommand::Suppress {
                    reason: reach.refusals.join("; "),
                },
            )?;
        } else if let Some(until) = facts.quiet_until(&state, now) {
            decide(
                &mut notification,
                NotificationCommand::Schedule {
                    schedule_at: until,
                    reason: "the recipient's quiet hours".into(),
                    recheck: None,
                },
            )?;
        } else {
            match facts.next_route(&state, &reach.routes) {
                RouteDecision::Use(_) if let Some(throttled) = throttled => {
                    if state.expires_at().is_some_and(|at| at <= throttled.until) {
                        decide(&mut notification, NotificationCommand::Expire)?;
                    } else {
                        let reason = format!("throttled: {}", throttled.bucket);
                        if decide(&mut notification, hold(throttled.until, reason))? == 0 {
                            next = Next::Recheck(throttled.until);
                        }
                    }
                }
                RouteDecision::Use(chosen) => {
                    decide(
                        &mut notification,
                        NotificationCommand::AttemptDelivery {
                            channel: chosen.channel,
                            provider: chosen.provider.clone(),
                        },
                    )?;
                    next = Next::Send(chosen);
                }
                RouteDecision::Blocked => {
                    let until = now + recheck;
                    let reason = "every route that can carry it is unavailable (a provider's or the endpoint's circuit is open)";
                    if decide(&mut notification, hold(until, reason.into()))? == 0 {
                        next = Next::Recheck(until);
                    }
                }
                RouteDecision::Exhausted(reason) => {
                    let command = if state.status == NotificationStatus::RetryPending {
                        NotificationCommand::DeadLetter { reason }
                    } else {
                        NotificationCommand::Reject { reason }
                    };
                    decide(&mut notification, command)?;
                }
            }
        }
    }
    let state = notification
        .state()
        .ok_or(DomainError::NotRequested)?
        .clone();
    Ok(Planned {
        events,
        state,
        next,
    })
}

/// A future moment the notification must wait for (its schedule, the
/// ranker's `send_after`, a retry), if any.
fn wait_until(state: &NotificationState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    [state.schedule_at, state.send_after, state.retry_at]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
        .max()
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde_json::json;

    use super::*;
    use crate::domain::NotificationEvent as E;
    use crate::domain::test_fixtures::{attempted, failed, history, minute, ranked, requested, t0};

    const EMAIL: &str = "user@x.com";
    const PHONE: &str = "+447700900123";

    fn recheck() -> TimeDelta {
        TimeDelta::seconds(5)
    }

    fn by_email() -> Route<&'static str> {
        Route {
            channel: Channel::Email,
            provider: "console".into(),
            destination: EMAIL,
        }
    }

    /// What the plan learns: by default the fixture's recipient is reachable
    /// on both channels, outside quiet hours, and routing picks email.
    struct World {
        reach: Reach<&'static str>,
        quiet_until: Option<DateTime<Utc>>,
        route: RouteDecision<&'static str>,
        routing_asked: Cell<bool>,
    }

    impl Default for World {
        fn default() -> Self {
            World {
                reach: Reach {
                    routes: vec![(Channel::Email, EMAIL), (Channel::Sms, PHONE)],
                    refusals: vec![],
                },
                quiet_until: None,
                route: RouteDecision::Use(by_email()),
                routing_asked: Cell::new(false),
            }
        }
    }

    impl DeliveryFacts for World {
        type Destination = &'static str;

        fn reach(&self, _: &NotificationState) -> Reach<&'static str> {
            self.reach.clone()
        }

        fn quiet_until(&self, _: &NotificationState, _: DateTime<Utc>) -> Option<DateTime<Utc>> {
            self.quiet_until
        }

        fn next_route(
            &self,
            _: &NotificationState,
            routes: &[(Channel, &'static str)],
        ) -> RouteDecision<&'static str> {
            assert_eq!(routes, self.reach.routes, "routing chooses among the reach");
            self.routing_asked.set(true);
            self.route.clone()
        }
    }

    /// Given this history, in this world, when planned at `t0` (or `at`).
    fn given(events: impl IntoIterator<Item = NotificationEvent>) -> Given {
        let events: Vec<_> = events.into_iter().collect();
        Given {
            notification: Notification::fold(&events),
            occasion: Occasion {
                now: t0(),
                ranking: None,
                throttled: None,
                recheck: recheck(),
            },
            world: World::default(),
        }
    }

    struct Given {
        notification: Notification,
        occasion: Occasion,
        world: World,
    }

    impl Given {
        fn at(mut self, now: DateTime<Utc>) -> Self {
            self.occasion.now = now;
            self
        }

        fn ranked(mut self, ranking: Ranking) -> Self {
            self.occasion.ranking = Some(ranking);
            self
        }

        fn throttled_until(mut self, until: DateTime<Utc>) -> Self {
            self.occasion.throttled = Some(Throttled {
                until,
                bucket: "tenant:t_001".into(),
            });
            self
        }

        fn reach(mut self, reach: Reach<&'static str>) -> Self {
            self.world.reach = reach;
            self
        }

        fn quiet_until(mut self, until: DateTime<Utc>) -> Self {
            self.world.quiet_until = Some(until);
            self
        }

        fn routing_says(mut self, route: RouteDecision<&'static str>) -> Self {
            self.world.route = route;
            self
        }

        fn when_planned(self) -> Then {
            let outcome = plan(self.notification, self.occasion, &self.world);
            Then {
                outcome,
                routing_asked: self.world.routing_asked.get(),
            }
        }
    }

    struct Then {
        outcome: Result<Planned<&'static str>, DomainError>,
        routing_asked: bool,
    }

    impl Then {
        #[track_caller]
        fn then(
            self,
            events: impl IntoIterator<Item = NotificationEvent>,
            next: Next<&'static str>,
        ) {
            let planned = self.outcome.expect("planned");
            assert_eq!(planned.events, events.into_iter().collect::<Vec<_>>());
            assert_eq!(planned.next, next);
        }

        /// As `then`, and no provider's circuit was asked for a call.
        #[track_caller]
        fn then_without_routing(
            self,
            events: impl IntoIterator<Item = NotificationEvent>,
            next: Next<&'static str>,
        ) {
            assert!(!self.routing_asked, "routing was asked");
            self.then(events, next);
        }

        #[track_caller]
        fn then_error(self, expected: DomainError) {
            assert_eq!(self.outcome.map(|planned| planned.events), Err(expected));
        }
    }

    fn scheduled_for(at: DateTime<Utc>, reason: &str) -> NotificationEvent {
        E::Scheduled {
            schedule_at: at,
            reason: reason.into(),
        }
    }

    const BLOCKED: &str = "every route that can carry it is unavailable (a provider's or the endpoint's circuit is open)";

    #[test]
    fn a_due_notification_is_attempted_on_the_route_routing_chooses() {
        given([requested()])
            .when_planned()
            .then([attempted(1, Channel::Email)], Next::Send(by_email()));
    }

    #[test]
    fn a_fresh_ranking_is_recorded_before_the_attempt() {
        let ranking = Ranking {
            score: 0.9,
            breakdown: json!({"urgency": 0.9}),
            scorer: "rules".into(),
            send_after: None,
        };
        given([requested()]).ranked(ranking).when_planned().then(
            [ranked(), attempted(1, Channel::Email)],
            Next::Send(by_email()),
        );
    }

    #[test]
    fn a_ranking_that_delays_the_send_schedules_it() {
        let ranking = Ranking {
            score: 0.1,
            breakdown: json!({}),
            scorer: "rules".into(),
            send_after: Some(minute(10)),
        };
        given([requested()])
            .ranked(ranking)
            .when_planned()
            .then_without_routing(
                [
                    E::Ranked {
                        score: 0.1,
                        breakdown: json!({}),
                        scorer: "rules".into(),
                        send_after: Some(minute(10)),
                    },
                    scheduled_for(minute(10), "scheduled send time"),
                ],
                Next::Rest,
            );
    }

    #[test]
    fn a_claim_of_a_notification_still_sending_counts_the_lost_call_as_failed() {
        given([requested(), attempted(1, Channel::Email)])
            .at(minute(2))
            .when_planned()
            .then(
                [
                    E::DeliveryFailed {
                        attempt: 1,
                        provider: "console".into(),
                        error: "the worker's lease ran out before the provider answered; the outcome is unknown".into(),
                        permanent: false,
                        retry_at: Some(minute(2)),
                    },
                    attempted(2, Channel::Email),
                ],
                Next::Send(by_email()),
            );
    }

    #[test]
    fn a_notification_past_its_expiry_expires() {
        // The fixture's request lives an hour.
        given([requested()])
            .at(minute(60))
            .when_planned()
            .then_without_routing([E::Expired], Next::Rest);
    }

    #[test]
    fn a_send_time_to_come_waits_and_is_not_recorded_again() {
        given(history(NotificationStatus::Scheduled))
            .at(minute(1))
            .when_planned()
            .then_without_routing([], Next::Rest);
    }

    #[test]
    fn a_retry_waits_for_its_time_which_its_failure_recorded() {
        given(history(NotificationStatus::RetryPending))
            .at(t0() + TimeDelta::seconds(30))
            .when_planned()
            .then_without_routing([], Next::Rest);
    }

    #[test]
    fn a_recipient_refused_on_every_channel_with_an_address_is_suppressed() {
        given([requested()])
            .reach(Reach {
                routes: vec![],
                refusals: vec!["opted out of email".into(), "sms on the list".into()],
            })
            .when_planned()
            .then_without_routing(
                [E::Suppressed {
                    reason: "opted out of email; sms on the list".into(),
                }],
                Next::Rest,
            );
    }

    #[test]
    fn one_channel_left_is_enough_to_go_on() {
        given([requested()])
            .reach(Reach {
                routes: vec![(Channel::Email, EMAIL)],
                refusals: vec!["sms on the list".into()],
            })
            .when_planned()
            .then([attempted(1, Channel::Email)], Next::Send(by_email()));
    }

    #[test]
    fn quiet_hours_schedule_it_for_their_end() {
        given([requested()])
            .quiet_until(minute(30))
            .when_planned()
            .then_without_routing(
                [scheduled_for(minute(30), "the recipient's quiet hours")],
                Next::Rest,
            );
    }

    #[test]
    fn a_throttled_attempt_is_held_once_then_rechecked_quietly() {
        let until = t0() + TimeDelta::seconds(3);
        given([requested()])
            .throttled_until(until)
            .when_planned()
            .then(
                [scheduled_for(until, "throttled: tenant:t_001")],
                Next::Rest,
            );
        given([requested(), scheduled_for(t0(), "throttled: tenant:t_001")])
            .throttled_until(until)
            .when_planned()
            .then([], Next::Recheck(until));
    }

    #[test]
    fn a_throttle_lasting_past_expiry_expires_it() {
        given([requested()])
            .at(minute(59))
            .throttled_until(minute(61))
            .when_planned()
            .then([E::Expired], Next::Rest);
    }

    #[test]
    fn every_route_unavailable_holds_it_for_a_recheck() {
        let until = t0() + recheck();
        given([requested()])
            .routing_says(RouteDecision::Blocked)
            .when_planned()
            .then([scheduled_for(until, BLOCKED)], Next::Rest);
        given([requested(), scheduled_for(t0(), BLOCKED)])
            .routing_says(RouteDecision::Blocked)
            .when_planned()
            .then([], Next::Recheck(until));
    }

    #[test]
    fn no_route_left_rejects_a_first_try_and_dead_letters_a_retry() {
        let exhausted = || RouteDecision::Exhausted("no provider".into());
        given([requested()])
            .routing_says(exhausted())
            .when_planned()
            .then(
                [E::Rejected {
                    reason: "no provider".into(),
                }],
                Next::Rest,
            );
        given([
            requested(),
            attempted(1, Channel::Email),
            failed(1, Some(t0())),
        ])
        .at(minute(1))
        .routing_says(exhausted())
        .when_planned()
        .then(
            [E::DeadLettered {
                reason: "no provider".into(),
            }],
            Next::Rest,
        );
    }

    #[test]
    fn a_notification_no_longer_pending_is_left_alone() {
        given(history(NotificationStatus::Sent))
            .when_planned()
            .then_without_routing([], Next::Rest);
    }

    #[test]
    fn a_notification_never_requested_cannot_be_planned() {
        given([])
            .when_planned()
            .then_error(DomainError::NotRequested);
    }
}
