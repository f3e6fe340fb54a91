//! The dispatcher's last look before a provider call: was the message's
//! campaign paused or cancelled since the message was claimed?
//!
//! It runs for each campaign message once every permit for its call is held,
//! right before the call, so it has to be exact and cheap. Exact: each answer
//! comes from a read that started after the message reached the gate, so a
//! pause or cancel committed before then is seen, and only the calls already
//! past the gate (each holding one of its provider's slots) still go out.
//! Cheap: a message that arrives while a read is under way waits for the
//! next one, which answers every message waiting in one query by primary
//! key; other messages never look.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::domain::NotificationCommand;
use crate::egress::SendError;

/// Why a message is not handed to its provider after all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Back to the queue, held there until the campaign resumes.
    CampaignPaused(Uuid),
    CampaignCancelled(Uuid),
}

impl Stop {
    /// From a `campaigns.status`; `None` when the campaign may send.
    pub fn of_campaign(campaign_id: Uuid, status: &str) -> Option<Stop> {
        match status {
            "PAUSED" => Some(Stop::CampaignPaused(campaign_id)),
            "CANCELLED" => Some(Stop::CampaignCancelled(campaign_id)),
            _ => None,
        }
    }

    /// What the notification's stream records instead of the call.
    pub fn command(self, attempt: u32) -> NotificationCommand {
        match self {
            Stop::CampaignPaused(id) => NotificationCommand::WithdrawAttempt {
                attempt,
                reason: format!("campaign {id} paused"),
            },
            // As the campaign's own cancel words it for messages it reaches first.
            Stop::CampaignCancelled(id) => NotificationCommand::CancelAttempt {
                attempt,
                reason: format!("campaign {id} cancelled"),
            },
        }
    }

    /// The `reason` label of `notifications_withheld_total`.
    pub fn label(self) -> &'static str {
        match self {
            Stop::CampaignPaused(_) => "campaign_paused",
            Stop::CampaignCancelled(_) => "campaign_cancelled",
        }
    }
}

/// The gate of one dispatcher process.
#[derive(Default)]
pub struct CampaignGate {
    reads: SharedReads<Uuid, Stop, Arc<sqlx::Error>>,
}

impl CampaignGate {
    /// Whether the campaign stops a message that reached the gate now. A
    /// failed read is a transient failure of the attempt: not knowing, the
    /// message is not sent.
    pub async fn check(&self, pool: &PgPool, campaign_id: Uuid) -> Result<Option<Stop>, SendError> {
        self.reads
            .get(campaign_id, |ids| async move {
                metrics::counter!("campaign_gate_reads_total").increment(1);
                let rows: Vec<(Uuid, String)> = sqlx::query_as(
                    "SELECT campaign_id, status FROM campaigns WHERE campaign_id = ANY($1)",
                )
                .bind(&ids)
                .fetch_all(pool)
                .await
                .map_err(Arc::new)?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(id, status)| Some((id, Stop::of_campaign(id, &status)?)))
                    .collect())
            })
            .await
            .map_err(|error| {
                SendError::transient(format!(
                    "could not check whether campaign {campaign_id} was paused or cancelled: {error}"
                ))
            })
    }
}

type Answer<V, E> = Result<Option<V>, E>;

/// Callers waiting for a read: each key, and where its answer goes.
type Waiting<K, V, E> = Vec<(K, oneshot::Sender<Answer<V, E>>)>;

/// Reads of keys that callers share: each caller's key is read by a read
/// that starts after the caller asked, together with every key asked for
/// while the read before it ran. One read at a time.
struct SharedReads<K, V, E> {
    waiting: Mutex<Waiting<K, V, E>>,
    turn: tokio::sync::Mutex<()>,
}

impl<K, V, E> Default for SharedReads<K, V, E> {
    fn default() -> Self {
        SharedReads {
            waiting: Mutex::default(),
            turn: tokio::sync::Mutex::default(),
        }
    }
}

