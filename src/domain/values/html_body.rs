use super::ValueError;
use super::text_body::check_body;

/// An HTML body, at most 256 KiB. It is stored as given; sanitising is the
/// renderer's job, since only it knows the output channel.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HtmlBody(String);

impl HtmlBody {
    pub const MAX_BYTES: usize = 256 * 1024;

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        check_body(s, Self::MAX_BYTES)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_value!(HtmlBody);
redacted_debug!(HtmlBody);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_html() {
        assert!(HtmlBody::parse("<p>Hello</p>").is_ok());
        assert!(HtmlBody::parse(&"h".repeat(HtmlBody::MAX_BYTES)).is_ok());
        assert!(HtmlBody::parse(&"h".repeat(HtmlBody::MAX_BYTES + 1)).is_err());
    }
}
