//! What goes wrong with a scenario file, said as `path:line:column: message` like a compiler.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where in a scenario file something is: 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// `None` when the TOML parser could not say where (rare).
    pub line_col: Option<(usize, usize)>,
}

impl Location {
    /// The line and column of the byte offset `span.start` in `text`.
    pub fn of_span(path: &Path, text: &str, span: Option<Range<usize>>) -> Self {
        let line_col = span.map(|span| {
            let mut start = span.start.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before[line_start..].chars().count() + 1;
            (line, column)
        });
        Self {
            path: path.to_path_buf(),
            line_col,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line_col {
            Some((line, col)) => write!(f, "{}:{line}:{col}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read the scenario file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid TOML, does not match the format, or asks for something impossible.
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },

    #[error(
        "no scenario named {name:?} (looked in {}); available: {}",
        searched_list(searched),
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    NotFound {
        name: String,
        searched: Vec<PathBuf>,
        available: Vec<String>,
    },
}

fn searched_list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no scenarios/ folder was found".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ScenarioError {
    pub(crate) fn at(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            location: Location::of_span(path, text, span),
            message: message.into(),
        }
    }

    /// The line the error is on, when it is about a place in a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Invalid { location, .. } => location.line_col.map(|(line, _)| line),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_one_based_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        let at = |offset| Location::of_span(Path::new("f.toml"), text, Some(offset..offset + 1));
        assert_eq!(at(0).to_string(), "f.toml:1:1");
        assert_eq!(at(6).to_string(), "f.toml:2:1");
        // Columns count characters, not bytes: "bé " is three characters and four bytes.
        assert_eq!(at(10).to_string(), "f.toml:2:4");
        assert_eq!(at(1000).to_string(), "f.toml:3:1");
        let nowhere = Location::of_span(Path::new("f.toml"), text, None);
        assert_eq!(nowhere.to_string(), "f.toml");
    }
}