impl<K: Clone + Eq + Hash, V: Clone, E: Clone> SharedReads<K, V, E> {
    /// `key`'s value (`None`: the read found none). `read` is called with
    /// the keys waiting when this caller's turn comes, unless a read that
    /// started after it asked has answered it by then.
    async fn get<F, R>(&self, key: K, read: F) -> Answer<V, E>
    where
        F: FnOnce(Vec<K>) -> R,
        R: Future<Output = Result<HashMap<K, V>, E>>,
    {
        let (answer, mut answered) = oneshot::channel();
        self.waiting().push((key.clone(), answer));
        let _turn = self.turn.lock().await;
        if let Ok(value) = answered.try_recv() {
            return value;
        }
        // Not answered: still waiting (or taken by a read whose caller was
        // dropped before answering). Every caller waiting now asked before
        // this read starts.
        let waiters = std::mem::take(&mut *self.waiting());
        let keys: HashSet<K> = waiters
            .iter()
            .map(|(key, _)| key.clone())
            .chain([key.clone()])
            .collect();
        let values = read(keys.into_iter().collect()).await;
        let answer_for = |key: &K| match &values {
            Ok(values) => Ok(values.get(key).cloned()),
            Err(error) => Err(error.clone()),
        };
        for (key, answer) in waiters {
            let _ = answer.send(answer_for(&key));
        }
        answer_for(&key)
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting<K, V, E>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn a_paused_campaign_withdraws_the_attempt_and_a_cancelled_one_cancels_it() {
        let id = Uuid::from_u128(7);
        assert_eq!(Stop::of_campaign(id, "SENDING"), None);
        assert_eq!(Stop::of_campaign(id, "SENT"), None);
        let paused = Stop::of_campaign(id, "PAUSED").unwrap();
        assert!(matches!(
            paused.command(3),
            NotificationCommand::WithdrawAttempt { attempt: 3, .. }
        ));
        let cancelled = Stop::of_campaign(id, "CANCELLED").unwrap();
        assert_eq!(
            cancelled.command(3),
            NotificationCommand::CancelAttempt {
                attempt: 3,
                reason: format!("campaign {id} cancelled"),
            }
        );
    }

    /// Callers arriving while a read runs share the next one, and each sees
    /// what was true when it arrived or later.
    #[tokio::test]
    async fn callers_share_reads_that_start_after_they_asked() {
        let reads: Arc<SharedReads<u8, u32, ()>> = Arc::default();
        let version = Arc::new(AtomicU32::new(0));
        let started = Arc::new(AtomicU32::new(0));
        let read = |version: Arc<AtomicU32>,
                    started: Arc<AtomicU32>,
                    hold: Option<oneshot::Receiver<()>>| {
            move |keys: Vec<u8>| async move {
                started.fetch_add(1, Ordering::SeqCst);
                let seen = version.load(Ordering::SeqCst);
                if let Some(hold) = hold {
                    hold.await.unwrap();
                }
                Ok(keys.into_iter().map(|key| (key, seen)).collect())
            }
        };
        let (release, hold) = oneshot::channel();
        let first = tokio::spawn({
            let (reads, version, started) = (reads.clone(), version.clone(), started.clone());
            async move { reads.get(0, read(version, started, Some(hold))).await }
        });
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Changed after the first read began: the callers below must see it.
        version.store(1, Ordering::SeqCst);
        let later: Vec<_> = (1..=20u8)
            .map(|key| {
                let (reads, version, started) = (reads.clone(), version.clone(), started.clone());
                tokio::spawn(async move { reads.get(key % 3, read(version, started, None)).await })
            })
            .collect();
        while reads.waiting().len() < 20 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(Some(0)));
        for caller in later {
            assert_eq!(caller.await.unwrap(), Ok(Some(1)));
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            2,
            "one read for the 20 that waited"
        );
    }

    #[tokio::test]
    async fn a_failed_read_is_the_error_of_its_callers() {
        let reads: SharedReads<u8, u32, &str> = SharedReads::default();
        let answer = reads.get(1, |_| async { Err("connection lost") }).await;
        assert_eq!(answer, Err("connection lost"));
    }

    /// A caller dropped during its read (its task aborted) leaves the
    /// callers that read took to read again, not to wait forever.
    #[tokio::test]
    async fn callers_of_an_abandoned_read_read_again() {
        let reads: Arc<SharedReads<u8, u32, ()>> = Arc::default();
        let turn = reads.turn.lock().await;
        let abandoned = tokio::spawn({
            let reads = reads.clone();
            async move {
                reads
                    .get(1, |_| {
                        std::future::pending::<Result<HashMap<u8, u32>, ()>>()
                    })
                    .await
            }
        });
        while reads.waiting().is_empty() {
            tokio::task::yield_now().await;
        }
        let taken_along = tokio::spawn({
            let reads = reads.clone();
            async move {
                reads
                    .get(2, |keys| async move {
                        Ok(keys.into_iter().map(|key| (key, 7)).collect())
                    })
                    .await
            }
        });
        while reads.waiting().len() < 2 {
            tokio::task::yield_now().await;
        }
        drop(turn);
        while !reads.waiting().is_empty() {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        assert_eq!(taken_along.await.unwrap(), Ok(Some(7)));
    }
}
