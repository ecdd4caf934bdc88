//! Errors about the user's data. They name the file at fault, since a
//! dataset is thousands of files and "bad image" alone would leave the user
//! searching.

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq)]
pub struct DataError {
    /// The file or folder at fault, as reached from where the user pointed.
    pub file: PathBuf,
    pub message: String,
    pub help: Option<String>,
}

impl DataError {
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> DataError {
        DataError {
            file: file.into(),
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> DataError {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)?;
        match &self.help {
            Some(help) => write!(f, "\n  = help: {help}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for DataError {}
