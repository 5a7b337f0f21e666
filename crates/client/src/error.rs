//! The client's one error type and the stable codes a caller acts on.
//!
//! The server puts a stable code in the `meridian-error` metadata of every gRPC status it
//! returns; [`Code`] mirrors those codes. When a status carries no such code (a proxy, a
//! transport failure, an older server) the code falls back on the gRPC status code.
//!
//! The one distinction that matters most is between what can be retried and what cannot:
//! `aborted` and `unavailable` mean nothing was committed, so the whole transaction may run
//! again ([`Error::is_retryable`]); `indeterminate` means a commit was sent and its outcome is
//! unknown, so running it again could apply it twice. A Commit whose reply is lost in the
//! network is reported as `indeterminate`, never as `unavailable`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The metadata key under which the server puts the stable error code.
pub const ERROR_CODE_KEY: &str = "meridian-error";

/// A stable error code, as sent by the server in `meridian-error` metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The transaction was aborted and nothing it wrote is visible: retry it whole.
    Aborted,
    /// A tablet, its leader or the node cannot be reached now; nothing was committed: retry.
    Unavailable,
    /// A commit was sent but its outcome is unknown: check before retrying.
    Indeterminate,
    /// A request argument is invalid.
    InvalidArgument,
    /// The SQL does not parse.
    Syntax,
    /// The statement names a table that does not exist.
    UndefinedTable,
    /// The statement names a column that does not exist.
    UndefinedColumn,
    /// `CREATE TABLE` of a table that exists.
    DuplicateTable,
    /// A value has the wrong type for its column or operator.
    DatatypeMismatch,
    /// A `NULL` was written to a `NOT NULL` column.
    NotNullViolation,
    /// A write would duplicate a primary or unique key.
    UniqueViolation,
    /// A value is too large to store.
    ValueTooLarge,
    /// The statement uses SQL that Meridian does not support.
    FeatureNotSupported,
    /// The statement is not allowed in the session's transaction state (e.g. `COMMIT` outside
    /// a transaction, or a write in a read-only one).
    InvalidTransactionState,
    /// No such session (the node restarted or the session expired): open a new one.
    NotFound,
    /// A bug or a storage failure on the server.
    Internal,
    /// An error raised by this library or by the caller's own code, not by the server.
    Client,
}

impl Code {
    /// The code as it appears on the wire, e.g. `"unique_violation"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Aborted => "aborted",
            Code::Unavailable => "unavailable",
            Code::Indeterminate => "indeterminate",
            Code::InvalidArgument => "invalid_argument",
            Code::Syntax => "syntax",
            Code::UndefinedTable => "undefined_table",
            Code::UndefinedColumn => "undefined_column",
            Code::DuplicateTable => "duplicate_table",
            Code::DatatypeMismatch => "datatype_mismatch",
            Code::NotNullViolation => "not_null_violation",
            Code::UniqueViolation => "unique_violation",
            Code::ValueTooLarge => "value_too_large",
            Code::FeatureNotSupported => "feature_not_supported",
            Code::InvalidTransactionState => "invalid_transaction_state",
            Code::NotFound => "not_found",
            Code::Internal => "internal",
            Code::Client => "client",
        }
    }

    /// Whether a transaction that failed with this code may run again whole: nothing it did
    /// was committed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Code::Aborted | Code::Unavailable)
    }

    /// The code a gRPC status code stands for when the status has no `meridian-error`.
    pub fn from_grpc(code: tonic::Code) -> Code {
        match code {
            tonic::Code::Aborted => Code::Aborted,
            tonic::Code::Unavailable => Code::Unavailable,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Code::InvalidArgument,
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::AlreadyExists => Code::UniqueViolation,
            tonic::Code::FailedPrecondition => Code::InvalidTransactionState,
            tonic::Code::Unimplemented => Code::FeatureNotSupported,
            _ => Code::Internal,
        }
    }

    /// What the caller should do about an error with this code.
    fn advice(self) -> &'static str {
        match self {
            Code::Aborted => "nothing was committed; retry the whole transaction",
            Code::Unavailable => "nothing was committed; retry, or try another node",
            Code::Indeterminate => {
                "the commit may or may not have been applied; check before running it again"
            }
            Code::NotFound => "the session is gone; open a new one",
            Code::Internal => "this is a server bug or a storage failure; see the server log",
            Code::InvalidTransactionState => "check BEGIN/COMMIT/ROLLBACK and read-only mode",
            _ => "the statement changed nothing; fix it and run it again",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the stable error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownCode(pub String);

impl FromStr for Code {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Code, UnknownCode> {
        let code = match s {
            "aborted" => Code::Aborted,
            "unavailable" => Code::Unavailable,
            "indeterminate" => Code::Indeterminate,
            "invalid_argument" => Code::InvalidArgument,
            "syntax" => Code::Syntax,
            "undefined_table" => Code::UndefinedTable,
            "undefined_column" => Code::UndefinedColumn,
            "duplicate_table" => Code::DuplicateTable,
            "datatype_mismatch" => Code::DatatypeMismatch,
            "not_null_violation" => Code::NotNullViolation,
            "unique_violation" => Code::UniqueViolation,
            "value_too_large" => Code::ValueTooLarge,
            "feature_not_supported" => Code::FeatureNotSupported,
            "invalid_transaction_state" => Code::InvalidTransactionState,
            "not_found" => Code::NotFound,
            "internal" => Code::Internal,
            "client" => Code::Client,
            other => return Err(UnknownCode(other.to_string())),
        };
        Ok(code)
    }
}

/// Everything that can go wrong talking to Meridian.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server (or the transport on its behalf) refused or failed a request.
    #[error("{code}: {message} ({})", code.advice())]
    Server {
        /// The stable code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// No node in the list could be reached.
    #[error(
        "unavailable: cannot connect to {urls}: {reason} \
         (is a node running there? pass another address to try it next)"
    )]
    Connect {
        /// The addresses tried, comma-separated.
        urls: String,
        /// Why the last one failed.
        reason: String,
    },
    /// An address that is not a valid URL.
    #[error(
        "invalid_argument: bad address {url:?}: {reason} (write host:port or http://host:port)"
    )]
    InvalidUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `query_one` found no row or more than one.
    #[error("client: expected exactly one row, got {0} (add a WHERE on the key or a LIMIT 1)")]
    RowCount(usize),
    /// A read-write transaction kept failing with retryable errors until its time ran out.
    #[error("{}: gave up after {attempts} attempts in {elapsed:?}; last error: {last}", last.code())]
    RetriesExhausted {
        /// How many attempts ran.
        attempts: u32,
        /// How long they took in all.
        elapsed: Duration,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// An error from the caller's own code inside a transaction closure.
    #[error("client: {0}")]
    User(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Server { code, .. } => *code,
            Error::Connect { .. } => Code::Unavailable,
            Error::InvalidUrl { .. } => Code::InvalidArgument,
            Error::RowCount(_) | Error::User(_) => Code::Client,
            Error::RetriesExhausted { last, .. } => last.code(),
        }
    }

    /// Whether the failed transaction may be run again whole (`aborted`, `unavailable`):
    /// nothing it did was committed.
    pub fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }

    /// Wraps an error from the caller's own code so a transaction closure can return it.
    pub fn user(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::User(error.into())
    }

    /// An error with `code` raised by this library.
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Error {
        Error::Server {
            code,
            message: message.into(),
        }
    }

    /// The error a status stands for. `outcome_unknown_if_lost` is set for calls that may
    /// commit (Commit, autocommit Execute): if such a call was sent and its reply never came,
    /// the outcome is unknown (`indeterminate`); other calls lost that way are `unavailable`.
    pub(crate) fn from_status(status: &tonic::Status, outcome_unknown_if_lost: bool) -> Error {
        let message = status.message().to_string();
        let stable = status
            .metadata()
            .get(ERROR_CODE_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Code>().ok());
        let code = match stable {
            Some(code) => code,
            None if lost_in_transit(status) && outcome_unknown_if_lost => Code::Indeterminate,
            None if lost_in_transit(status) => Code::Unavailable,
            None => Code::from_grpc(status.code()),
        };
        Error::Server { code, message }
    }
}

