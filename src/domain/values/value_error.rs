/// Why a value was refused. The field path is added by whoever parses a whole
/// request, so these messages read as the tail of "`recipient.email` ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} {unit}")]
    TooLong { max: usize, unit: &'static str },
    #[error("{0}")]
    Invalid(String),
}

impl ValueError {
    pub(crate) fn too_many_chars(max: usize) -> Self {
        ValueError::TooLong {
            max,
            unit: "characters",
        }
    }

    pub(crate) fn too_many_bytes(max: usize) -> Self {
        ValueError::TooLong { max, unit: "bytes" }
    }
}
