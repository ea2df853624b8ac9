//! The STOMP byte codec: a frame decoder that measures incrementally and never buffers past
//! its [`Limits`], and the encoder. Pure code: it implements `tokio_util`'s
//! [`Decoder`]/[`Encoder`] so a socket adapter can use `Framed`, and the same methods work on
//! WebSocket or SockJS message payloads.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{
    StompError,
    error::excerpt,
    frame::{self, Command, Escaping, Frame, HEARTBEAT, Version},
};

/// Size limits of one received frame. The specification lets servers bound the number of
/// headers, the length of header lines and the body; a frame over any limit is an error
/// (send `ERROR`, close), detected as soon as the offending byte arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole frame: command, headers, body and NUL.
    pub max_frame: usize,
    /// Command line plus header lines with their EOLs (everything before the body).
    pub max_header_block: usize,
    /// Number of header lines.
    pub max_headers: usize,
    /// One header line (or the command line), without its EOL, before unescaping.
    pub max_header_len: usize,
    /// Body octets.
    pub max_body: usize,
}

impl Limits {
    /// 64 KiB of headers, 100 headers, 8 KiB per header line, 1 MiB body.
    pub const DEFAULT: Limits = Limits {
        max_frame: 64 * 1024 + 1024 * 1024 + 1,
        max_header_block: 64 * 1024,
        max_headers: 100,
        max_header_len: 8 * 1024,
        max_body: 1024 * 1024,
    };

    /// Default header limits with a body limit (for example `limits.max_event_bytes`), the
    /// frame limit following.
    pub fn with_max_body(max_body: usize) -> Self {
        Self {
            max_body,
            max_frame: Self::DEFAULT
                .max_header_block
                .saturating_add(max_body)
                .saturating_add(1),
            ..Self::DEFAULT
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame.
    Frame(Frame),
    /// One or more EOLs between frames: a heart-beat, proof that the peer is alive.
    Heartbeat,
}

/// A heart-beat to send, for the [`Encoder`] impl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat;

/// Where the decoder is in the frame at the front of the buffer. Offsets are into the
/// buffer, which only grows at the back until the frame is taken.
#[derive(Debug)]
enum State {
    /// Reading the command and headers; `pos` is the next octet to look at.
    Head {
        pos: usize,
        line_start: usize,
        lines: usize,
    },
    /// Headers parsed; waiting for the body and the NUL.
    Body {
        command: Command,
        headers: Vec<(String, String)>,
        body_start: usize,
        content_length: Option<usize>,
        /// Next octet to search for the NUL (when there is no `content-length`).
        pos: usize,
    },
}

const FRESH: State = State::Head {
    pos: 0,
    line_start: 0,
    lines: 0,
};

/// Incremental STOMP decoder and encoder for one connection.
///
/// Feed the same buffer on every call (as `Framed` does): the decoder remembers how far it
/// has looked, so a frame arriving one byte at a time costs linear time.
#[derive(Debug)]
pub struct StompCodec {
    limits: Limits,
    version: Version,
    state: State,
}

impl Default for StompCodec {
    fn default() -> Self {
        Self::new(Limits::DEFAULT)
    }
}

impl StompCodec {
    /// A codec for a new connection. Until [`StompCodec::set_version`] it reads and writes
    /// STOMP 1.0 (no escaping), which is also how `CONNECT` and `CONNECTED` always look.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            version: Version::V1_0,
            state: FRESH,
        }
    }

