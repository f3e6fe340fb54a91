use chrono::{DateTime, Utc};

/// A consistency boundary whose state is a fold of its events.
///
/// `apply` cannot fail: events are facts, already decided. `decide` is pure:
/// given the state, a command and the time, it returns the events to append
/// or says why not. The caller loads, decides, appends with the version it
/// loaded, and retries on a conflict.
pub trait Aggregate: Default {
    type Command;
    type Event;
    type Error;

    fn apply(&mut self, event: &Self::Event);

    fn decide(
        &self,
        command: Self::Command,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// The state after `events`, starting from nothing.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}
