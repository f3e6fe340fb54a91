use super::Alphabet;

bounded_string!(
    /// A tenant's identifier: 1–64 of `a-z 0-9 _ -`, starting with a letter or digit.
    ///
    /// It is part of stream ids and log lines, so it stays a slug.
    TenantId,
    64,
    Alphabet::Slug
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs() {
        for good in ["t_001", "acme", "0day", "a-b_c"] {
            assert_eq!(TenantId::parse(good).unwrap().as_str(), good);
        }
        assert!(TenantId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", " ", "_acme", "-acme", "Acme", "ac me", "acme!", "é"] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            TenantId::parse(&"a".repeat(65)),
            Err(crate::domain::values::ValueError::too_many_chars(64))
        );
    }

    #[test]
    fn deserialises_through_parse() {
        assert!(serde_json::from_str::<TenantId>("\"acme\"").is_ok());
        assert!(serde_json::from_str::<TenantId>("\"ACME\"").is_err());
        assert_eq!(
            serde_json::to_string(&TenantId::parse("acme").unwrap()).unwrap(),
            "\"acme\""
        );
    }
}
