use phonenumber::metadata::DATABASE;

use super::ValueError;

/// A phone number in E.164 form (`+447700900123`), the form SMS providers take.
///
/// Input must carry its country code: there is no default region to guess from.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Room for a 15-digit E.164 number with spaces, dashes and brackets.
    pub const MAX_CHARS: usize = 32;

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValueError::too_many_chars(Self::MAX_CHARS));
        }
        let invalid = || ValueError::Invalid("is not a valid E.164 phone number".into());
        // phonenumber reads letters as keypad digits and accepts extensions;
        // neither belongs in an address we hand to an SMS provider.
        let Some(rest) = s.strip_prefix('+') else {
            return Err(ValueError::Invalid(
                "must start with '+' and the country code".into(),
            ));
        };
        if !rest
            .chars()
            .all(|c| c.is_ascii_digit() || " -.()".contains(c))
        {
            return Err(invalid());
        }
        let number = phonenumber::parse(None, s).map_err(|_| invalid())?;
        if number.is_valid() || fits_numbering_plan(&number) {
            Ok(Self(
                number.format().mode(phonenumber::Mode::E164).to_string(),
            ))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ISO 3166 alpha-2 country the number belongs to, where the
    /// numbering plan tells (cost-aware routing prices SMS by country).
    pub fn country(&self) -> Option<String> {
        let number = phonenumber::parse(None, &self.0).ok()?;
        number.country().id().map(|id| format!("{id:?}"))
    }
}

text_value!(PhoneNumber);
redacted_debug!(PhoneNumber);

/// libphonenumber's `is_valid` also demands that the number lies in a range it
/// knows to be allocated, which refuses Ofcom's drama range (+44 7700 900xxx)
/// and any block released after the metadata was built. A number whose length
/// and digits fit its country's numbering plan is valid enough to try.
fn fits_numbering_plan(number: &phonenumber::PhoneNumber) -> bool {
    let national = number.national().to_string();
    let Ok(length) = u16::try_from(national.len()) else {
        return false;
    };
    let Some(regions) = DATABASE.by_code(&number.code().value()) else {
        return false;
    };
    regions.iter().any(|region| {
        let plan = region.descriptors();
        let length_possible = [
            plan.fixed_line(),
            plan.mobile(),
            plan.toll_free(),
            plan.premium_rate(),
            plan.shared_cost(),
            plan.personal_number(),
            plan.voip(),
            plan.pager(),
            plan.uan(),
            plan.voicemail(),
        ]
        .into_iter()
        .flatten()
        .any(|kind| kind.possible_length().contains(&length));
        let whole_match = plan
            .general()
            .national_number()
            .find(&national)
            .is_some_and(|m| m.start() == 0 && m.end() == national.len());
        length_possible && whole_match
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_e164() {
        assert_eq!(
            PhoneNumber::parse("+447700900123").unwrap().as_str(),
            "+447700900123"
        );
        assert_eq!(
            PhoneNumber::parse("+1 (415) 555-2671").unwrap().as_str(),
            "+14155552671"
        );
        assert_eq!(
            PhoneNumber::parse("+33 6 12 34 56 78").unwrap().as_str(),
            "+33612345678"
        );
    }

    #[test]
    fn rejects_numbers_that_are_not_valid() {
        for bad in [
            "",
            "12345",
            "+12345",
            "+4412",
            "+44770090012345",
            "+447700900123abc",
            "+44 7700 900123 ext. 5",
            "+999 123 456 789",
            "07700 900123",
        ] {
            assert!(
                PhoneNumber::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(PhoneNumber::parse(&format!("+44{}", "7".repeat(40))).is_err());
    }
}
