//! A streaming validator for the chunked transfer coding (RFC 9112 §7.1).
//!
//! It does not copy or decode data: it tells how many input bytes belong to
//! the body, so a proxy forwards the chunked bytes (sizes, extensions and
//! trailers included) verbatim and knows exactly where the message ends.

/// Longest chunk-size line accepted (digits plus extensions).
const MAX_LINE: u32 = 4096;
/// Most trailer bytes accepted.
const MAX_TRAILERS: u32 = 16 * 1024;

/// A chunked body that breaks the grammar or our limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub struct InvalidChunk(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { digits: u8 },
    /// After the size: optional whitespace and `;ext`, up to CR.
    Extension,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Expecting LF after a trailer line's CR.
    TrailerLf,
    /// Expecting the final LF.
    EndLf,
    /// The body is complete.
    Done,
}

/// Walks a chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    remaining: u64,
    line: u32,
    trailers: u32,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Size { digits: 0 },
            remaining: 0,
            line: 0,
            trailers: 0,
        }
    }

    /// Whether the final chunk and trailers have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes of `input` that belong to the body and returns how many;
    /// stops at the end of the body, so leftover bytes are the next message.
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, InvalidChunk> {
        self.walk(input, None)
    }

    /// As [`Self::advance`], and also appends the chunk data to `data` and
    /// the trailer field lines (`name: value\r\n` each) to `trailers`: the
    /// body without its framing, for a hop that frames bodies otherwise
    /// (HTTP/2).
    pub fn decode(
        &mut self,
        input: &[u8],
        data: &mut Vec<u8>,
        trailers: &mut Vec<u8>,
    ) -> Result<usize, InvalidChunk> {
        self.walk(input, Some((data, trailers)))
    }

    fn walk(
        &mut self,
        input: &[u8],
        mut sink: Option<(&mut Vec<u8>, &mut Vec<u8>)>,
    ) -> Result<usize, InvalidChunk> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let take =
                        (input.len() - i).min(self.remaining.min(usize::MAX as u64) as usize);
                    if let Some((data, _)) = sink.as_mut() {
                        data.extend_from_slice(&input[i..i + take]);
                    }
                    i += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                _ => {}
            }
            let b = input[i];
            i += 1;
            let in_trailer = match self.state {
                State::TrailerLine | State::TrailerLf => true,
                State::TrailerStart => b != b'\r',
                _ => false,
            };
            if let (true, Some((_, trailers))) = (in_trailer, sink.as_mut()) {
                trailers.push(b);
            }
            self.state = match self.state {
                State::Size { digits } => match hex(b) {
                    Some(d) => {
                        if digits >= 15 {
                            return Err(InvalidChunk("chunk size too large"));
                        }
                        self.remaining = self.remaining * 16 + u64::from(d);
                        State::Size { digits: digits + 1 }
                    }
                    None if digits == 0 => return Err(InvalidChunk("missing chunk size")),
                    None => {
                        self.line = 0;
                        self.after_size_byte(b)?
                    }
                },
                State::Extension => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(InvalidChunk("chunk extension too long"));
                    }
                    self.after_size_byte(b)?
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(InvalidChunk("expected LF after chunk size"));
                    }
                    if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size { digits: 0 },
                State::DataCr | State::DataLf => {
                    return Err(InvalidChunk("expected CRLF after chunk data"))
                }
                State::TrailerStart if b == b'\r' => State::EndLf,
                State::TrailerStart | State::TrailerLine => self.trailer_byte(b)?,
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::TrailerLf => return Err(InvalidChunk("expected LF in trailers")),
                State::EndLf if b == b'\n' => State::Done,
                State::EndLf => return Err(InvalidChunk("expected final LF")),
                State::Data | State::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }

    fn after_size_byte(&mut self, b: u8) -> Result<State, InvalidChunk> {
        Ok(match b {
            b'\r' => State::SizeLf,
            b'\n' => return Err(InvalidChunk("bare LF after chunk size")),
            // Extensions (`;name=value`) and the whitespace allowed around
            // them are passed through; control bytes are not.
            b if b == b'\t' || (b >= 0x20 && b != 0x7f) => State::Extension,
            _ => return Err(InvalidChunk("invalid byte in chunk size line")),
        })
    }

    fn trailer_byte(&mut self, b: u8) -> Result<State, InvalidChunk> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(InvalidChunk("trailers too large"));
        }
        Ok(match b {
            b'\r' => State::TrailerLf,
            b'\n' => return Err(InvalidChunk("bare LF in trailers")),
            _ => State::TrailerLine,
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(chunks: &[&[u8]], trailers: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        out.extend_from_slice(trailers.as_bytes());
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn finds_the_end_of_a_body_and_leaves_the_next_message() {
        let mut body = encode(&[b"hello", b" world"], "X-T: 1\r\n");
        let end = body.len();
        body.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.advance(&body).unwrap(), end);
        assert!(d.is_done());
    }

    #[test]
    fn decode_strips_the_framing_and_keeps_trailers() {
        let body = encode(&[b"hello", b" world"], "X-T: 1\r\ngrpc-status: 0\r\n");
        let (mut data, mut trailers) = (Vec::new(), Vec::new());
        let mut d = ChunkedDecoder::new();
        // Byte by byte: every split point must give the same result.
        for b in &body {
            assert_eq!(
                d.decode(std::slice::from_ref(b), &mut data, &mut trailers)
                    .unwrap(),
                1
            );
        }
        assert!(d.is_done());
        assert_eq!(data, b"hello world");
        assert_eq!(trailers, b"X-T: 1\r\ngrpc-status: 0\r\n");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello",
            b"fffffffffffffffff\r\n",
            b"\r\n",
        ] {
            assert!(ChunkedDecoder::new().advance(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_split_of_the_input_gives_the_same_end(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let body = encode(&refs, "");
            let cut = cut.index(body.len() + 1);
            let mut d = ChunkedDecoder::new();
            let a = d.advance(&body[..cut]).unwrap();
            prop_assert_eq!(a, cut);
            let b = d.advance(&body[cut..]).unwrap();
            prop_assert_eq!(a + b, body.len());
            prop_assert!(d.is_done());
        }
    }
}
