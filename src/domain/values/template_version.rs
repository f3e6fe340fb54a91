super::version_number!(
    /// A template's version, counted from 1.
    TemplateVersion
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one() {
        assert!(TemplateVersion::parse(0).is_err());
        assert_eq!(TemplateVersion::parse(3).unwrap().get(), 3);
        assert!(serde_json::from_str::<TemplateVersion>("0").is_err());
        assert_eq!(
            serde_json::to_string(&TemplateVersion::parse(2).unwrap()).unwrap(),
            "2"
        );
    }
}
