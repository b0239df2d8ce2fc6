//! An error with its causes, printed once each.
//!
//! Every error type here shows only its own layer in `Display` and hands the cause over as
//! `source()` (the Rust API guidelines' rule), so printing the chain never repeats a cause.
//! [`Report`] is how the edges that are not `anyhow` print it: logs and the API's messages.

use std::{error::Error, fmt};

/// `layer: cause: cause's cause`, on one line.
pub struct Report<'a>(pub &'a dyn Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening the store")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_printed_once() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(Report(&e).to_string(), "opening the store: disk full");
        assert_eq!(
            format!("{:#}", anyhow::Error::new(e)),
            "opening the store: disk full"
        );
    }
}
