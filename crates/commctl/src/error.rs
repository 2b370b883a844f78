//! The error every command returns: a message for stderr and the process exit code.

use std::fmt;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: any error (server error, request rejected, connection failure, wrong credentials).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the command line was wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the named object does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;

/// A failed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Process exit code.
    pub code: u8,
    /// What went wrong, for stderr.
    pub message: String,
    /// The HTTP status when the server answered with an error.
    pub http_status: Option<u16>,
}

impl CliError {
    /// A general error (exit 1).
    pub fn general(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_ERROR,
            message: message.into(),
            http_status: None,
        }
    }

    /// A command-line error found after parsing (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_USAGE,
            message: message.into(),
            http_status: None,
        }
    }

    /// Something named does not exist (exit 3).
    pub fn not_found(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_NOT_FOUND,
            message: message.into(),
            http_status: Some(404),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::general(e.to_string())
    }
}

/// Result of a command.
pub type CliResult<T> = Result<T, CliError>;
