//! Public pages reached from messages: unsubscribe (`/u/{token}`), preference
//! links (`/p/{token}`), tracking (`/t/o/{token}`, `/t/c/{token}`) and short
//! links (`/s/{code}`).
//!
//! No API key here: the signed token is the authority, and it says exactly
//! what the link may do. A GET never changes anything (mail scanners fetch
//! every link in a message); the unsubscribe page asks, and its button or an
//! RFC 8058 one-click POST records. Tracking records are best effort: a
//! notification that cannot take them (unknown, not sent) is logged and the
//! reader still gets the pixel or the redirect.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiState;
use crate::commands::links::{self, Unsubscribed};
use crate::commands::{Actor, recipients};
use crate::domain::recipient::{PreferenceChange, PreferenceSource, Preferences};
use crate::domain::signed_link::{ClientContext, LinkClaims, LinkError, LinkKind, is_short_code};
use crate::domain::template::escape_html;
use crate::domain::values::{Category, Channel, HttpUrl, NotificationId, TenantId};

/// The channels a recipient sees on the preference page: those that reach a
/// person (a webhook reaches the tenant's own systems).
const PREFERENCE_CHANNELS: [Channel; 5] = [
    Channel::Email,
    Channel::Sms,
    Channel::Push,
    Channel::Ntfy,
    Channel::InApp,
];

/// A transparent 1x1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/u/{token}", get(unsubscribe_page).post(unsubscribe))
        .route("/p/{token}", get(preferences_page).post(save_preferences))
        .route("/t/o/{token}", get(open_pixel))
        .route("/t/c/{token}", get(click))
        .route("/s/{code}", get(short_link))
}

fn actor() -> Actor {
    Actor::new("signed-link")
}

/// A page, or the page that refuses the request.
type Page = Result<Response, Response>;

/// The claims of a `kind` token, or the page refusing it.
#[expect(
    clippy::result_large_err,
    reason = "the error is the page answered, once per refused request"
)]
fn verify(state: &ApiState, token: &str, kind: LinkKind) -> Result<LinkClaims, Response> {
    let links = &state.api.links;
    links.verify(token, kind).map_err(|error| refused(&error))
}

/// `GET /u/{token}`: asks; changes nothing.
async fn unsubscribe_page(State(state): State<ApiState>, Path(token): Path<String>) -> Page {
    let claims = verify(&state, &token, LinkKind::Unsubscribe)?;
    let address = claims.address.as_ref().map(|a| a.as_str()).unwrap_or("");
    let question = format!(
        "Unsubscribe {} from {}?",
        escape_html(address),
        scope_of(&claims)
    );
    let body = format!(
        "<h1>{question}</h1>\
         <form method=\"post\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form>{}",
        preferences_note(&state, &claims)
    );
    Ok(page(StatusCode::OK, "Unsubscribe", &body))
}

/// `POST /u/{token}`: the page's button and RFC 8058 one-click alike.
async fn unsubscribe(State(state): State<ApiState>, Path(token): Path<String>) -> Page {
    let claims = verify(&state, &token, LinkKind::Unsubscribe)?;
    let outcome = links::unsubscribe(&state.api.store, &claims, &actor())
        .await
        .map_err(|error| failed_at("recording an unsubscribe", &claims, error))?;
    let address = claims.address.as_ref().map(|a| a.as_str()).unwrap_or("");
    let what = match outcome {
        Unsubscribed::Preferences(_) => scope_of(&claims),
        Unsubscribed::Suppressed => "all emails from this sender".to_string(),
    };
    let body = format!(
        "<h1>You are unsubscribed</h1><p>{} will no longer receive {what}.</p>{}",
        escape_html(address),
        preferences_note(&state, &claims)
    );
    Ok(page(StatusCode::OK, "Unsubscribed", &body))
}

/// What an unsubscribe link stops, as the page says it.
fn scope_of(claims: &LinkClaims) -> String {
    match (&claims.recipient_id, &claims.category) {
        (Some(_), Some(category)) => format!("{} emails", escape_html(category.as_str())),
        (Some(_), None) => "all emails".to_string(),
        // A bare address can only be suppressed as a whole.
        (None, _) => "all emails from this sender".to_string(),
    }
}

/// A link to the full preference page, for a link that names a recipient.
fn preferences_note(state: &ApiState, claims: &LinkClaims) -> String {
    match &claims.recipient_id {
        Some(recipient_id) => {
            let url = state.api.links.preferences_url(
                &claims.tenant_id,
                recipient_id,
                claims.category.as_ref(),
            );
            format!(
                "<p><a href=\"{}\">Choose which messages you receive</a></p>",
                escape_html(url.as_str())
            )
        }
        None => String::new(),
    }
}

