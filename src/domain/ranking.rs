//! How urgent a requested notification is: the rule-based score the ranker
//! records in `NotificationRanked` (a priority score with a
//! `scoreBreakdown`), and when a low score waits (`send_after`).
//!
//! The score is a sum of terms, so the breakdown adds up to it:
//!
//! ```text
//! score = priority + category + segment + channel + age
//! age   = -age_weight * (1 - 2^(-source_event_age / age_half_life))
//! ```
//!
//! With the default weights it lies in about 0..1, the scale an LLM scorer
//! answers in, so scores from either scorer sort together.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::notification::NotificationState;
use super::validation_errors::ValidationErrors;
use super::values::{Category, Channel, Priority, Segment};

/// Weights beyond this could add up to infinity, which no event can store.
const MAX_WEIGHT: f64 = 1e6;

/// The weights of the rule-based score (`[ranking.rules]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankingRules {
    pub priority: PriorityWeights,
    /// By category (`billing.invoice = 0.2`); an unlisted category adds 0.
    pub categories: BTreeMap<Category, f64>,
    /// By the source event's audience segment (`premium = 0.1`); unlisted adds 0.
    pub segments: BTreeMap<Segment, f64>,
    /// By the first (preferred) requested channel; unlisted adds 0.
    pub channels: BTreeMap<Channel, f64>,
    /// The most an old source event can lose; a notification made from an
    /// event long past is worth less than one about something happening now.
    pub age_weight: f64,
    /// The source event's age at which half of `age_weight` is lost; 0 turns
    /// the age term off.
    pub age_half_life_seconds: f64,
    /// Scores below a threshold wait before they are sent; off unless set.
    pub defer: Option<Deferral>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityWeights {
    pub high: f64,
    pub normal: f64,
    pub low: f64,
}

/// `sendAfter`: a low-value notification waits `seconds`, so it
/// leaves room for urgent ones and can be batched or cancelled meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deferral {
    /// Scores strictly below this are deferred.
    pub below: f64,
    pub seconds: u32,
}

impl Default for RankingRules {
    fn default() -> Self {
        RankingRules {
            priority: PriorityWeights::default(),
            categories: BTreeMap::new(),
            segments: BTreeMap::new(),
            channels: BTreeMap::new(),
            age_weight: 0.3,
            age_half_life_seconds: 3600.0,
            defer: None,
        }
    }
}

impl Default for PriorityWeights {
    fn default() -> Self {
        PriorityWeights {
            high: 0.9,
            normal: 0.6,
            low: 0.3,
        }
    }
}

/// A scorer's verdict, what `NotificationRanked` records.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// Higher is more urgent; always finite.
    pub score: f64,
    /// Each term's contribution (and the scorer's notes); a few hundred bytes.
    pub breakdown: serde_json::Value,
    /// `rules`, or `llm:<model>` when a language model decided.
    pub scorer: String,
    pub send_after: Option<DateTime<Utc>>,
}