    /// Switches escaping to the negotiated version (call it once `CONNECT` was handled,
    /// before decoding the next frame).
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The version in use.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The limits in use.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes the next frame or heart-beat off the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame (keep the bytes, read more,
    /// call again). Several EOLs in a row are reported as one [`Decoded::Heartbeat`]; the
    /// EOLs that trail a frame in the same buffer are consumed with it and not reported.
    ///
    /// # Errors
    /// A [`StompError`] when the bytes cannot be a valid frame within the limits. The
    /// stream cannot be resynchronised after that: send `ERROR` and close.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, StompError> {
        if let State::Head { pos: 0, .. } = self.state {
            let skipped = skip_eols(buf);
            if skipped > 0 {
                return Ok(Some(Decoded::Heartbeat));
            }
            if buf.is_empty() || &buf[..] == b"\r" {
                return Ok(None);
            }
        }
        let result = self.step(buf);
        if result.is_err() {
            // Whatever follows is garbage; start afresh if the caller insists on going on.
            self.state = FRESH;
            buf.clear();
        }
        result
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, StompError> {
        let lim = self.limits;
        if let State::Head {
            pos,
            line_start,
            lines,
        } = &mut self.state
        {
            let mut end = None; // (head_end, body_start, terminated_by_nul)
            let mut i = *pos;
            while i < buf.len() {
                let b = buf[i];
                if i >= lim.max_header_block {
                    return Err(StompError::HeaderBlockTooLarge(lim.max_header_block));
                }
                if b == 0 && *lines == 0 {
                    // No command holds a NUL: garbage, not a frame still arriving.
                    return Err(StompError::UnknownCommand(excerpt(&buf[..=i])));
                }
                if i == *line_start && *lines >= 1 && b == 0 {
                    // A NUL where a header line should start: a frame without the blank
                    // line, as the specification's own DISCONNECT and RECEIPT examples
                    // are written. Empty body.
                    end = Some((i, i, true));
                    break;
                }
                if b == b'\n' {
                    let line = strip_cr(&buf[*line_start..i]);
                    let len = line.len();
                    if *lines == 0 && len > 0 && Command::from_bytes(line).is_none() {
                        // Fail fast on what is not STOMP at all (an HTTP request, say).
                        return Err(StompError::UnknownCommand(excerpt(line)));
                    }
                    if len > lim.max_header_len {
                        return Err(StompError::HeaderLineTooLong(lim.max_header_len));
                    }
                    if len == 0 {
                        // The blank line (the first line is never empty: leading EOLs
                        // were skipped as heart-beats).
                        end = Some((*line_start, i + 1, false));
                        break;
                    }
                    *lines += 1;
                    if *lines > lim.max_headers + 1 {
                        return Err(StompError::TooManyHeaders(lim.max_headers));
                    }
                    *line_start = i + 1;
                } else if i - *line_start > lim.max_header_len {
                    // Longer than the limit even if the next octet is the CR of a CRLF.
                    return Err(StompError::HeaderLineTooLong(lim.max_header_len));
                }
                i += 1;
            }
            *pos = i;
            let Some((head_end, body_start, nul_ended)) = end else {
                return Ok(None);
            };
            let Head {
                command,
                headers,
                content_length,
            } = parse_head(&buf[..head_end], self.version)?;
            if nul_ended {
                let frame = Frame {
                    command,
                    headers,
                    body: bytes::Bytes::new(),
                };
                return Ok(Some(self.take(buf, head_end + 1, frame, 0..0)));
            }
            if let Some(n) = content_length {
                if n > lim.max_body {
                    return Err(StompError::BodyTooLarge(lim.max_body));
                }
                if body_start.saturating_add(n).saturating_add(1) > lim.max_frame {
                    return Err(StompError::FrameTooLarge(lim.max_frame));
                }
            }
            self.state = State::Body {
                command,
                headers,
                body_start,
                content_length,
                pos: body_start,
            };
        }
        let State::Body {
            body_start,
            content_length,
            pos,
            ..
        } = &mut self.state
        else {
            return Ok(None);
        };
        let body_start = *body_start;
        let body_end = match *content_length {
            Some(n) => {
                let end = body_start + n;
                if buf.len() <= end {
                    return Ok(None);
                }
                if buf[end] != 0 {
                    return Err(StompError::MissingNul);
                }
                end
            }
            None => match buf[*pos..].iter().position(|&b| b == 0) {
                Some(off) => *pos + off,
                None => {
                    *pos = buf.len();
                    if buf.len() - body_start > lim.max_body {
                        return Err(StompError::BodyTooLarge(lim.max_body));
                    }
                    if buf.len() >= lim.max_frame {
                        return Err(StompError::FrameTooLarge(lim.max_frame));
                    }
                    return Ok(None);
                }
            },
        };
        if body_end - body_start > lim.max_body {
            return Err(StompError::BodyTooLarge(lim.max_body));
        }
        if body_end + 1 > lim.max_frame {
            return Err(StompError::FrameTooLarge(lim.max_frame));
        }
        let State::Body {
            command, headers, ..
        } = std::mem::replace(&mut self.state, FRESH)
        else {
            return Ok(None);
        };
        let frame = Frame {
            command,
            headers,
            body: bytes::Bytes::new(),
        };
        Ok(Some(self.take(
            buf,
            body_end + 1,
            frame,
            body_start..body_end,
        )))
    }

    /// Splits the frame's `len` octets off `buf`, fills in the body without copying, and
    /// eats the EOLs already buffered after the NUL.
    fn take(
        &mut self,
        buf: &mut BytesMut,
        len: usize,
        mut frame: Frame,
        body: std::ops::Range<usize>,
    ) -> Decoded {
        let bytes = buf.split_to(len).freeze();
        if !body.is_empty() {
            frame.body = bytes.slice(body);
        }
        self.state = FRESH;
        skip_eols(buf);
        Decoded::Frame(frame)
    }

    /// [`StompCodec::decode`] at the end of the stream: a partial frame is an error.
    ///
    /// # Errors
    /// As [`StompCodec::decode`], and [`StompError::Truncated`].
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, StompError> {
        match self.decode(buf)? {
            Some(d) => Ok(Some(d)),
            None if buf.is_empty() || &buf[..] == b"\r" => {
                buf.clear();
                Ok(None)
            }
            None => {
                buf.clear();
                self.state = FRESH;
                Err(StompError::Truncated)
            }
        }
    }

    /// Appends `frame` escaped for the codec's version (see [`frame::encode`]).
    pub fn encode(&self, frame: &Frame, out: &mut BytesMut) {
        frame::encode(frame, self.version, out);
    }
}

/// Removes leading EOLs (`\n`, `\r\n`); a lone trailing `\r` is kept until its `\n` comes.
fn skip_eols(buf: &mut BytesMut) -> usize {
    let mut i = 0;
    let mut n = 0;
    loop {
        match buf.get(i..i + 2) {
            Some(b"\r\n") => i += 2,
            _ if buf.get(i) == Some(&b'\n') => i += 1,
            _ => break,
        }
        n += 1;
    }
    buf.advance(i);
    n
}

/// A line without the CRs before its LF. EOL is `[CR] LF`; more CRs are taken as part of
/// the EOL too, so a header value never ends with a raw CR (which 1.0 and 1.1 could not
/// send back).
fn strip_cr(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r'] = line {
        line = rest;
    }
    line
}

