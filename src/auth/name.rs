//! Display names: what a person is called in the chat and in the viewing log.
//!
//! A name is fixed at login and then only ever shown, so it is cleaned once,
//! here: trimmed, without control characters (no terminal escapes or invisible
//! text in other people's screens), 1-32 characters. Holding a `DisplayName`
//! means that check was made; login, chat and the family records all take one.

use std::fmt;

pub const MAX_NAME_CHARS: usize = 32;

/// A cleaned, non-empty name of at most [`MAX_NAME_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// Cleans `raw`; the error says what a valid name is.
    pub fn parse(raw: &str) -> Result<DisplayName, String> {
        let name = clean_text(raw, false);
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(format!("name must be 1-{MAX_NAME_CHARS} characters"));
        }
        Ok(DisplayName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for DisplayName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl AsRef<str> for DisplayName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Trims and removes control characters, keeping line breaks when asked (chat
/// messages may have several lines; names may not).
pub fn clean_text(s: &str, keep_newlines: bool) -> String {
    s.trim()
        .chars()
        .filter(|&c| !c.is_control() || (keep_newlines && c == '\n'))
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_cleaned_and_bounded() {
        assert_eq!(DisplayName::parse("  Ana ").unwrap().as_str(), "Ana");
        assert_eq!(
            DisplayName::parse("a\u{1b}[31mb\n").unwrap().as_str(),
            "a[31mb"
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("\u{7}").is_err());
        assert!(
            DisplayName::parse(&"ñ".repeat(32)).is_ok(),
            "characters, not bytes"
        );
        assert!(DisplayName::parse(&"n".repeat(33)).is_err());
    }

    #[test]
    fn messages_keep_their_line_breaks() {
        assert_eq!(clean_text(" x\ny\u{7} ", true), "x\ny");
        assert_eq!(clean_text(" x\ny ", false), "xy");
    }
}
