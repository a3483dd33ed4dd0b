//! The ground of configuration: the error every subsystem's config returns,
//! naming the key that is wrong.
//!
//! Owns [`ConfigError`] only; each subsystem types and validates its own keys,
//! and `config/mod.rs` composes them.

use std::fmt;

/// A config value that cannot be used, named by its key (or, for a
/// template error, by the file and line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config: {}", self.message)
        } else {
            write!(f, "config key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