/// A parsed command line and header block.
struct Head {
    command: Command,
    headers: Vec<(String, String)>,
    /// The first `content-length`.
    content_length: Option<usize>,
}

/// Parses the command line and headers (`head` ends after the EOL of the last header).
fn parse_head(head: &[u8], version: Version) -> Result<Head, StompError> {
    let mut lines = head.split(|&b| b == b'\n').map(strip_cr);
    let first = lines.next().unwrap_or_default();
    let command =
        Command::from_bytes(first).ok_or_else(|| StompError::UnknownCommand(excerpt(first)))?;
    let esc = Escaping::of(version, command);
    let mut headers = Vec::new();
    let mut content_length: Option<usize> = None;
    let mut seen_length = false;
    for line in lines {
        if line.is_empty() {
            // `head` ends with an EOL, so the split yields one empty piece at the end.
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(StompError::MissingColon)?;
        if colon == 0 {
            return Err(StompError::EmptyHeaderName);
        }
        let name = esc.decode(&line[..colon])?;
        let value = esc.decode(&line[colon + 1..])?;
        if name == "content-length" && !seen_length {
            seen_length = true;
            content_length = Some(parse_length(&value)?);
        }
        headers.push((name, value));
    }
    Ok(Head {
        command,
        headers,
        content_length,
    })
}

fn parse_length(v: &str) -> Result<usize, StompError> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StompError::InvalidContentLength(excerpt(v.as_bytes())));
    }
    v.parse()
        .map_err(|_| StompError::InvalidContentLength(excerpt(v.as_bytes())))
}

impl Decoder for StompCodec {
    type Item = Decoded;
    type Error = StompError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, StompError> {
        StompCodec::decode(self, src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, StompError> {
        StompCodec::decode_eof(self, src)
    }
}

impl Encoder<&Frame> for StompCodec {
    type Error = StompError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), StompError> {
        StompCodec::encode(self, frame, dst);
        Ok(())
    }
}

impl Encoder<Frame> for StompCodec {
    type Error = StompError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), StompError> {
        StompCodec::encode(self, &frame, dst);
        Ok(())
    }
}

impl Encoder<Heartbeat> for StompCodec {
    type Error = StompError;

    fn encode(&mut self, _: Heartbeat, dst: &mut BytesMut) -> Result<(), StompError> {
        dst.extend_from_slice(HEARTBEAT);
        Ok(())
    }
}