/// Whether the request may have reached the server but its reply did not come back.
///
/// A status the server sent arrives in trailers and has no `source`; one made on this side
/// from a transport error (reset, timeout, protocol error) has one. Among those, a failure to
/// connect means the request never left, so the server cannot have acted on it.
fn lost_in_transit(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    if source.is_none() {
        return false;
    }
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return false;
        }
        source = err.source();
    }
    true
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        Error::from_status(&status, false)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_name() {
        let codes = [
            Code::Aborted,
            Code::Unavailable,
            Code::Indeterminate,
            Code::InvalidArgument,
            Code::Syntax,
            Code::UndefinedTable,
            Code::UndefinedColumn,
            Code::DuplicateTable,
            Code::DatatypeMismatch,
            Code::NotNullViolation,
            Code::UniqueViolation,
            Code::ValueTooLarge,
            Code::FeatureNotSupported,
            Code::InvalidTransactionState,
            Code::NotFound,
            Code::Internal,
            Code::Client,
        ];
        for code in codes {
            assert_eq!(code.as_str().parse::<Code>().unwrap(), code);
        }
        assert!("bogus".parse::<Code>().is_err());
    }

    #[test]
    fn metadata_code_wins_over_grpc_code() {
        let mut status = tonic::Status::internal("duplicate key");
        status
            .metadata_mut()
            .insert(ERROR_CODE_KEY, "unique_violation".parse().unwrap());
        let err = Error::from(status);
        assert_eq!(err.code(), Code::UniqueViolation);
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("duplicate key"));
    }

    #[test]
    fn grpc_code_is_the_fallback() {
        assert_eq!(
            Error::from(tonic::Status::aborted("x")).code(),
            Code::Aborted
        );
        assert!(Error::from(tonic::Status::unavailable("x")).is_retryable());
        assert_eq!(
            Error::from(tonic::Status::unknown("x")).code(),
            Code::Internal
        );
    }

    #[test]
    fn a_lost_commit_reply_is_indeterminate() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let lost = tonic::Status::from_error(Box::new(reset));
        let err = Error::from_status(&lost, true);
        assert_eq!(err.code(), Code::Indeterminate);
        assert!(!err.is_retryable());
        // The same loss on a call that cannot commit is only unavailable.
        assert_eq!(Error::from_status(&lost, false).code(), Code::Unavailable);

        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let never_sent =
            tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(
            Error::from_status(&never_sent, true).code(),
            Code::Unavailable
        );

        // A status the server sent without a stable code is taken at its gRPC code.
        let sent = tonic::Status::unavailable("overloaded");
        assert_eq!(Error::from_status(&sent, true).code(), Code::Unavailable);
        let mut aborted = tonic::Status::aborted("conflict");
        aborted
            .metadata_mut()
            .insert(ERROR_CODE_KEY, "aborted".parse().unwrap());
        assert_eq!(Error::from_status(&aborted, true).code(), Code::Aborted);
    }
}
