crate::domain::values::version_number!(
    /// A workflow's version, counted from 1; a run is pinned to the one it started with.
    WorkflowVersion
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one_and_counts_up() {
        assert!(WorkflowVersion::parse(0).is_err());
        assert!(serde_json::from_str::<WorkflowVersion>("0").is_err());
        assert_eq!(
            WorkflowVersion::FIRST.next().map(WorkflowVersion::get),
            Some(2)
        );
        assert_eq!(WorkflowVersion(u32::MAX).next(), None);
    }
}
