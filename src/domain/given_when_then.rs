//! Aggregate specifications in the cqrs-es style: given these events, when
//! this command, then these events (or this error).

use std::fmt::Debug;

use chrono::{DateTime, Utc};

use super::aggregate::Aggregate;
use super::test_fixtures::t0;

pub(crate) fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(&event);
    }
    Given {
        aggregate,
        now: t0(),
    }
}

pub(crate) struct Given<A> {
    aggregate: A,
    now: DateTime<Utc>,
}

impl<A: Aggregate> Given<A> {
    /// Decides at `now` instead of the fixtures' `t0`.
    pub(crate) fn at(self, now: DateTime<Utc>) -> Self {
        Self { now, ..self }
    }

    pub(crate) fn when(self, command: A::Command) -> Then<A> {
        Then {
            outcome: self.aggregate.decide(command, self.now),
        }
    }
}

pub(crate) struct Then<A: Aggregate> {
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A> Then<A>
where
    A: Aggregate,
    A::Event: Debug + PartialEq,
    A::Error: Debug + PartialEq,
{
    #[track_caller]
    pub(crate) fn then(self, expected: impl IntoIterator<Item = A::Event>) {
        assert_eq!(self.outcome, Ok(expected.into_iter().collect()));
    }

    /// The command already happened: accepted, nothing to record.
    #[track_caller]
    pub(crate) fn then_nothing(self) {
        assert_eq!(self.outcome, Ok(Vec::new()));
    }

    #[track_caller]
    pub(crate) fn then_error(self, expected: A::Error) {
        assert_eq!(self.outcome, Err(expected));
    }
}
