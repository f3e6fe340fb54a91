use crate::domain::values::{Alphabet, bounded_string};

bounded_string!(
    /// A workflow's name (`comment_digest`, `orders.shipped`): 1–128 of
    /// `a-z 0-9 _ . -`, the same rule as a template key.
    WorkflowKey,
    128,
    Alphabet::DottedSlug
);

bounded_string!(
    /// A step's name within its workflow (`wait_for_read`): 1–64 of
    /// `a-z 0-9 _ -`. Gotos and conditions name steps by it, and the run's
    /// timeline shows it.
    StepName,
    64,
    Alphabet::Slug
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dotted_slugs_and_step_names_plain_slugs() {
        assert!(WorkflowKey::parse("orders.shipped").is_ok());
        assert!(WorkflowKey::parse("Orders").is_err());
        assert!(StepName::parse("wait_for-read").is_ok());
        assert!(StepName::parse("a.b").is_err());
        assert!(StepName::parse(&"s".repeat(65)).is_err());
    }
}
