//! SQL identifiers taken from configuration: validated as plain identifiers once, quoted on use,
//! so that a table or column name can never carry SQL.

use std::fmt;

/// A validated plain SQL identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("expected a plain SQL identifier (letters, digits and _, not starting with a digit, at most 63 characters), got {0:?}")]
pub struct IdentError(pub String);

impl Ident {
    pub fn new(name: &str) -> Result<Ident, IdentError> {
        let mut chars = name.chars();
        let valid_start = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_');
        let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid_start && valid_rest && name.len() <= 63 {
            Ok(Ident(name.to_string()))
        } else {
            Err(IdentError(name.to_string()))
        }
    }

    /// The name as written in configuration.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The name quoted for SQL; both backends use double quotes.
    pub fn q(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_refuses_sql() {
        assert!(Ident::new("customer_notes").is_ok());
        assert!(Ident::new("_x1").is_ok());
        for bad in [
            "",
            "1abc",
            "customers; drop table x",
            "a\"b",
            "naïve",
            "a-b",
            &"x".repeat(64),
        ] {
            assert!(Ident::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn quotes_with_double_quotes() {
        assert_eq!(Ident::new("Orders").unwrap().q(), "\"Orders\"");
    }
}
