//! [`SqlError`]: every failure of a statement, with a stable [`ErrorCode`] a client can act
//! on (retry, fix the statement, start the transaction again) and a message that says what
//! went wrong and what to do.
//!
//! The split that matters to callers is [`ErrorCode::is_retryable`]: `Aborted` and
//! `Unavailable` mean nothing was committed and the whole transaction may be run again;
//! `Indeterminate` means a commit may or may not have happened and must never be retried
//! blindly.

use std::fmt;

use crate::kv::KvError;

/// What kind of failure a [`SqlError`] is. [`ErrorCode::as_str`] is stable: the gRPC layer
/// and clients may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The statement does not parse.
    Syntax,
    /// No table of that name.
    UndefinedTable,
    /// No column of that name in the table.
    UndefinedColumn,
    /// CREATE TABLE of a name that exists.
    DuplicateTable,
    /// A value of the wrong type for a column or operator.
    DatatypeMismatch,
    /// NULL written to a NOT NULL (or primary key) column.
    NotNullViolation,
    /// A row with that primary key already exists.
    UniqueViolation,
    /// A key, row or string longer than its limit.
    ValueTooLarge,
    /// A bad value or argument (overflow, division by zero, a bad timestamp...).
    InvalidArgument,
    /// Valid SQL that Meridian does not implement.
    FeatureNotSupported,
    /// The statement is not allowed in the session's transaction state.
    InvalidTransactionState,
    /// The transaction was aborted; nothing it wrote is visible. Retry it whole.
    Aborted,
    /// The cluster could not be reached; nothing was committed. Retry.
    Unavailable,
    /// A commit was sent but its outcome is unknown. Check before retrying.
    Indeterminate,
    /// A bug or a storage failure.
    Internal,
}

impl ErrorCode {
    /// A stable lower-case name, e.g. `"aborted"`, `"undefined_table"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Syntax => "syntax",
            ErrorCode::UndefinedTable => "undefined_table",
            ErrorCode::UndefinedColumn => "undefined_column",
            ErrorCode::DuplicateTable => "duplicate_table",
            ErrorCode::DatatypeMismatch => "datatype_mismatch",
            ErrorCode::NotNullViolation => "not_null_violation",
            ErrorCode::UniqueViolation => "unique_violation",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::FeatureNotSupported => "feature_not_supported",
            ErrorCode::InvalidTransactionState => "invalid_transaction_state",
            ErrorCode::Aborted => "aborted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Indeterminate => "indeterminate",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether running the whole transaction again may succeed (nothing was committed).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Aborted | ErrorCode::Unavailable)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A statement's failure. Displayed as `"<code>: <message>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SqlError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong and what to do.
    pub message: String,
}

impl SqlError {
    /// An error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        SqlError {
            code,
            message: message.into(),
        }
    }
}

/// Shorthand constructors, one per common code.
macro_rules! ctor {
    ($($name:ident => $code:ident),* $(,)?) => {
        impl SqlError {
            $(
                #[doc = concat!("A [`ErrorCode::", stringify!($code), "`] error.")]
                pub fn $name(message: impl Into<String>) -> Self {
                    SqlError::new(ErrorCode::$code, message)
                }
            )*
        }
    };
}

ctor! {
    syntax => Syntax,
    undefined_table => UndefinedTable,
    undefined_column => UndefinedColumn,
    mismatch => DatatypeMismatch,
    too_large => ValueTooLarge,
    invalid => InvalidArgument,
    unsupported => FeatureNotSupported,
    txn_state => InvalidTransactionState,
    internal => Internal,
}

impl From<KvError> for SqlError {
    fn from(e: KvError) -> Self {
        let code = match &e {
            KvError::Aborted(_) => ErrorCode::Aborted,
            KvError::Unavailable(_) => ErrorCode::Unavailable,
            KvError::Indeterminate(_) => ErrorCode::Indeterminate,
            KvError::ReadOnly => ErrorCode::InvalidTransactionState,
            KvError::Unsupported(_) => ErrorCode::FeatureNotSupported,
            KvError::Failed(_) => ErrorCode::Internal,
        };
        SqlError::new(code, e.to_string())
    }
}

/// The result of SQL-layer operations.
pub type SqlResult<T> = Result<T, SqlError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_split() {
        assert!(
            SqlError::from(KvError::Aborted("x".into()))
                .code
                .is_retryable()
        );
        assert!(
            SqlError::from(KvError::Unavailable("x".into()))
                .code
                .is_retryable()
        );
        assert!(
            !SqlError::from(KvError::Indeterminate("x".into()))
                .code
                .is_retryable()
        );
        assert_eq!(ErrorCode::UniqueViolation.as_str(), "unique_violation");
    }
}
