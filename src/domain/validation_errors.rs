use std::fmt;

use serde::Serialize;

use super::values::ValueError;

/// One refused field of an input, by its path (`recipient.email`, `channels[1]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every refused field of an input, so a caller can fix them all in one round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The messages for one path, in the order they were found.
    pub fn at(&self, path: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|error| error.path == path)
            .map(|error| error.message.as_str())
            .collect()
    }

    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Keeps the value, or records why it was refused.
    pub(crate) fn check<T>(
        &mut self,
        path: impl Into<String>,
        parsed: Result<T, ValueError>,
    ) -> Option<T> {
        parsed
            .map_err(|error| self.add(path, error.to_string()))
            .ok()
    }

    /// Parses an optional field; `None` when absent or refused.
    pub(crate) fn optional<T>(
        &mut self,
        path: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Option<T> {
        raw.and_then(|raw| self.check(path, parse(raw)))
    }

    /// Parses a required field; `None` (with an error recorded) when absent or refused.
    pub(crate) fn required<R, T>(
        &mut self,
        path: &str,
        raw: Option<R>,
        parse: impl FnOnce(R) -> Result<T, ValueError>,
    ) -> Option<T> {
        match raw {
            Some(raw) => self.check(path, parse(raw)),
            None => {
                self.add(path, "is required");
                None
            }
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            error.fmt(f)?;
        }
        Ok(())
    }
}