/// `GET /p/{token}`: the recipient's opt-ins by category and channel.
async fn preferences_page(State(state): State<ApiState>, Path(token): Path<String>) -> Page {
    let claims = verify(&state, &token, LinkKind::Preferences)?;
    let preferences = current_preferences(&state, &claims).await?;
    Ok(preference_form(&claims, &preferences, None))
}

/// `POST /p/{token}`: the form's answer. `cell` names every box shown
/// (`category|channel`, `*` for every category), `on` those ticked.
async fn save_preferences(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Page {
    let claims = verify(&state, &token, LinkKind::Preferences)?;
    let unreadable = || message(StatusCode::BAD_REQUEST, "The form could not be read.");
    let Ok(Form(fields)) = form else {
        return Err(unreadable());
    };
    let Some(recipient_id) = &claims.recipient_id else {
        return Err(refused(&LinkError::Malformed));
    };
    let current = current_preferences(&state, &claims).await?;
    let ticked: BTreeSet<&str> = fields
        .iter()
        .filter(|(name, _)| name == "on")
        .map(|(_, value)| value.as_str())
        .collect();
    let mut changes = Vec::new();
    for (_, cell) in fields.iter().filter(|(name, _)| name == "cell") {
        let Some((category, channel)) = parse_cell(cell) else {
            return Err(unreadable());
        };
        let opted_in = ticked.contains(cell.as_str());
        // Only what the recipient changed: an untouched box leaves no rule.
        if current.allows(category.as_ref(), channel) != opted_in
            && !changes
                .iter()
                .any(|c: &PreferenceChange| c.category == category && c.channel == Some(channel))
        {
            changes.push(PreferenceChange {
                category,
                channel: Some(channel),
                opted_in,
            });
        }
    }
    let preferences = if changes.is_empty() {
        current
    } else {
        recipients::set_preferences(
            &state.api.store,
            &claims.tenant_id,
            recipient_id,
            changes,
            PreferenceSource::SignedLink,
            &actor(),
        )
        .await
        .map_err(|error| failed_at("saving preferences", &claims, error))?
    };
    let notice = Some("Your preferences are saved.");
    Ok(preference_form(&claims, &preferences, notice))
}

async fn current_preferences(
    state: &ApiState,
    claims: &LinkClaims,
) -> Result<Preferences, Response> {
    let Some(recipient_id) = &claims.recipient_id else {
        return Ok(Preferences::default());
    };
    let audience = recipients::get(state.api.store.pool(), &claims.tenant_id, recipient_id)
        .await
        .map_err(|error| failed_at("reading preferences", claims, error))?;
    Ok(audience.map(|a| a.preferences).unwrap_or_default())
}

/// `*|email` or `billing|sms`.
fn parse_cell(cell: &str) -> Option<(Option<Category>, Channel)> {
    let (category, channel) = cell.split_once('|')?;
    let category = match category {
        "*" => None,
        name => Some(Category::parse(name).ok()?),
    };
    Some((category, Channel::parse(channel).ok()?))
}

fn preference_form(
    claims: &LinkClaims,
    preferences: &Preferences,
    notice: Option<&str>,
) -> Response {
    // Every category the recipient has a rule for, and the link's own.
    let mut categories: BTreeSet<&Category> = preferences
        .rules()
        .filter_map(|rule| rule.category.as_ref())
        .collect();
    categories.extend(claims.category.as_ref());
    let rows = std::iter::once(None).chain(categories.into_iter().map(Some));
    let mut table = String::from("<table><tr><th></th>");
    for channel in PREFERENCE_CHANNELS {
        table.push_str(&format!("<th>{}</th>", channel_label(channel)));
    }
    table.push_str("</tr>");
    for category in rows {
        let (key, label) = match category {
            Some(category) => (category.as_str(), escape_html(category.as_str())),
            None => ("*", "All messages".to_string()),
        };
        table.push_str(&format!("<tr><th scope=\"row\">{label}</th>"));
        for channel in PREFERENCE_CHANNELS {
            let cell = escape_html(&format!("{key}|{}", channel.as_str()));
            let checked = if preferences.allows(category, channel) {
                " checked"
            } else {
                ""
            };
            table.push_str(&format!(
                "<td><input type=\"hidden\" name=\"cell\" value=\"{cell}\">\
                 <input type=\"checkbox\" name=\"on\" value=\"{cell}\" aria-label=\"{label} by {}\"{checked}></td>",
                channel_label(channel)
            ));
        }
        table.push_str("</tr>");
    }
    table.push_str("</table>");
    let notice = notice
        .map(|text| format!("<p><strong>{}</strong></p>", escape_html(text)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Your notification preferences</h1>{notice}\
         <p>Tick what you want to receive. A category follows \"All messages\" unless you change it.</p>\
         <form method=\"post\">{table}<button type=\"submit\">Save</button></form>"
    );
    page(StatusCode::OK, "Preferences", &body)
}

fn channel_label(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "Email",
        Channel::Sms => "SMS",
        Channel::Push => "Push",
        Channel::Webhook => "Webhook",
        Channel::Ntfy => "ntfy",
        Channel::InApp => "In app",
    }
}

/// `GET /t/o/{token}`: the pixel, always; an open recorded when the token holds.
async fn open_pixel(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    match state.api.links.verify(&token, LinkKind::Open) {
        Ok(claims) => {
            if let Some(id) = &claims.notification_id {
                let client = client_context(&headers, &extensions);
                if let Err(error) =
                    links::record_open(&state.api.store, &claims.tenant_id, id, client, &actor())
                        .await
                {
                    tracing::info!(%error, notification_id = %id, "open not recorded");
                }
            }
        }
        Err(error) => tracing::debug!(%error, "open pixel with a refused token"),
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, no-cache, must-revalidate, private"),
            ),
        ],
        PIXEL,
    )
        .into_response()
}

