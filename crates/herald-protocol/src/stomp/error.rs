//! Why bytes could not be read as STOMP frames.

/// A malformed or oversized frame. The text of each variant is short, free of line breaks and
/// meant to go out as the `message` header of the `ERROR` frame that precedes the close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StompError {
    /// The command line and headers (everything before the body) are too long.
    #[error("frame headers exceed {0} bytes")]
    HeaderBlockTooLarge(usize),
    /// One header line (or the command line) is too long.
    #[error("header line exceeds {0} bytes")]
    HeaderLineTooLong(usize),
    /// Too many header lines.
    #[error("frame has more than {0} headers")]
    TooManyHeaders(usize),
    /// The body (declared by `content-length` or found before the NUL) is too long.
    #[error("frame body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// The whole frame is too long.
    #[error("frame exceeds {0} bytes")]
    FrameTooLarge(usize),
    /// The first line is not a STOMP command (shown truncated and escaped).
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A header line has no `:`.
    #[error("header line without ':'")]
    MissingColon,
    /// A header line starts with `:`.
    #[error("header with an empty name")]
    EmptyHeaderName,
    /// A `\` followed by an octet that the negotiated version does not define (`\t`, or `\r`
    /// before STOMP 1.2).
    #[error("undefined escape sequence \\{} in a header", .0.escape_ascii())]
    UndefinedEscape(u8),
    /// A header ends with a lone `\`.
    #[error("header ends with an unfinished escape sequence")]
    UnfinishedEscape,
    /// Commands and headers are UTF-8 text.
    #[error("header is not valid UTF-8")]
    NotUtf8,
    /// `content-length` is not a decimal octet count.
    #[error("invalid content-length {0:?}")]
    InvalidContentLength(String),
    /// The octet after the `content-length` bytes of the body is not NUL.
    #[error("frame body is not terminated by a NUL octet after content-length bytes")]
    MissingNul,
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Reading or writing the transport failed (only through the `tokio_util` codec traits).
    #[error("i/o error: {0}")]
    Io(String),
}

impl From<std::io::Error> for StompError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// A bounded rendering of client bytes for an error message (shown with `{:?}`, which
/// escapes control characters).
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 32;
    let mut out = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        out.push('…');
    }
    out
}
