//! `/graphql/ws`: async-graphql speaks graphql-transport-ws; this file
//! decides who may hold a socket, and for how long.
//!
//! - `connection_init` must come within [`INIT_TIMEOUT`] (else 4408), with a
//!   valid credential (else 4403): an API key as `{"apiKey": "..."}`, a feed
//!   token as `{"feedToken": "..."}`, or either as
//!   `{"authorization": "Bearer ..."}`.
//! - A tenant holds at most `limits.max_sockets_per_tenant` sockets in this
//!   process; past it a new socket is closed with 4429.
//! - Breaches of graphql-transport-ws itself close as its PROTOCOL.md says
//!   (async-graphql's own codes differ for the first three): a message that
//!   is not one of the protocol's, 4400; a `subscribe` before
//!   `connection_init`, 4401; a `subscribe` reusing the id of a subscription
//!   still running, 4409; a second `connection_init`, 4429 (async-graphql's).
//!   The older graphql-ws (subscriptions-transport-ws) keeps async-graphql's.
//! - The tenant's socket cap also closes with 4429: "too many", and, like
//!   the protocol's own 4429, a code clients do not retry at once.
//! - A revoked key's sockets close with 4403. The log tells every process
//!   of a revocation (`ApiKeyRevoked`, through the [`LiveHub`]), so an open
//!   socket costs nothing until one happens: cheaper than every socket
//!   looking its key up every couple of seconds, and as fast in other
//!   processes as in the one that revoked it. A feed token has no key to
//!   revoke: its subscriptions end when it expires.
//!
//! [`LiveHub`]: super::live::LiveHub

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{ClientMessage, WebSocketProtocols};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, Stream, StreamExt};
use tokio::sync::{broadcast, oneshot};

use super::graphql::Caller;
use super::tenant_slots::Slot;
use super::{ApiError, ApiState};
use crate::commands::links::FEED_TOKEN_PREFIX;
use crate::domain::values::{ApiKeyId, TenantId};

/// How long a socket may stay open without a `connection_init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages for the client queued while the socket is busy sending.
const OUTGOING: usize = 16;

/// The graphql-transport-ws close codes Herald sends.
const BAD_MESSAGE: u16 = 4400;
const UNAUTHORIZED: u16 = 4401;
const FORBIDDEN: u16 = 4403;
const INIT_TIMED_OUT: u16 = 4408;
const DUPLICATE_SUBSCRIBER: u16 = 4409;
const TOO_MANY: u16 = 4429;
const INTERNAL: u16 = 1011;

/// An admitted socket: what it needs to learn that its key was revoked
/// (none for a feed token), and the tenant's socket slot it holds.
struct Admitted {
    key: Option<WatchedKey>,
    _slot: Slot,
}

struct WatchedKey {
    secret: String,
    key_id: ApiKeyId,
    revocations: broadcast::Receiver<ApiKeyId>,
}

/// Whether the client asked for graphql-transport-ws (rather than the older
/// graphql-ws), picked as [`GraphQLProtocol`] picks.
pub(super) fn speaks_transport_ws(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .and_then(|protocols| {
            protocols
                .split(',')
                .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
        })
        .is_some_and(|protocol| protocol == WebSocketProtocols::GraphQLWS)
}

