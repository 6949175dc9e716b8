//! What kind of failure an error is, decided once by the module that raised it.
//!
//! Every module keeps its own `thiserror` enum (variants carry the path, table or key and,
//! where they wrap another error, its `source`), and each implements [`Classify`]: whether a
//! person must change something first ([`ErrorKind::Config`]), whether trying again later can
//! help ([`ErrorKind::Transient`]), or neither ([`ErrorKind::Permanent`]). `cli` turns the kind
//! into the exit code in one place; apply's retry loop and the scheduler read the same kind.

/// The three kinds of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: the configuration, the command line, the set-up (exit code 2). Nothing
    /// changes until the user fixes it.
    Config,
    /// A retry can get past it: a network cut, a lock held by another process, a server
    /// restarting (exit code 1).
    Transient,
    /// Neither: corruption, a value the target refuses, a bug (exit code 1).
    Permanent,
}

impl ErrorKind {
    /// The process exit code for a failure of this kind (see [`crate::cli`]).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Config => 2,
            ErrorKind::Transient | ErrorKind::Permanent => 1,
        }
    }
}

/// An error that knows its kind.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

/// An error and its sources as one line, each cause added once: what `cli` prints for errors
/// whose own message does not already carry the cause.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s = format!("{s}: {m}");
        }
        src = inner.source();
    }
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn one_line_adds_each_cause_once() {
        let e = Outer(std::io::Error::other("inner\ncause"));
        assert_eq!(one_line(&e), "outer: inner cause");
        assert_eq!(ErrorKind::Config.exit_code(), 2);
        assert_eq!(ErrorKind::Transient.exit_code(), 1);
    }
}
