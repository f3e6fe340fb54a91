//! Decorates an outbound email: unsubscribe headers and footer, open pixel and click tracking.
//!
//! Every email gets RFC 8058 one-click unsubscribe headers and a footer
//! link. When the tenant turned tracking on, links in the HTML part go
//! through `/t/c/{token}` and an open pixel is added; the plain-text part is
//! left as written (rewritten URLs there are long and alarming to read).

use std::time::Duration;

use sqlx::PgPool;
use url::Url;

use crate::commands::links::{self, Links, LinksConfig};
use crate::domain::signed_link::TrackingSettings;
use crate::domain::suppression::SuppressedAddress;
use crate::domain::template::escape_html;
use crate::domain::values::{
    Category, EmailAddress, HttpUrl, NotificationId, RecipientId, TenantId,
};
use crate::providers::OutboundMessage;
use crate::ttl_cache::TtlCache;

/// A tenant's tracking settings are re-read this often: turning tracking
/// off takes effect within this long, without a query per email.
const SETTINGS_TTL: Duration = Duration::from_secs(30);

const LIST_UNSUBSCRIBE: &str = "List-Unsubscribe";
const LIST_UNSUBSCRIBE_POST: &str = "List-Unsubscribe-Post";

/// Held by the dispatcher, called for every email.
pub struct EmailLinks {
    links: Links,
    pool: PgPool,
    settings: TtlCache<TenantId, TrackingSettings>,
}

impl EmailLinks {
    /// `config` as `Config::links()` gives it (public URL defaulted from `listen`).
    pub async fn new(pool: &PgPool, config: &LinksConfig) -> Result<EmailLinks, sqlx::Error> {
        Ok(EmailLinks {
            links: Links::new(pool, config).await?,
            pool: pool.clone(),
            settings: TtlCache::new(SETTINGS_TTL),
        })
    }

    /// The signer, for other links (a recipient's preference page).
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The signed one-click unsubscribe URL for this email.
    pub fn unsubscribe_url(
        &self,
        tenant: &TenantId,
        notification_id: NotificationId,
        recipient_id: Option<&RecipientId>,
        address: &EmailAddress,
        category: Option<&Category>,
    ) -> Url {
        self.links.unsubscribe_url(
            tenant,
            Some(notification_id),
            recipient_id,
            &SuppressedAddress::Email(address.clone()),
            category,
        )
    }

    /// Adds List-Unsubscribe (<url>) and List-Unsubscribe-Post:
    /// List-Unsubscribe=One-Click headers, appends an unsubscribe footer to
    /// text and html unless the body already contains the URL, and, when the
    /// tenant turned tracking on, rewrites html links through /t/c and adds
    /// the open pixel (tenant settings cached briefly).
    pub async fn decorate(
        &self,
        message: &mut OutboundMessage,
        unsubscribe_url: &Url,
    ) -> Result<(), sqlx::Error> {
        let tracking = self.tracking(&message.tenant_id).await?;
        let unsubscribe = unsubscribe_url.as_str();
        message.headers.retain(|(name, _)| {
            !name.eq_ignore_ascii_case(LIST_UNSUBSCRIBE)
                && !name.eq_ignore_ascii_case(LIST_UNSUBSCRIBE_POST)
        });
        message
            .headers
            .push((LIST_UNSUBSCRIBE.into(), format!("<{unsubscribe}>")));
        message.headers.push((
            LIST_UNSUBSCRIBE_POST.into(),
            "List-Unsubscribe=One-Click".into(),
        ));
        if message.text.is_none() && message.html.is_none() {
            message.text = Some(String::new());
        }
        if let Some(text) = &mut message.text
            && !text.contains(unsubscribe)
        {
            *text = text_with_footer(text, unsubscribe);
        }
        if let Some(html) = &mut message.html {
            if tracking.clicks {
                let (tenant, id) = (&message.tenant_id, message.notification_id);
                *html = rewrite_links(html, |url| {
                    // Herald's own links (unsubscribe, preferences) stay direct.
                    (!url.as_str().starts_with(self.links.base().as_str()))
                        .then(|| self.links.click_url(tenant, Some(id), url))
                });
            }
            if !html.contains(&escape_html(unsubscribe)) {
                *html = insert_before_body_end(html, &html_footer(unsubscribe));
            }
            if tracking.opens {
                let pixel = self
                    .links
                    .open_url(&message.tenant_id, message.notification_id);
                *html = insert_before_body_end(html, &open_pixel(pixel.as_str()));
            }
        }
        Ok(())
    }

    async fn tracking(&self, tenant: &TenantId) -> Result<TrackingSettings, sqlx::Error> {
        if let Some(settings) = self.settings.get(tenant) {
            return Ok(settings);
        }
        let settings = links::tracking_settings(&self.pool, tenant).await?;
        self.settings.insert(tenant.clone(), settings);
        Ok(settings)
    }
}

/// `text` with an unsubscribe line below a signature separator.
fn text_with_footer(text: &str, unsubscribe: &str) -> String {
    let body = text.trim_end();
    if body.is_empty() {
        format!("Unsubscribe: {unsubscribe}\n")
    } else {
        format!("{body}\n\n-- \nUnsubscribe: {unsubscribe}\n")
    }
}

fn html_footer(unsubscribe: &str) -> String {
    format!(
        "<p style=\"font-size:12px;color:#6b7280;margin-top:24px\">\
         Don't want these emails? <a href=\"{}\">Unsubscribe</a>.</p>",
        escape_html(unsubscribe)
    )
}

fn open_pixel(url: &str) -> String {
    format!(
        "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" \
         style=\"display:block;width:1px;height:1px;border:0\">",
        escape_html(url)
    )
}

