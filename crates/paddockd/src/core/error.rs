//! Paddock's own error: a code and a message, what every core operation
//! returns. Front ends turn it into their protocol's error (gRPC status, HTTP
//! status) at the edge; nothing inside the core knows about tonic's `Status`.

use std::fmt;

/// The kinds of failure a caller can tell apart. The names and meanings are
/// gRPC's, which every front end maps from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Cancelled,
    DeadlineExceeded,
    Unimplemented,
    /// Anything else the guest answered, passed on as it came.
    Unknown,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: Code,
    message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

macro_rules! constructors {
    ($($name:ident => $code:ident),* $(,)?) => {
        $(pub fn $name(message: impl Into<String>) -> Self {
            Self { code: Code::$code, message: message.into() }
        })*
    };
}

impl Error {
    constructors! {
        invalid_argument => InvalidArgument,
        not_found => NotFound,
        already_exists => AlreadyExists,
        failed_precondition => FailedPrecondition,
        resource_exhausted => ResourceExhausted,
        permission_denied => PermissionDenied,
        unauthenticated => Unauthenticated,
        unavailable => Unavailable,
        unimplemented => Unimplemented,
    }

    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// Something that should not happen; the message says what, on one line.
    pub fn internal(e: impl fmt::Display) -> Self {
        Self { code: Code::Internal, message: format!("{e:#}").replace('\n', " ") }
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// `Error::internal` as a function, for `map_err(internal)`.
pub fn internal(e: impl fmt::Display) -> Error {
    Error::internal(e)
}

/// The guest answers in gRPC; its code and message are passed on unchanged.
impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code as G;
        let code = match s.code() {
            G::InvalidArgument | G::OutOfRange => Code::InvalidArgument,
            G::NotFound => Code::NotFound,
            G::AlreadyExists => Code::AlreadyExists,
            G::FailedPrecondition | G::Aborted => Code::FailedPrecondition,
            G::ResourceExhausted => Code::ResourceExhausted,
            G::PermissionDenied => Code::PermissionDenied,
            G::Unauthenticated => Code::Unauthenticated,
            G::Unavailable => Code::Unavailable,
            G::Cancelled => Code::Cancelled,
            G::DeadlineExceeded => Code::DeadlineExceeded,
            G::Unimplemented => Code::Unimplemented,
            G::Internal | G::DataLoss => Code::Internal,
            G::Ok | G::Unknown => Code::Unknown,
        };
        Self { code, message: s.message().to_string() }
    }
}

/// A stream of results, what streaming operations return.
pub type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T>> + Send>>;

/// A guest's gRPC stream as a core stream.
pub fn from_guest<T: Send + 'static>(s: tonic::Streaming<T>) -> Stream<T> {
    use tokio_stream::StreamExt;
    Box::pin(s.map(|r| r.map_err(Error::from)))
}