impl RankingRules {
    /// Refuses weights that are not finite or so large their sum could
    /// overflow, so every score [`rank_by_rules`] gives can be stored.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let mut weight = |path: String, value: f64| {
            if !(value.is_finite() && value.abs() <= MAX_WEIGHT) {
                errors.add(
                    path,
                    format!("must be a number between -{MAX_WEIGHT} and {MAX_WEIGHT}"),
                );
            }
        };
        weight("priority.high".into(), self.priority.high);
        weight("priority.normal".into(), self.priority.normal);
        weight("priority.low".into(), self.priority.low);
        for (category, value) in &self.categories {
            weight(format!("categories.{category}"), *value);
        }
        for (segment, value) in &self.segments {
            weight(format!("segments.{segment}"), *value);
        }
        for (channel, value) in &self.channels {
            weight(format!("channels.{channel}"), *value);
        }
        weight("age_weight".into(), self.age_weight);
        if let Some(defer) = &self.defer {
            weight("defer.below".into(), defer.below);
        }
        if !(self.age_half_life_seconds.is_finite() && self.age_half_life_seconds >= 0.0) {
            errors.add(
                "age_half_life_seconds",
                "must be a finite number of seconds, 0 or more",
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// When a notification scored `score` should wait until, if at all.
    ///
    /// HIGH priority never waits (an OTP must not), and a wait that would
    /// reach the notification's expiry is skipped: late beats never.
    pub fn send_after(
        &self,
        state: &NotificationState,
        score: f64,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let defer = self.defer.as_ref()?;
        if score >= defer.below || state.request.priority == Priority::High {
            return None;
        }
        let at = now.checked_add_signed(TimeDelta::seconds(i64::from(defer.seconds)))?;
        match state.expires_at() {
            Some(expires_at) if at >= expires_at => None,
            _ => Some(at),
        }
    }
}

/// The rule-based score of `state` at `now`; `rules` should have passed
/// [`RankingRules::validate`].
pub fn rank_by_rules(
    state: &NotificationState,
    rules: &RankingRules,
    now: DateTime<Utc>,
) -> Ranking {
    let request = &state.request;
    let priority = match request.priority {
        Priority::High => rules.priority.high,
        Priority::Normal => rules.priority.normal,
        Priority::Low => rules.priority.low,
    };
    let category = request
        .category
        .as_ref()
        .and_then(|category| rules.categories.get(category))
        .copied()
        .unwrap_or(0.0);
    let origin = request.source_event.as_ref();
    let segment = origin
        .and_then(|origin| origin.segment.as_ref())
        .and_then(|segment| rules.segments.get(segment))
        .copied()
        .unwrap_or(0.0);
    let channel = request
        .channels
        .first()
        .and_then(|channel| rules.channels.get(channel))
        .copied()
        .unwrap_or(0.0);
    let age = match origin {
        Some(origin) if rules.age_half_life_seconds > 0.0 => {
            let age_seconds = seconds_between(origin.occurred_at, now);
            -rules.age_weight * (1.0 - (-age_seconds / rules.age_half_life_seconds).exp2())
        }
        _ => 0.0,
    };
    let score = priority + category + segment + channel + age;
    let send_after = rules.send_after(state, score, now);
    Ranking {
        score,
        breakdown: json!({
            "priority": priority,
            "category": category,
            "segment": segment,
            "channel": channel,
            "age": age,
        }),
        scorer: "rules".into(),
        send_after,
    }
}

/// Seconds from `earlier` to `later`, 0 if `earlier` is in the future (a
/// source's clock running ahead must not make its events fresher than now).
pub fn seconds_between(earlier: DateTime<Utc>, later: DateTime<Utc>) -> f64 {
    (later - earlier).num_milliseconds().max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::domain::Aggregate;
    use crate::domain::notification::Notification;
    use crate::domain::notification_event::NotificationEvent;
    use crate::domain::send_notification::SendNotification;
    use crate::domain::test_fixtures::{minute, notification_id, t0, tenant};

    /// A notification requested at t0 from a source event `age_minutes` old.
    fn state(priority: &str, age_minutes: i64) -> NotificationState {
        let request = serde_json::from_value::<SendNotification>(json!({
            "recipient": {"id": "user-1", "email": "user@x.com", "phone": "+447700900123"},
            "channels": ["sms", "email"],
            "priority": priority,
            "content": {"text": "hello"},
            "category": "billing",
            "ttl_seconds": 7200,
            "source_event": {"event_id": "e-1", "source": "shop",
                             "occurred_at": minute(-age_minutes), "segment": "premium"}
        }))
        .unwrap()
        .parse(t0())
        .unwrap();
        let mut notification = Notification::default();
        notification.apply(&NotificationEvent::Requested {
            tenant_id: tenant(),
            notification_id: notification_id(),
            request,
            requested_at: t0(),
        });
        notification.state().unwrap().clone()
    }

    fn rules() -> RankingRules {
        toml::from_str(
            r#"
            age_weight = 0.4
            age_half_life_seconds = 600
            [priority]
            high = 1.0
            [categories]
            billing = 0.2
            [segments]
            premium = 0.1
            [channels]
            sms = 0.05
            "#,
        )
        .unwrap()
    }

    #[test]
    fn the_breakdown_adds_up_to_the_score() {
        let ranking = rank_by_rules(&state("normal", 10), &rules(), t0());

        assert_eq!(ranking.scorer, "rules");
        assert_eq!(ranking.breakdown["priority"], 0.6);
        assert_eq!(ranking.breakdown["category"], 0.2);
        assert_eq!(ranking.breakdown["segment"], 0.1);
        assert_eq!(ranking.breakdown["channel"], 0.05);
        // One half-life old: half of the age weight is lost.
        assert!((ranking.breakdown["age"].as_f64().unwrap() + 0.2).abs() < 1e-9);
        let sum: f64 = ranking
            .breakdown
            .as_object()
            .unwrap()
            .values()
            .map(|term| term.as_f64().unwrap())
            .sum();
        assert!((ranking.score - sum).abs() < 1e-9);
        assert!(ranking.breakdown.to_string().len() < 200);
    }

    #[test]
    fn unlisted_features_and_no_source_event_add_nothing() {
        let mut state = state("low", 0);
        state.request.category = None;
        state.request.source_event = None;
        state.request.channels = vec![Channel::Email];

        let ranking = rank_by_rules(&state, &rules(), minute(600));

        assert_eq!(ranking.score, 0.3);
        assert_eq!(ranking.send_after, None);
    }

    #[test]
    fn a_source_event_from_the_future_counts_as_fresh() {
        let ranking = rank_by_rules(&state("normal", -30), &rules(), t0());

        assert_eq!(ranking.breakdown["age"], 0.0);
    }

    #[test]
    fn a_zero_half_life_turns_the_age_term_off() {
        let rules = RankingRules {
            age_half_life_seconds: 0.0,
            ..rules()
        };

        let ranking = rank_by_rules(&state("normal", 10_000), &rules, t0());

        assert_eq!(ranking.breakdown["age"], 0.0);
    }

    #[test]
    fn low_scores_wait_when_deferral_is_on() {
        let rules = RankingRules {
            defer: Some(Deferral {
                below: 0.5,
                seconds: 600,
            }),
            ..RankingRules::default()
        };

        let low = rank_by_rules(&state("low", 0), &rules, t0());
        let normal = rank_by_rules(&state("normal", 0), &rules, t0());

        assert_eq!(low.send_after, Some(minute(10)));
        assert_eq!(normal.send_after, None);
    }

    #[test]
    fn high_priority_and_near_expiry_never_wait() {
        let rules = RankingRules {
            priority: PriorityWeights {
                high: -1.0,
                ..PriorityWeights::default()
            },
            defer: Some(Deferral {
                below: 0.5,
                seconds: 600,
            }),
            ..RankingRules::default()
        };

        let high = rank_by_rules(&state("high", 0), &rules, t0());
        // The fixture expires two hours after t0; ten minutes more would pass it.
        let near_expiry = rank_by_rules(&state("low", 0), &rules, minute(115));

        assert_eq!(high.send_after, None);
        assert_eq!(near_expiry.send_after, None);
    }

    #[test]
    fn deferral_is_off_by_default() {
        let ranking = rank_by_rules(&state("low", 100_000), &RankingRules::default(), t0());

        assert_eq!(ranking.send_after, None);
    }

    #[test]
    fn config_refuses_unknown_keys_and_bad_weights() {
        assert!(toml::from_str::<RankingRules>("urgency = 1.0").is_err());
        assert!(toml::from_str::<RankingRules>("[priority]\nurgent = 1.0").is_err());
        assert!(toml::from_str::<RankingRules>("[categories]\n\"Not A Slug\" = 1.0").is_err());

        let bad: RankingRules = toml::from_str(
            "age_half_life_seconds = -1\n[priority]\nhigh = nan\n[channels]\nsms = inf",
        )
        .unwrap();
        let errors = bad.validate().unwrap_err();

        assert_eq!(errors.errors().len(), 3, "{errors}");
        assert_eq!(errors.at("priority.high").len(), 1);
        assert_eq!(errors.at("channels.sms").len(), 1);
        assert_eq!(errors.at("age_half_life_seconds").len(), 1);
        assert_eq!(RankingRules::default().validate(), Ok(()));
        assert_eq!(rules().validate(), Ok(()));
    }

    fn weight() -> impl Strategy<Value = f64> {
        -MAX_WEIGHT..=MAX_WEIGHT
    }

    /// Any rules that pass validation.
    fn valid_rules() -> impl Strategy<Value = RankingRules> {
        (
            prop::array::uniform3(weight()),
            prop::array::uniform4(weight()),
            0.0..1e9f64,
            prop::option::of((weight(), 0u32..1_000_000)),
        )
            .prop_map(
                |(
                    [high, normal, low],
                    [category, segment, channel, age_weight],
                    half_life,
                    defer,
                )| {
                    RankingRules {
                        priority: PriorityWeights { high, normal, low },
                        categories: BTreeMap::from([(
                            Category::parse("billing").unwrap(),
                            category,
                        )]),
                        segments: BTreeMap::from([(Segment::parse("premium").unwrap(), segment)]),
                        channels: BTreeMap::from([(Channel::Sms, channel)]),
                        age_weight,
                        age_half_life_seconds: half_life,
                        defer: defer.map(|(below, seconds)| Deferral { below, seconds }),
                    }
                },
            )
    }

    fn priority() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["high", "normal", "low"])
    }

    proptest! {
        #[test]
        fn every_score_is_finite_and_storable(
            rules in valid_rules(),
            priority in priority(),
            age_minutes in -1_000_000i64..100_000_000,
        ) {
            prop_assert!(rules.validate().is_ok());

            let ranking = rank_by_rules(&state(priority, age_minutes), &rules, t0());

            prop_assert!(ranking.score.is_finite());
            prop_assert!(ranking.breakdown.to_string().len() <= crate::domain::MAX_BREAKDOWN_BYTES);
            if let Some(send_after) = ranking.send_after {
                prop_assert!(send_after >= t0());
            }
        }

        #[test]
        fn the_score_follows_the_priority_weights(
            rules in valid_rules(),
            age_minutes in 0i64..100_000,
        ) {
            let mut weights = [rules.priority.high, rules.priority.normal, rules.priority.low];
            weights.sort_by(|a, b| b.total_cmp(a));
            let [high, normal, low] = weights;
            let rules = RankingRules { priority: PriorityWeights { high, normal, low }, ..rules };

            let score = |priority| rank_by_rules(&state(priority, age_minutes), &rules, t0()).score;

            prop_assert!(score("high") >= score("normal"));
            prop_assert!(score("normal") >= score("low"));
        }

        #[test]
        fn an_older_source_event_never_scores_higher(
            rules in valid_rules(),
            priority in priority(),
            age_minutes in 0i64..1_000_000,
            older_by in 0i64..1_000_000,
        ) {
            let rules = RankingRules { age_weight: rules.age_weight.abs(), ..rules };

            let newer = rank_by_rules(&state(priority, age_minutes), &rules, t0());
            let older = rank_by_rules(&state(priority, age_minutes + older_by), &rules, t0());

            prop_assert!(older.score <= newer.score);
        }
    }
}
