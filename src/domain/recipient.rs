//! Recipients: a stored profile (addresses, locale, timezone, segment, attributes) and preferences per category and channel.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Upsert | always; nothing when the profile is unchanged | RecipientUpserted |
//! | ChangePreferences | always; nothing for a change already in effect | one RecipientPreferenceChanged per change |
//!
//! A recipient's stream may begin with a preference change before any
//! profile exists: an unsubscribe from a notification sent to an id alone.
//!
//! A preference rule names a category or all of them, a channel or all of
//! them. The most specific rule decides: (category, channel), then
//! (category, *), then (*, channel), then (*, *); without any, a message is
//! allowed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::aggregate::Aggregate;
use super::domain_error::DomainError;
use super::quiet_hours::QuietHours;
use super::tagged_payload::upcast_current;
use super::validation_errors::ValidationErrors;
use super::values::{
    Category, Channel, EmailAddress, HttpUrl, JsonObject, Locale, NtfyTopic, PhoneNumber,
    PushTarget, RecipientId, Segment, Timezone,
};

/// The largest `attributes` object, serialised.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// The most preference changes one call may make.
pub const MAX_PREFERENCE_CHANGES: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientProfile {
    pub recipient_id: RecipientId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_target: Option<PushTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<HttpUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy_topic: Option<NtfyTopic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Timezone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<JsonObject>,
    /// Overrides the tenant's default window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

/// A quiet-hours window as received: two `HH:MM` times.
#[derive(Debug, Clone)]
pub struct QuietHoursInput {
    pub start: String,
    pub end: String,
}

/// A profile as received; [`parse`](Self::parse) is the only way to a
/// [`RecipientProfile`]. An upsert replaces the whole profile: a field left
/// out is cleared.
#[derive(Debug, Clone, Default)]
pub struct UpsertRecipient {
    pub id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub push_target: Option<String>,
    pub webhook_url: Option<String>,
    pub ntfy_topic: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub segment: Option<String>,
    pub attributes: Option<Value>,
    pub quiet_hours: Option<QuietHoursInput>,
}

impl UpsertRecipient {
    /// Every refused field at once, with its path.
    pub fn parse(self) -> Result<RecipientProfile, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let recipient_id = errors.check("id", RecipientId::parse(&self.id));
        let email = errors.optional("email", self.email.as_deref(), EmailAddress::parse);
        let phone = errors.optional("phone", self.phone.as_deref(), PhoneNumber::parse);
        let push_target = errors.optional(
            "push_target",
            self.push_target.as_deref(),
            PushTarget::parse,
        );
        let webhook_url =
            errors.optional("webhook_url", self.webhook_url.as_deref(), HttpUrl::parse);
        let ntfy_topic =
            errors.optional("ntfy_topic", self.ntfy_topic.as_deref(), NtfyTopic::parse);
        let locale = errors.optional("locale", self.locale.as_deref(), Locale::parse);
        let timezone = errors.optional("timezone", self.timezone.as_deref(), Timezone::parse);
        let segment = errors.optional("segment", self.segment.as_deref(), Segment::parse);
        let attributes = self.attributes.and_then(|attributes| {
            errors.check(
                "attributes",
                JsonObject::parse(attributes, MAX_ATTRIBUTES_BYTES),
            )
        });
        let quiet_hours = self.quiet_hours.and_then(|window| {
            QuietHours::check(
                &mut errors,
                "quiet_hours.start",
                "quiet_hours.end",
                &window.start,
                &window.end,
            )
        });
        match recipient_id {
            Some(recipient_id) if errors.is_empty() => Ok(RecipientProfile {
                recipient_id,
                email,
                phone,
                push_target,
                webhook_url,
                ntfy_topic,
                locale,
                timezone,
                segment,
                attributes,
                quiet_hours,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceChange {
    /// `None`: every category.
    pub category: Option<Category>,
    /// `None`: every channel.
    pub channel: Option<Channel>,
    pub opted_in: bool,
}

/// A preference change as received.
#[derive(Debug, Clone)]
pub struct PreferenceChangeInput {
    pub category: Option<String>,
    pub channel: Option<Channel>,
    pub opted_in: bool,
}

/// Parses a list of changes under `changes[i]`: at least one, at most
/// [`MAX_PREFERENCE_CHANGES`], each rule named once.
pub fn parse_preference_changes(
    inputs: Vec<PreferenceChangeInput>,
) -> Result<Vec<PreferenceChange>, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if inputs.is_empty() {
        errors.add("changes", "must name at least one change");
    } else if inputs.len() > MAX_PREFERENCE_CHANGES {
        errors.add(
            "changes",
            format!("must hold at most {MAX_PREFERENCE_CHANGES} changes"),
        );
    }
    let mut changes: Vec<PreferenceChange> = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let path = format!("changes[{index}].category");
        let Ok(category) = input
            .category
            .as_deref()
            .map(Category::parse)
            .transpose()
            .map_err(|error| errors.add(path, error.to_string()))
        else {
            continue;
        };
        if let Some(first) = changes
            .iter()
            .position(|c| c.category == category && c.channel == input.channel)
        {
            errors.add(
                format!("changes[{index}]"),
                format!("names the same category and channel as changes[{first}]"),
            );
        }
        changes.push(PreferenceChange {
            category,
            channel: input.channel,
            opted_in: input.opted_in,
        });
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(errors)
    }
}

/// Who made a preference change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferenceSource {
    /// The tenant, through the API.
    Api,
    /// The recipient, on a signed preferences page.
    SignedLink,
    /// The recipient, by an unsubscribe link or a one-click List-Unsubscribe.
    Unsubscribe,
}

/// One rule in effect, with who set it and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceRule {
    pub category: Option<Category>,
    pub channel: Option<Channel>,
    pub opted_in: bool,
    pub source: PreferenceSource,
    pub changed_at: DateTime<Utc>,
}

type RuleKey = (Option<Category>, Option<Channel>);

/// A recipient's opt-ins and opt-outs; `Default` has none and allows all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<PreferenceRule>", into = "Vec<PreferenceRule>")]
pub struct Preferences {
    rules: BTreeMap<RuleKey, PreferenceRule>,
}

impl Preferences {
    /// Whether a message of `category` may go by `channel`: the most specific
    /// rule decides, and without any rule it may.
    pub fn allows(&self, category: Option<&Category>, channel: Channel) -> bool {
        let specific = category.into_iter().flat_map(|category| {
            [
                (Some(category.clone()), Some(channel)),
                (Some(category.clone()), None),
            ]
        });
        specific
            .chain([(None, Some(channel)), (None, None)])
            .find_map(|key| self.rules.get(&key))
            .is_none_or(|rule| rule.opted_in)
    }

    /// The rules in effect, all-categories first, then by category and channel.
    pub fn rules(&self) -> impl Iterator<Item = &PreferenceRule> {
        self.rules.values()
    }

    fn opted_in(&self, category: &Option<Category>, channel: Option<Channel>) -> Option<bool> {
        self.rules
            .get(&(category.clone(), channel))
            .map(|rule| rule.opted_in)
    }

    fn record(&mut self, rule: PreferenceRule) {
        self.rules
            .insert((rule.category.clone(), rule.channel), rule);
    }
}

impl From<Vec<PreferenceRule>> for Preferences {
    fn from(rules: Vec<PreferenceRule>) -> Self {
        let mut preferences = Preferences::default();
        for rule in rules {
            preferences.record(rule);
        }
        preferences
    }
}

impl From<Preferences> for Vec<PreferenceRule> {
    fn from(preferences: Preferences) -> Self {
        preferences.rules.into_values().collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum RecipientEvent {
    #[serde(rename = "RecipientUpserted")]
    Upserted { profile: Box<RecipientProfile> },
    #[serde(rename = "RecipientPreferenceChanged")]
    PreferenceChanged {
        recipient_id: RecipientId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<Category>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<Channel>,
        opted_in: bool,
        source: PreferenceSource,
        changed_at: DateTime<Utc>,
    },
}

impl RecipientEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 2] = ["RecipientUpserted", "RecipientPreferenceChanged"];

    pub fn event_type(&self) -> &'static str {
        match self {
            RecipientEvent::Upserted { .. } => "RecipientUpserted",
            RecipientEvent::PreferenceChanged { .. } => "RecipientPreferenceChanged",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<RecipientEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecipientCommand {
    Upsert(Box<RecipientProfile>),
    ChangePreferences {
        recipient_id: RecipientId,
        changes: Vec<PreferenceChange>,
        source: PreferenceSource,
    },
}

/// A recipient's state; `Default` is one with no history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recipient {
    profile: Option<RecipientProfile>,
    preferences: Preferences,
}

impl Recipient {
    pub fn profile(&self) -> Option<&RecipientProfile> {
        self.profile.as_ref()
    }

    pub fn preferences(&self) -> &Preferences {
        &self.preferences
    }
}

impl Aggregate for Recipient {
    type Command = RecipientCommand;
    type Event = RecipientEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &RecipientEvent) {
        match event {
            RecipientEvent::Upserted { profile } => self.profile = Some(profile.as_ref().clone()),
            RecipientEvent::PreferenceChanged {
                category,
                channel,
                opted_in,
                source,
                changed_at,
                ..
            } => self.preferences.record(PreferenceRule {
                category: category.clone(),
                channel: *channel,
                opted_in: *opted_in,
                source: *source,
                changed_at: *changed_at,
            }),
        }
    }

    fn decide(
        &self,
        command: RecipientCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<RecipientEvent>, DomainError> {
        match command {
            RecipientCommand::Upsert(profile) => {
                if self.profile.as_ref() == Some(profile.as_ref()) {
                    return Ok(Vec::new());
                }
                Ok(vec![RecipientEvent::Upserted { profile }])
            }
            RecipientCommand::ChangePreferences {
                recipient_id,
                changes,
                source,
            } => {
                // Changes apply in order, so a later one in the list wins.
                let mut preferences = self.preferences.clone();
                let mut events = Vec::new();
                for change in changes {
                    if preferences.opted_in(&change.category, change.channel)
                        == Some(change.opted_in)
                    {
                        continue;
                    }
                    let rule = PreferenceRule {
                        category: change.category,
                        channel: change.channel,
                        opted_in: change.opted_in,
                        source,
                        changed_at: now,
                    };
                    events.push(RecipientEvent::PreferenceChanged {
                        recipient_id: recipient_id.clone(),
                        category: rule.category.clone(),
                        channel: rule.channel,
                        opted_in: rule.opted_in,
                        source,
                        changed_at: now,
                    });
                    preferences.record(rule);
                }
                Ok(events)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::given_when_then::given;
    use crate::domain::test_fixtures::t0;

    fn id() -> RecipientId {
        RecipientId::parse("user-42").unwrap()
    }

    fn category(raw: &str) -> Option<Category> {
        Some(Category::parse(raw).unwrap())
    }

    fn input() -> UpsertRecipient {
        UpsertRecipient {
            id: "user-42".into(),
            email: Some("ada@example.com".into()),
            locale: Some("fr-CA".into()),
            timezone: Some("Europe/Paris".into()),
            segment: Some("premium".into()),
            attributes: Some(json!({"plan": "pro"})),
            quiet_hours: Some(QuietHoursInput {
                start: "22:00".into(),
                end: "07:00".into(),
            }),
            ..Default::default()
        }
    }

    fn profile() -> RecipientProfile {
        input().parse().unwrap()
    }

    fn change(
        category: Option<Category>,
        channel: Option<Channel>,
        opted_in: bool,
    ) -> PreferenceChange {
        PreferenceChange {
            category,
            channel,
            opted_in,
        }
    }

    fn changed(
        category: Option<Category>,
        channel: Option<Channel>,
        opted_in: bool,
        source: PreferenceSource,
    ) -> RecipientEvent {
        RecipientEvent::PreferenceChanged {
            recipient_id: id(),
            category,
            channel,
            opted_in,
            source,
            changed_at: t0(),
        }
    }

    fn change_preferences(
        changes: Vec<PreferenceChange>,
        source: PreferenceSource,
    ) -> RecipientCommand {
        RecipientCommand::ChangePreferences {
            recipient_id: id(),
            changes,
            source,
        }
    }

    #[test]
    fn upsert_records_the_profile_once() {
        let upserted = RecipientEvent::Upserted {
            profile: Box::new(profile()),
        };
        given::<Recipient>([])
            .when(RecipientCommand::Upsert(Box::new(profile())))
            .then([upserted.clone()]);
        given::<Recipient>([upserted.clone()])
            .when(RecipientCommand::Upsert(Box::new(profile())))
            .then_nothing();
        let moved = RecipientProfile {
            timezone: Some(Timezone::parse("America/New_York").unwrap()),
            ..profile()
        };
        given::<Recipient>([upserted])
            .when(RecipientCommand::Upsert(Box::new(moved.clone())))
            .then([RecipientEvent::Upserted {
                profile: Box::new(moved),
            }]);
    }

    #[test]
    fn a_preference_change_may_come_before_any_profile() {
        given::<Recipient>([])
            .when(change_preferences(
                vec![change(None, Some(Channel::Email), false)],
                PreferenceSource::Unsubscribe,
            ))
            .then([changed(
                None,
                Some(Channel::Email),
                false,
                PreferenceSource::Unsubscribe,
            )]);
        let recipient = Recipient::fold(&[changed(
            None,
            Some(Channel::Email),
            false,
            PreferenceSource::Unsubscribe,
        )]);
        assert!(recipient.profile().is_none());
        assert!(!recipient.preferences().allows(None, Channel::Email));
    }

    #[test]
    fn a_change_already_in_effect_records_nothing_and_the_last_of_a_batch_wins() {
        let out = changed(category("billing"), None, false, PreferenceSource::Api);
        given::<Recipient>([out.clone()])
            .when(change_preferences(
                vec![change(category("billing"), None, false)],
                PreferenceSource::SignedLink,
            ))
            .then_nothing();
        given::<Recipient>([out])
            .when(change_preferences(
                vec![
                    change(category("billing"), None, true),
                    change(category("billing"), None, false),
                ],
                PreferenceSource::SignedLink,
            ))
            .then([
                changed(
                    category("billing"),
                    None,
                    true,
                    PreferenceSource::SignedLink,
                ),
                changed(
                    category("billing"),
                    None,
                    false,
                    PreferenceSource::SignedLink,
                ),
            ]);
    }

    #[test]
    fn the_most_specific_rule_decides() {
        let none = Preferences::default();
        assert!(none.allows(category("billing").as_ref(), Channel::Sms));
        assert!(none.allows(None, Channel::Email));

        let recipient = Recipient::fold(&[
            changed(None, None, false, PreferenceSource::Api),
            changed(None, Some(Channel::Email), true, PreferenceSource::Api),
            changed(category("billing"), None, true, PreferenceSource::Api),
            changed(
                category("billing"),
                Some(Channel::Sms),
                false,
                PreferenceSource::Api,
            ),
        ]);
        let preferences = recipient.preferences();
        let billing = category("billing");
        // (billing, sms) beats (billing, *).
        assert!(!preferences.allows(billing.as_ref(), Channel::Sms));
        // (billing, *) beats (*, push) absent and (*, *).
        assert!(preferences.allows(billing.as_ref(), Channel::Push));
        // (*, email) beats (*, *).
        assert!(preferences.allows(category("marketing").as_ref(), Channel::Email));
        // (*, *) decides what nothing more specific names.
        assert!(!preferences.allows(category("marketing").as_ref(), Channel::Push));
        assert!(!preferences.allows(None, Channel::Sms));
        assert!(preferences.allows(None, Channel::Email));
        // (billing, *) beats (*, email) too: the category is more specific.
        let strict = Recipient::fold(&[
            changed(None, Some(Channel::Email), true, PreferenceSource::Api),
            changed(category("billing"), None, false, PreferenceSource::Api),
        ]);
        assert!(
            !strict
                .preferences()
                .allows(billing.as_ref(), Channel::Email)
        );
    }

    #[test]
    fn preferences_keep_their_rules_through_serde() {
        let recipient = Recipient::fold(&[
            changed(None, None, false, PreferenceSource::Unsubscribe),
            changed(
                category("billing"),
                Some(Channel::Sms),
                true,
                PreferenceSource::Api,
            ),
        ]);
        let stored = serde_json::to_value(recipient.preferences()).unwrap();
        let read: Preferences = serde_json::from_value(stored).unwrap();
        assert_eq!(&read, recipient.preferences());
        assert_eq!(read.rules().count(), 2);
    }

    #[test]
    fn parse_names_every_bad_field() {
        let errors = UpsertRecipient {
            id: " ".into(),
            email: Some("not-an-email".into()),
            phone: Some("12".into()),
            webhook_url: Some("ftp://example.com".into()),
            timezone: Some("Mars/Base".into()),
            segment: Some("Premium!".into()),
            attributes: Some(json!([1, 2])),
            quiet_hours: Some(QuietHoursInput {
                start: "25:00".into(),
                end: "07:00".into(),
            }),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        for path in [
            "id",
            "email",
            "phone",
            "webhook_url",
            "timezone",
            "segment",
            "attributes",
            "quiet_hours.start",
        ] {
            assert_eq!(errors.at(path).len(), 1, "{path}: {errors}");
        }
        assert!(errors.at("quiet_hours.end").is_empty());
        let minimal = UpsertRecipient {
            id: "user-42".into(),
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert_eq!(minimal.email, None);
        assert_eq!(minimal.quiet_hours, None);
    }

    #[test]
    fn parse_preference_changes_refuses_empty_repeated_and_bad_categories() {
        assert_eq!(
            parse_preference_changes(Vec::new())
                .unwrap_err()
                .at("changes"),
            ["must name at least one change"]
        );
        let input = |category: Option<&str>, channel| PreferenceChangeInput {
            category: category.map(Into::into),
            channel,
            opted_in: false,
        };
        let errors = parse_preference_changes(vec![
            input(Some("billing"), Some(Channel::Email)),
            input(Some("Billing!"), None),
            input(Some("billing"), Some(Channel::Email)),
        ])
        .unwrap_err();
        assert_eq!(errors.at("changes[1].category").len(), 1);
        assert_eq!(
            errors.at("changes[2]"),
            ["names the same category and channel as changes[0]"]
        );
        let changes =
            parse_preference_changes(vec![input(None, None), input(Some("billing"), None)])
                .unwrap();
        assert_eq!(
            changes,
            [
                change(None, None, false),
                change(category("billing"), None, false)
            ]
        );
    }

    #[test]
    fn every_event_round_trips_through_upcast() {
        for event in [
            RecipientEvent::Upserted {
                profile: Box::new(profile()),
            },
            changed(
                category("billing"),
                Some(Channel::InApp),
                false,
                PreferenceSource::SignedLink,
            ),
            changed(None, None, true, PreferenceSource::Api),
        ] {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(
                RecipientEvent::upcast(event.event_type(), RecipientEvent::SCHEMA_VERSION, payload),
                Ok(event)
            );
        }
    }
}
