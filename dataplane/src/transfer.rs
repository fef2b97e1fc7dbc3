//! Moving bytes with owned buffers (io_uring's model: a buffer moves into an
//! operation and comes back with the result), and streaming message bodies
//! between two connections without ever holding a whole body.

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split};
use shardgate_core::http1::{ChunkedDecoder, InvalidChunk};
use std::io;
use std::time::Duration;

/// A downstream byte stream: a TCP connection, or TLS over one. Splittable
/// into read and write halves for protocols that switch to a raw stream.
pub(crate) trait Stream: AsyncReadRent + AsyncWriteRent + Split {}

impl<S: AsyncReadRent + AsyncWriteRent + Split> Stream for S {}

/// Read size floor: always offer the kernel at least this much room.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Reads more bytes onto the end of `buf`; `Ok(0)` is end of stream. If the
/// future is dropped mid-read, `buf` is left empty (the connection is being
/// abandoned anyway).
pub(crate) async fn read_more<S: AsyncReadRent>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    let b = std::mem::take(buf);
    let len = b.len();
    let (result, slice) = s.read(b.slice_mut(len..)).await;
    *buf = slice.into_inner();
    result
}

/// Writes `buf[..n]` and removes it from `buf`, keeping what follows.
pub(crate) async fn write_prefix<S: AsyncWriteRent>(
    s: &mut S,
    buf: &mut Vec<u8>,
    n: usize,
) -> io::Result<()> {
    let b = std::mem::take(buf);
    let (result, slice) = s.write_all(b.slice(..n)).await;
    *buf = slice.into_inner();
    result?;
    buf.drain(..n);
    Ok(())
}

/// Writes all of `buf`, keeping the buffer (cleared) for reuse.
pub(crate) async fn write_all<S: AsyncWriteRent>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<()> {
    let b = std::mem::take(buf);
    let (result, mut b) = s.write_all(b).await;
    b.clear();
    *buf = b;
    result.map(|_| ())
}

/// How a body ends.
pub(crate) enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// After the last chunk and trailers.
    Chunked(ChunkedDecoder),
    /// When the source closes.
    UntilClose,
}

/// Why a body stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyError {
    /// The source failed or closed early.
    Read,
    /// The destination failed.
    Write,
    /// The source broke the chunked grammar.
    Invalid(InvalidChunk),
    /// The source went quiet for too long.
    Timeout,
}

/// Bytes moved by [`copy_body`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Moved {
    /// Read from the source (not counting what was already buffered).
    pub(crate) read: u64,
    /// Written to the destination.
    pub(crate) written: u64,
}

/// Streams a body from `src` to `dst`. `buf` holds bytes already read from
/// `src`; on success, bytes past the body's end stay in it (a pipelined next
/// message).
pub(crate) async fn copy_body<R: AsyncReadRent, W: AsyncWriteRent>(
    src: &mut R,
    buf: &mut Vec<u8>,
    dst: &mut W,
    mut framing: Framing,
    read_timeout: Duration,
) -> Result<Moved, CopyError> {
    let mut moved = Moved::default();
    loop {
        let take = match &mut framing {
            Framing::Length(remaining) => {
                let n = (*remaining).min(buf.len() as u64);
                *remaining -= n;
                n as usize
            }
            Framing::Chunked(decoder) => decoder.advance(buf).map_err(CopyError::Invalid)?,
            Framing::UntilClose => buf.len(),
        };
        if take > 0 {
            write_prefix(dst, buf, take)
                .await
                .map_err(|_| CopyError::Write)?;
        }
        let done = match &framing {
            Framing::Length(remaining) => *remaining == 0,
            Framing::Chunked(decoder) => decoder.is_done(),
            Framing::UntilClose => false,
        };
        if done {
            return Ok(moved);
        }
        match monoio::time::timeout(read_timeout, read_more(src, buf)).await {
            Err(_) => return Err(CopyError::Timeout),
            Ok(Err(_)) => return Err(CopyError::Read),
            Ok(Ok(0)) if matches!(framing, Framing::UntilClose) => return Ok(moved),
            Ok(Ok(0)) => return Err(CopyError::Read),
            Ok(Ok(n)) => moved.read += n as u64,
        }
    }
}
