//! A recipient's in-app feed: the items are in-app deliveries (a
//! `NotificationSent` after a `DeliveryAttempted` on the `in_app` channel),
//! and what the recipient does with them is recorded here, as
//! `InAppItemsMarked` events on the feed's own stream, so the `inapp_feed`
//! read model is a fold of the log like any other.
//!
//! Every mark is recorded as asked, even when an item already has that
//! state: the read model that could tell lags the log, and a suppressed
//! "no-op" decided on a stale state would lose the recipient's last word.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::domain_error::DomainError;
use super::tagged_payload::upcast_current;
use super::validation_errors::ValidationErrors;
use super::values::{NotificationId, RecipientId};

/// The most items one `markInAppItems` call names.
pub const MAX_MARK_IDS: usize = 100;
/// The most items one event lists; marking more appends several events.
pub const MAX_IDS_PER_EVENT: usize = 1_000;

/// Where an item stands for its recipient; it arrives unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InAppItemState {
    Unread,
    Read,
    Archived,
}

impl InAppItemState {
    pub const ALL: [InAppItemState; 3] = [
        InAppItemState::Unread,
        InAppItemState::Read,
        InAppItemState::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InAppItemState::Unread => "unread",
            InAppItemState::Read => "read",
            InAppItemState::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<InAppItemState> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum InAppFeedEvent {
    /// The recipient (or the product acting for them) put these items in `state`.
    #[serde(rename = "InAppItemsMarked")]
    ItemsMarked {
        recipient_id: RecipientId,
        notification_ids: Vec<NotificationId>,
        state: InAppItemState,
    },
}

impl InAppFeedEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 1] = ["InAppItemsMarked"];

    pub fn event_type(&self) -> &'static str {
        match self {
            InAppFeedEvent::ItemsMarked { .. } => "InAppItemsMarked",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<InAppFeedEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }

    /// The events recording that `ids` were put in `state`, at most
    /// [`MAX_IDS_PER_EVENT`] ids each; none for no ids.
    pub fn marked(
        recipient_id: &RecipientId,
        ids: &[NotificationId],
        state: InAppItemState,
    ) -> Vec<InAppFeedEvent> {
        ids.chunks(MAX_IDS_PER_EVENT)
            .map(|chunk| InAppFeedEvent::ItemsMarked {
                recipient_id: recipient_id.clone(),
                notification_ids: chunk.to_vec(),
                state,
            })
            .collect()
    }
}

/// A request to mark items, as received; [`parse`](Self::parse) is the only
/// way to a [`MarkItems`].
#[derive(Debug, Clone)]
pub struct MarkInAppItems {
    pub recipient_id: String,
    pub ids: Vec<String>,
    pub state: InAppItemState,
}

/// A valid mark: ids parsed, without repeats, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkItems {
    pub recipient_id: RecipientId,
    pub ids: Vec<NotificationId>,
    pub state: InAppItemState,
}

impl MarkInAppItems {
    /// Every refused field at once, with its path.
    pub fn parse(self) -> Result<MarkItems, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let recipient_id = errors.check("recipient_id", RecipientId::parse(&self.recipient_id));
        if self.ids.is_empty() {
            errors.add("ids", "name at least one item");
        } else if self.ids.len() > MAX_MARK_IDS {
            errors.add("ids", format!("at most {MAX_MARK_IDS} items per call"));
        }
        let mut ids = Vec::with_capacity(self.ids.len());
        for (index, raw) in self.ids.iter().enumerate() {
            if let Some(id) = errors.check(format!("ids[{index}]"), NotificationId::parse(raw))
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        match recipient_id {
            Some(recipient_id) if errors.is_empty() => Ok(MarkItems {
                recipient_id,
                ids,
                state: self.state,
            }),
            _ => Err(errors),
        }
    }
}

impl MarkItems {
    /// The events to record, given which ids are in the recipient's feed;
    /// an id that is not is refused by its path, and nothing is recorded.
    pub fn decide(
        &self,
        in_feed: impl Fn(&NotificationId) -> bool,
    ) -> Result<Vec<InAppFeedEvent>, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        for (index, id) in self.ids.iter().enumerate() {
            if !in_feed(id) {
                errors.add(
                    format!("ids[{index}]"),
                    format!("{id} is not an in-app item delivered to this recipient"),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(InAppFeedEvent::marked(
            &self.recipient_id,
            &self.ids,
            self.state,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ids: Vec<String>) -> MarkInAppItems {
        MarkInAppItems {
            recipient_id: "user-1".into(),
            ids,
            state: InAppItemState::Read,
        }
    }

    #[test]
    fn parses_ids_once_each_in_order() {
        let a = NotificationId::new();
        let b = NotificationId::new();
        let parsed = request(vec![a.to_string(), b.to_string(), a.to_string()])
            .parse()
            .unwrap();
        assert_eq!(parsed.ids, [a, b]);
        assert_eq!(parsed.recipient_id.as_str(), "user-1");
    }

    #[test]
    fn refuses_every_bad_field_at_once() {
        let errors = MarkInAppItems {
            recipient_id: " ".into(),
            ids: vec!["nope".into()],
            state: InAppItemState::Read,
        }
        .parse()
        .unwrap_err();
        assert!(!errors.at("recipient_id").is_empty());
        assert!(!errors.at("ids[0]").is_empty());
        assert!(!request(vec![]).parse().unwrap_err().at("ids").is_empty());
        let many = (0..=MAX_MARK_IDS)
            .map(|_| NotificationId::new().to_string())
            .collect();
        assert!(!request(many).parse().unwrap_err().at("ids").is_empty());
    }

    #[test]
    fn records_the_mark_or_names_the_items_not_in_the_feed() {
        let known = NotificationId::new();
        let stranger = NotificationId::new();
        let mark = request(vec![known.to_string(), stranger.to_string()])
            .parse()
            .unwrap();
        let errors = mark.decide(|id| *id == known).unwrap_err();
        assert_eq!(errors.errors().len(), 1);
        assert!(!errors.at("ids[1]").is_empty());
        let events = mark.decide(|_| true).unwrap();
        assert_eq!(
            events,
            [InAppFeedEvent::ItemsMarked {
                recipient_id: RecipientId::parse("user-1").unwrap(),
                notification_ids: vec![known, stranger],
                state: InAppItemState::Read,
            }]
        );
    }

    #[test]
    fn many_ids_split_into_events_and_round_trip() {
        let recipient = RecipientId::parse("user-1").unwrap();
        let ids: Vec<NotificationId> = (0..MAX_IDS_PER_EVENT + 1)
            .map(|_| NotificationId::new())
            .collect();
        let events = InAppFeedEvent::marked(&recipient, &ids, InAppItemState::Archived);
        assert_eq!(events.len(), 2);
        assert!(InAppFeedEvent::marked(&recipient, &[], InAppItemState::Read).is_empty());
        for event in events {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(payload["state"], "archived");
            let read =
                InAppFeedEvent::upcast(event.event_type(), InAppFeedEvent::SCHEMA_VERSION, payload);
            assert_eq!(read, Ok(event));
        }
    }

    #[test]
    fn states_name_themselves() {
        for state in InAppItemState::ALL {
            assert_eq!(InAppItemState::parse(state.as_str()), Some(state));
        }
        assert_eq!(InAppItemState::parse("deleted"), None);
    }
}
