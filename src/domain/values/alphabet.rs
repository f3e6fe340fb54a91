use super::ValueError;

/// The characters a bounded string may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alphabet {
    /// `a-z 0-9 _ -`, starting with a letter or digit: safe in URLs, stream ids and logs.
    Slug,
    /// `a-z 0-9 _ . -`, starting with a letter or digit: dotted names such as `billing.invoice_paid`.
    DottedSlug,
    /// `A-Z a-z 0-9 _ -`: what ntfy accepts as a topic.
    Topic,
    /// Printable ASCII without spaces: keys and ids that travel in headers.
    VisibleAscii,
    /// Any text without control characters, not only whitespace.
    Text,
}

impl Alphabet {
    fn allows(self, c: char) -> bool {
        match self {
            Alphabet::Slug => c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
            Alphabet::DottedSlug => Alphabet::Slug.allows(c) || c == '.',
            Alphabet::Topic => c.is_ascii_alphanumeric() || c == '_' || c == '-',
            Alphabet::VisibleAscii => c.is_ascii_graphic(),
            Alphabet::Text => !c.is_control(),
        }
    }

    fn must_start_alphanumeric(self) -> bool {
        matches!(self, Alphabet::Slug | Alphabet::DottedSlug)
    }

    fn describe(self) -> &'static str {
        match self {
            Alphabet::Slug => {
                "may contain only a-z, 0-9, '_' and '-', and must start with a letter or digit"
            }
            Alphabet::DottedSlug => {
                "may contain only a-z, 0-9, '_', '.' and '-', and must start with a letter or digit"
            }
            Alphabet::Topic => "may contain only A-Z, a-z, 0-9, '_' and '-'",
            Alphabet::VisibleAscii => "may contain only printable ASCII characters without spaces",
            Alphabet::Text => "must not contain control characters",
        }
    }

    /// The same rule as a JSON Schema (ECMA-262) `pattern`, for published
    /// schemas; the length limit is each type's own `maxLength`.
    pub(crate) const fn pattern(self) -> &'static str {
        match self {
            Alphabet::Slug => "^[a-z0-9][a-z0-9_-]*$",
            Alphabet::DottedSlug => "^[a-z0-9][a-z0-9_.-]*$",
            Alphabet::Topic => "^[A-Za-z0-9_-]+$",
            Alphabet::VisibleAscii => "^[!-~]+$",
            Alphabet::Text => "^[^\\p{Cc}]*[^\\p{Cc}\\s][^\\p{Cc}]*$",
        }
    }

    /// Accepts `s` if it has 1..=`max_chars` characters, all from this alphabet.
    pub(crate) fn check(self, s: &str, max_chars: usize) -> Result<(), ValueError> {
        if s.trim().is_empty() {
            return Err(ValueError::Empty);
        }
        if s.chars().count() > max_chars {
            return Err(ValueError::too_many_chars(max_chars));
        }
        let starts_well =
            !self.must_start_alphanumeric() || s.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !starts_well || !s.chars().all(|c| self.allows(c)) {
            return Err(ValueError::Invalid(self.describe().to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ALL: [Alphabet; 5] = [
        Alphabet::Slug,
        Alphabet::DottedSlug,
        Alphabet::Topic,
        Alphabet::VisibleAscii,
        Alphabet::Text,
    ];

    proptest! {
        /// The published pattern accepts exactly what `check` accepts.
        #[test]
        fn pattern_agrees_with_check(s in "[a-zA-Z0-9_.\\- !~\t\u{0}\u{7f}\u{a0}é\u{2003}]{0,6}") {
            for alphabet in ALL {
                let pattern = regex::Regex::new(alphabet.pattern()).unwrap();
                prop_assert_eq!(
                    pattern.is_match(&s),
                    alphabet.check(&s, usize::MAX).is_ok(),
                    "{:?} on {:?}", alphabet, s
                );
            }
        }
    }
}