/// `html` with `addition` just before `</body>`, or at the end without one.
fn insert_before_body_end(html: &str, addition: &str) -> String {
    match html.to_ascii_lowercase().rfind("</body") {
        Some(at) => format!("{}{addition}{}", &html[..at], &html[at..]),
        None => format!("{html}{addition}"),
    }
}

/// Replaces the `href` of every `<a>` and `<area>` whose target is an http(s)
/// URL by what `replace` returns for it (kept when it returns `None`).
/// Other tags (a stylesheet's `<link href>`), `mailto:` and anchors are left alone.
fn rewrite_links(html: &str, mut replace: impl FnMut(&HttpUrl) -> Option<Url>) -> String {
    let mut out = String::with_capacity(html.len() + html.len() / 4);
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|i| open + i) else {
            break;
        };
        let tag = &rest[open..=close];
        out.push_str(&rest[..open]);
        match href_value(tag) {
            Some((start, end)) => {
                let raw = &tag[start..end];
                match HttpUrl::parse(unescape_html(raw).trim())
                    .ok()
                    .and_then(|url| replace(&url))
                {
                    Some(tracked) => {
                        out.push_str(&tag[..start]);
                        out.push_str(&escape_html(tracked.as_str()));
                        out.push_str(&tag[end..]);
                    }
                    None => out.push_str(tag),
                }
            }
            None => out.push_str(tag),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The byte range of the quoted `href` value in `tag`, if `tag` opens an
/// `<a>` or `<area>` and has one.
fn href_value(tag: &str) -> Option<(usize, usize)> {
    let lower = tag.to_ascii_lowercase();
    let name_end = lower[1..]
        .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
        .map(|i| i + 1)?;
    if !matches!(&lower[1..name_end], "a" | "area") {
        return None;
    }
    let mut from = name_end;
    while let Some(found) = lower[from..].find("href") {
        let at = from + found;
        from = at + 4;
        // An attribute name starts after whitespace; `data-href` is not `href`.
        if !lower[..at].ends_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let after = lower[from..].trim_start();
        let Some(after_eq) = after.strip_prefix('=') else {
            continue;
        };
        let value = after_eq.trim_start();
        let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let start = lower.len() - value.len() + 1;
        let end = start + lower[start..].find(quote)?;
        return Some((start, end));
    }
    None
}

/// The entities a URL in an attribute is commonly written with.
fn unescape_html(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(url: &HttpUrl) -> Option<Url> {
        Url::parse(&format!(
            "https://herald.test/t/c/{}",
            url.as_url().host_str()?
        ))
        .ok()
    }

    #[test]
    fn links_in_anchors_are_rewritten_and_nothing_else() {
        let html = "<html><head><link href=\"https://cdn.test/a.css\" rel=stylesheet></head>\
            <body><a class=x href=\"https://shop.test/p?a=1&amp;b=2\">Shop</a> \
            <A HREF='http://blog.test/'>Blog</A> <a href=\"mailto:x@y.test\">Mail</a> \
            <a data-href=\"https://no.test\" href=\"#top\">Top</a> <area href=\"https://map.test\">\
            text with https://plain.test</body></html>";
        let out = rewrite_links(html, tracked);
        assert!(
            out.contains("<a class=x href=\"https://herald.test/t/c/shop.test\">Shop</a>"),
            "{out}"
        );
        assert!(
            out.contains("<A HREF='https://herald.test/t/c/blog.test'>Blog</A>"),
            "{out}"
        );
        assert!(
            out.contains("<area href=\"https://herald.test/t/c/map.test\">"),
            "{out}"
        );
        assert!(out.contains("href=\"https://cdn.test/a.css\""), "{out}");
        assert!(
            out.contains("mailto:x@y.test")
                && out.contains("data-href=\"https://no.test\" href=\"#top\"")
        );
        assert!(out.contains("text with https://plain.test"));
    }

    #[test]
    fn the_url_handed_over_is_unescaped() {
        let mut seen = Vec::new();
        rewrite_links("<a href=\"https://shop.test/p?a=1&amp;b=2\">x</a>", |url| {
            seen.push(url.as_str().to_string());
            None
        });
        assert_eq!(seen, ["https://shop.test/p?a=1&b=2"]);
    }

    #[test]
    fn broken_html_is_returned_as_it_was() {
        for html in [
            "<a href=\"https://x.test",
            "<a href=>",
            "<",
            "plain",
            "<a href=\"\">",
        ] {
            assert_eq!(rewrite_links(html, tracked), html);
        }
    }

    #[test]
    fn additions_go_before_the_end_of_the_body() {
        assert_eq!(
            insert_before_body_end("<html><BODY>x</BODY></html>", "<p>f</p>"),
            "<html><BODY>x<p>f</p></BODY></html>"
        );
        assert_eq!(
            insert_before_body_end("<p>x</p>", "<p>f</p>"),
            "<p>x</p><p>f</p>"
        );
    }

    #[test]
    fn the_text_footer_follows_a_signature_separator() {
        assert_eq!(
            text_with_footer("Hello\n\n", "https://h.test/u/t"),
            "Hello\n\n-- \nUnsubscribe: https://h.test/u/t\n"
        );
        assert_eq!(
            text_with_footer("", "https://h.test/u/t"),
            "Unsubscribe: https://h.test/u/t\n"
        );
    }

    #[test]
    fn escaping_covers_attribute_quotes() {
        assert_eq!(escape_html("a&b<\"'>"), "a&amp;b&lt;&quot;&#39;&gt;");
        assert_eq!(unescape_html(&escape_html("a&b<\"'>")), "a&b<\"'>");
    }
}
