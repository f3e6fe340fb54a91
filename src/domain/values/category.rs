use super::Alphabet;

bounded_string!(
    /// What kind of message this is (`auth`, `billing.invoice`): 1–64 of
    /// `a-z 0-9 _ . -`. Preferences and analytics group by it.
    Category,
    64,
    Alphabet::DottedSlug
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dotted_slugs_and_rejects_others() {
        assert!(Category::parse("billing.invoice_paid").is_ok());
        for bad in ["", ".billing", "Billing", "a b"] {
            assert!(Category::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Category::parse(&"c".repeat(65)).is_err());
    }
}
