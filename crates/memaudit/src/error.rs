//! User-facing errors: one line, naming the file, line or flag, and what to do; exit code 2.

use std::fmt;

/// Exit code for every error the user can cause (bad flags, bad files, refused settings).
pub const EXIT_USAGE: i32 = 2;

/// An error with a message meant for the person at the terminal.
#[derive(Debug)]
pub struct UserError(pub String);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// Shorthand: `return Err(user(format!(...)))`.
pub fn user(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError(msg.into()))
}

/// Render an error chain as one line ("outer: inner: innermost").
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        // Context layers often repeat their source's text; keep each piece once.
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}
