use url::Url;

use super::ValueError;

/// An absolute `http` or `https` URL of at most 2048 characters: callbacks,
/// webhook targets, call-to-action links.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpUrl(Url);

impl HttpUrl {
    /// What browsers and proxies reliably carry.
    pub const MAX_CHARS: usize = 2048;

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValueError::too_many_chars(Self::MAX_CHARS));
        }
        let url = Url::parse(s)
            .map_err(|error| ValueError::Invalid(format!("is not a URL ({error})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ValueError::Invalid("must use http or https".into()));
        }
        // Normalising (percent-encoding, a trailing '/') can lengthen the URL.
        if url.as_str().len() > Self::MAX_CHARS {
            return Err(ValueError::too_many_chars(Self::MAX_CHARS));
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// Scheme, host and port (`https://hooks.example.com`, the port left out
    /// when it is the scheme's default): the unit an endpoint's health and
    /// concurrency are kept by.
    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }

    /// The host alone, whatever the scheme and port.
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }
}

text_value!(HttpUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https() {
        assert_eq!(
            HttpUrl::parse("https://api.example.com/hooks?x=1")
                .unwrap()
                .as_str(),
            "https://api.example.com/hooks?x=1"
        );
        assert_eq!(
            HttpUrl::parse("http://localhost:8080").unwrap().as_str(),
            "http://localhost:8080/"
        );
    }

    #[test]
    fn origin_is_scheme_host_and_port() {
        let origin = |s: &str| HttpUrl::parse(s).unwrap().origin();
        assert_eq!(
            origin("https://Hooks.Example.com/a?b=1"),
            "https://hooks.example.com"
        );
        assert_eq!(
            origin("https://hooks.example.com:443/x"),
            "https://hooks.example.com"
        );
        assert_eq!(origin("http://127.0.0.1:9000/x"), "http://127.0.0.1:9000");
        assert_ne!(origin("http://h.example/"), origin("https://h.example/"));
        assert_eq!(
            HttpUrl::parse("http://h.example:81/").unwrap().host(),
            "h.example"
        );
    }

    #[test]
    fn rejects_other_schemes_relative_and_long_urls() {
        for bad in [
            "",
            "ftp://example.com/file",
            "mailto:a@b.com",
            "/relative",
            "example.com",
            "javascript:alert(1)",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("https://example.com/{}", "p".repeat(2048));
        assert_eq!(HttpUrl::parse(&long), Err(ValueError::too_many_chars(2048)));
    }
}
