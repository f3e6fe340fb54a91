use super::Alphabet;

bounded_string!(
    /// A template's name (`otp_login`, `billing.receipt`): 1–128 of `a-z 0-9 _ . -`.
    TemplateKey,
    128,
    Alphabet::DottedSlug
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_template_keys() {
        assert!(TemplateKey::parse("magic_link_login").is_ok());
        assert!(TemplateKey::parse("otp_login:v3").is_err());
        assert!(TemplateKey::parse(&"k".repeat(128)).is_ok());
        assert!(TemplateKey::parse(&"k".repeat(129)).is_err());
    }
}