pub(super) async fn serve(
    state: ApiState,
    socket: WebSocket,
    protocol: GraphQLProtocol,
    transport_ws: bool,
) {
    let (mut sink, incoming) = socket.split();
    // The protocol writes into a channel rather than the socket, so that a
    // close decided here can go out ahead of its own answers.
    let (to_client, mut outgoing) = futures::channel::mpsc::channel::<Message>(OUTGOING);
    let (admit, mut admission) = oneshot::channel();
    let (breach, mut breached) = oneshot::channel();
    let subscribers = Subscribers::default();
    let incoming = match transport_ws {
        true => checked(incoming, subscribers.clone(), breach).left_stream(),
        false => incoming.right_stream(),
    };
    let (keys, pool) = (state.api.keys.clone(), state.api.store.pool().clone());
    let graphql =
        GraphQLWebSocket::new_with_pair(to_client, incoming, state.schema.clone(), protocol)
            .on_connection_init(move |payload| connection_init(state, payload, admit))
            .serve();
    let mut graphql = std::pin::pin!(graphql);
    let mut serving = true;
    let mut admitted: Option<Admitted> = None;
    let mut waiting = true;
    let mut watching_breaches = transport_ws;
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    let mut init_deadline = std::pin::pin!(init_deadline);
    let close = loop {
        tokio::select! {
            // A decision about the socket goes out before anything the
            // protocol queued after it (its own answer to a refused init).
            biased;
            decision = &mut admission, if waiting => {
                waiting = false;
                match decision {
                    Ok(Ok(socket)) => admitted = Some(socket),
                    Ok(Err(close)) => break close,
                    // The client left before it sent a connection_init.
                    Err(_) => {}
                }
            }
            close = &mut breached, if watching_breaches => match close {
                Ok(close) => break close,
                // The protocol is over, and its stream of client messages with it.
                Err(_) => watching_breaches = false,
            },
            () = &mut init_deadline, if waiting => {
                break frame(INIT_TIMED_OUT, "connection initialisation timeout");
            }
            () = revoked(&mut admitted, &keys, &pool) => {
                break frame(FORBIDDEN, "the API key was revoked");
            }
            message = outgoing.next() => match message {
                Some(message) => {
                    subscribers.note_server_end(&message);
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
                // The protocol is done and everything it said is sent.
                None => return,
            },
            () = &mut graphql, if serving => serving = false,
        }
    };
    let _ = sink.send(Message::Close(Some(close))).await;
}

/// The ids of the subscriptions running on a graphql-transport-ws socket:
/// added by the client's `subscribe`, removed by a `complete` for the id
/// from either side (async-graphql ends a failed subscription with one too).
#[derive(Clone, Default)]
struct Subscribers(Arc<Mutex<HashSet<String>>>);

impl Subscribers {
    fn note_server_end(&self, message: &Message) {
        // async-graphql writes the `type` tag first, so only the messages
        // that end a subscription are parsed.
        let Message::Text(text) = message else { return };
        if !text.starts_with(r#"{"type":"complete""#) {
            return;
        }
        #[derive(serde::Deserialize)]
        struct Ended {
            id: String,
        }
        if let Ok(ended) = serde_json::from_str::<Ended>(text) {
            self.lock().remove(&ended.id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The client's messages as async-graphql gets them, once each has passed
/// the graphql-transport-ws rules async-graphql does not enforce (see the
/// module's notes). A breach goes to `breach`, and the stream then waits
/// forever: [`serve`] closes the socket.
fn checked(
    incoming: impl Stream<Item = Result<Message, axum::Error>> + Send + 'static,
    subscribers: Subscribers,
    breach: oneshot::Sender<CloseFrame>,
) -> impl Stream<Item = Result<Message, axum::Error>> + Send + 'static {
    let mut initialised = false;
    let mut breach = Some(breach);
    incoming.then(move |message| {
        let close = match &message {
            Ok(Message::Text(text)) => check(text.as_bytes(), &mut initialised, &subscribers),
            Ok(Message::Binary(bytes)) => check(bytes, &mut initialised, &subscribers),
            _ => None,
        };
        let breached = close.and_then(|close| Some((breach.take()?, close)));
        async move {
            if let Some((breach, close)) = breached {
                let _ = breach.send(close);
                std::future::pending::<()>().await;
            }
            message
        }
    })
}

/// The close a client message calls for under graphql-transport-ws, if any.
fn check(message: &[u8], initialised: &mut bool, subscribers: &Subscribers) -> Option<CloseFrame> {
    match serde_json::from_slice::<ClientMessage>(message) {
        Err(error) => Some(frame(
            BAD_MESSAGE,
            &format!("not a graphql-transport-ws message: {error}")
                .chars()
                .take(100)
                .collect::<String>(),
        )),
        Ok(ClientMessage::ConnectionInit { .. }) => {
            *initialised = true;
            None
        }
        Ok(ClientMessage::Start { .. }) if !*initialised => {
            Some(frame(UNAUTHORIZED, "subscribe before connection_init"))
        }
        Ok(ClientMessage::Start { id, .. }) => {
            (!subscribers.lock().insert(id.clone())).then(|| {
                let id: String = id.chars().take(60).collect();
                frame(
                    DUPLICATE_SUBSCRIBER,
                    &format!("Subscriber for {id} already exists"),
                )
            })
        }
        Ok(ClientMessage::Stop { id }) => {
            subscribers.lock().remove(&id);
            None
        }
        Ok(_) => None,
    }
}

/// Admits the socket (telling [`serve`] through `admit`) or refuses it.
async fn connection_init(
    state: ApiState,
    payload: serde_json::Value,
    admit: oneshot::Sender<Result<Admitted, CloseFrame>>,
) -> async_graphql::Result<Data> {
    match admission(&state, &payload).await {
        Ok((data, admitted)) => {
            let _ = admit.send(Ok(admitted));
            Ok(data)
        }
        Err(close) => {
            let reason = close.reason.to_string();
            let _ = admit.send(Err(close));
            Err(async_graphql::Error::new(reason))
        }
    }
}

async fn admission(
    state: &ApiState,
    payload: &serde_json::Value,
) -> Result<(Data, Admitted), CloseFrame> {
    let token = connection_key(payload).ok_or_else(|| {
        frame(
            FORBIDDEN,
            "connection_init needs {\"apiKey\": \"...\"} or {\"feedToken\": \"...\"}",
        )
    })?;
    let mut data = Data::default();
    if token.starts_with(FEED_TOKEN_PREFIX) {
        let grant = state
            .api
            .links
            .verify_feed_token(&token)
            .map_err(|_| refusal(ApiError::Unauthenticated))?;
        let slot = socket_slot(state, &grant.tenant_id)?;
        data.insert(Caller(None));
        data.insert(grant);
        return Ok((
            data,
            Admitted {
                key: None,
                _slot: slot,
            },
        ));
    }
    // Listen first and look the key up in the database, not the cache: a
    // revocation the lookup does not see is then certain to be heard.
    let revocations = state.api.live.revocations();
    let principal = state
        .api
        .keys
        .refresh(state.api.store.pool(), &token)
        .await
        .map_err(refusal)?;
    let slot = socket_slot(state, &principal.tenant_id)?;
    let key = WatchedKey {
        secret: token,
        key_id: principal.key_id,
        revocations,
    };
    data.insert(Caller(Some(principal)));
    Ok((
        data,
        Admitted {
            key: Some(key),
            _slot: slot,
        },
    ))
}

/// One of the tenant's socket slots in this process, or a 4429 close.
fn socket_slot(state: &ApiState, tenant_id: &TenantId) -> Result<Slot, CloseFrame> {
    state.sockets.try_take(tenant_id).ok_or_else(|| {
        metrics::counter!("websocket_refused_total", "reason" => "too_many").increment(1);
        frame(TOO_MANY, "too many sockets open for this tenant")
    })
}

/// Resolves once the admitted socket's key is revoked; never before admission.
async fn revoked(admitted: &mut Option<Admitted>, keys: &super::KeyCache, pool: &sqlx::PgPool) {
    let Some(Admitted { key: Some(key), .. }) = admitted else {
        return std::future::pending().await;
    };
    loop {
        match key.revocations.recv().await {
            Ok(key_id) if key_id == key.key_id => return,
            Ok(_) => {}
            // Some revocations went by unseen: ask the database.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if let Err(ApiError::Unauthenticated) = keys.refresh(pool, &key.secret).await {
                    return;
                }
            }
            // The hub is gone with the server: the socket goes with it.
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

fn refusal(error: ApiError) -> CloseFrame {
    let code = match error {
        ApiError::Unauthenticated => FORBIDDEN,
        _ => INTERNAL,
    };
    frame(code, &error.message())
}

/// A close frame; reasons stay under the protocol's 123 bytes.
fn frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

fn connection_key(payload: &serde_json::Value) -> Option<String> {
    if let Some(key) = ["apiKey", "feedToken"]
        .iter()
        .find_map(|name| payload.get(*name).and_then(|k| k.as_str()))
    {
        return Some(key.to_string());
    }
    let header = ["authorization", "Authorization"]
        .iter()
        .find_map(|name| payload.get(*name).and_then(|v| v.as_str()))?;
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}
