//! A configuration value that parsed but cannot be used, named by its key.
//!
//! Each component checks its own section (`check()`), and the config loader turns the key
//! into the line of the file that sets it, so an operator reads
//! `line 12, key mitigation.ttl_s: must be within 1 and 86400, not 0`.

/// A value serde accepted that its component refuses: the key (`table.key`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key} {problem}")]
pub struct Invalid {
    /// `table.key`, as written in the TOML file.
    pub key: &'static str,
    /// What is wrong, phrased to follow the key ("must be positive").
    pub problem: String,
}

impl Invalid {
    pub fn new(key: &'static str, problem: impl Into<String>) -> Self {
        Self {
            key,
            problem: problem.into(),
        }
    }
}