/// `GET /t/c/{token}`: records the click and redirects to the signed URL;
/// a refused token redirects nowhere.
async fn click(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Page {
    let claims = verify(&state, &token, LinkKind::Click)?;
    let Some(url) = claims.url else {
        return Err(refused(&LinkError::Malformed));
    };
    if let Some(id) = &claims.notification_id {
        record_click(&state, &claims.tenant_id, id, &url, &headers, &extensions).await;
    }
    Ok(redirect(&url))
}

/// `GET /s/{code}`: a short link's stored target, never one from the request.
async fn short_link(
    State(state): State<ApiState>,
    Path(code): Path<String>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    let not_found = || {
        message(
            StatusCode::NOT_FOUND,
            "This link does not exist or has expired.",
        )
    };
    if !is_short_code(&code) {
        return not_found();
    }
    let row = match links::follow_short_link(state.api.store.pool(), &code).await {
        Ok(Some(row)) => row,
        Ok(None) => return not_found(),
        Err(error) => {
            tracing::error!(%error, "reading a short link failed");
            return failed();
        }
    };
    let (Ok(url), Ok(tenant)) = (HttpUrl::parse(&row.url), TenantId::parse(&row.tenant_id)) else {
        tracing::error!(code, "a stored short link does not parse");
        return failed();
    };
    if let Some(id) = row.notification_id.map(NotificationId::from) {
        record_click(&state, &tenant, &id, &url, &headers, &extensions).await;
    }
    redirect(&url)
}

async fn record_click(
    state: &ApiState,
    tenant: &TenantId,
    id: &NotificationId,
    url: &HttpUrl,
    headers: &HeaderMap,
    extensions: &Extensions,
) {
    let client = client_context(headers, extensions);
    if let Err(error) =
        links::record_click(&state.api.store, tenant, id, url, client, &actor()).await
    {
        tracing::info!(%error, notification_id = %id, "click not recorded");
    }
}

fn redirect(url: &HttpUrl) -> Response {
    match HeaderValue::from_str(url.as_str()) {
        Ok(location) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
            ],
        )
            .into_response(),
        Err(_) => failed(),
    }
}

/// The user agent, and the client's address: the first `X-Forwarded-For`
/// hop (Herald behind a proxy), else the peer when the server records it.
/// Either is kept only truncated to its network.
fn client_context(headers: &HeaderMap, extensions: &Extensions) -> ClientContext {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok());
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .and_then(|first| first.trim().parse::<IpAddr>().ok());
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    ClientContext::new(user_agent, forwarded.or(peer))
}

/// A refused token: 410 when it expired, 400 otherwise, with a plain message.
fn refused(error: &LinkError) -> Response {
    match error {
        LinkError::Expired { .. } => message(
            StatusCode::GONE,
            "This link has expired. Use the link in a more recent message.",
        ),
        _ => message(
            StatusCode::BAD_REQUEST,
            "This link is not valid: it was altered or cut short. Use the link exactly as it \
             appears in the message.",
        ),
    }
}

fn failed() -> Response {
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong on our side. Please try again in a few minutes.",
    )
}

/// [`failed`], with the cause logged under what failed for the link's tenant.
fn failed_at(what: &str, claims: &LinkClaims, error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, tenant_id = %claims.tenant_id, "{what} failed");
    failed()
}

fn message(status: StatusCode, text: &str) -> Response {
    page(status, "Link", &format!("<p>{}</p>", escape_html(text)))
}

/// A small self-contained page. The token is in the URL, so no referrer
/// leaves it, and nothing is cached.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}\
         button{{font-size:1rem;padding:.5rem 1.25rem}}td,th{{padding:.25rem .75rem;text-align:center}}\
         th[scope=row]{{text-align:left}}</style></head><body>{body}</body></html>",
        escape_html(title)
    );
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        html,
    )
        .into_response()
}
