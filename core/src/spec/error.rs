//! Errors in a desired-state file, each pinned to a line and column.
//!
//! The parser collects every problem it can find in one pass, so a user fixes a file in one
//! round trip instead of one error at a time.

use std::fmt;
use std::path::{Path, PathBuf};

/// How much of a text from outside (an API server's message, a plugin's error, a name from
/// a kubeconfig) is printed; the rest is cut (the CLI logs the whole text at `-vv`).
pub const MAX_OUTSIDE_TEXT: usize = 400;

/// `text` cut to at most `max` characters, saying how much was left out. Never splits a
/// character.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}… [{} more bytes cut]", &text[..cut], text.len() - cut)),
    }
}

/// A 1-based position in the file, as editors count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// Converts a byte offset into a line and a column counted in characters.
    pub fn from_offset(text: &str, offset: usize) -> Location {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: Location,
    pub message: String,
    /// What to do about it, when there is something useful to say.
    pub hint: Option<String>,
}

/// The most problems listed for one file; the rest are counted. A file with 50 MB of
/// unknown keys stays one screen of errors, and its validation memory stays bounded.
pub const MAX_PROBLEMS: usize = 50;

/// Every problem found in one file, sorted by position: the first [`MAX_PROBLEMS`] of them,
/// and how many there were in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
    /// How many problems the file has (at least `problems.len()`).
    pub total: usize,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.path.display(), p.location.line, p.location.column, p.message)?;
            if let Some(hint) = &p.hint {
                write!(f, "\n  hint: {hint}")?;
            }
        }
        let more = self.total.saturating_sub(self.problems.len());
        if more > 0 {
            write!(f, "\n... and {more} more problem{} (the first {} are listed)", plural(more), self.problems.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl Problems {
    /// A list of problems that is complete (nothing was left out).
    pub fn new(path: PathBuf, problems: Vec<Problem>) -> Problems {
        let total = problems.len();
        Problems { path, problems, total }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.problems
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "file": self.path.display().to_string(),
                        "line": p.location.line,
                        "column": p.location.column,
                        "message": p.message,
                        "hint": p.hint,
                    })
                })
                .collect(),
        )
    }
}

/// Why a desired-state file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read at all (missing, not a regular file, over the size
    /// limit); the message says which.
    #[error("{source}")]
    Read {
        path: PathBuf,
        #[source]
        source: super::files::FileError,
    },
    /// The file was read but is not a valid desired state; every problem is listed.
    #[error("{0}")]
    Invalid(Problems),
}

impl SpecError {
    pub fn path(&self) -> &Path {
        match self {
            SpecError::Read { path, .. } => path,
            SpecError::Invalid(p) => &p.path,
        }
    }
}
