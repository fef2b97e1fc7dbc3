//! Moving bytes with owned buffers (io_uring's model: a buffer moves into an
//! operation and comes back with the result), and streaming message bodies
//! between two connections without ever holding a whole body.

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use shardgate_core::http1::{ChunkedDecoder, InvalidChunk};
use std::future::Future;
use std::io;
use std::time::Duration;

/// Something that moves bytes in and out of `Vec<u8>` buffers: a socket
/// (TCP, TLS), or one HTTP/2 stream seen as an HTTP/1.1 exchange.
pub(crate) trait Io {
    /// Reads more bytes onto the end of `buf`; `Ok(0)` is end of stream.
    fn read_more(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = io::Result<usize>>;

    /// Writes `buf[..n]` and removes it from `buf`, keeping what follows.
    fn write_prefix(&mut self, buf: &mut Vec<u8>, n: usize)
        -> impl Future<Output = io::Result<()>>;
}

/// A downstream connection's stream. A raw byte stream can be handed over
/// whole when the protocol switches (WebSocket); an HTTP/2 stream cannot.
pub(crate) trait Stream: Io + Sized {
    /// The raw stream.
    type Raw: Splitable<OwnedRead: AsyncReadRent, OwnedWrite: AsyncWriteRent>;

    /// The raw stream, if this is one.
    fn into_raw(self) -> Option<Self::Raw>;
}

impl<S: AsyncReadRent + AsyncWriteRent> Io for S {
    /// If the future is dropped mid-read, `buf` is left empty (the
    /// connection is being abandoned anyway).
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let b = std::mem::take(buf);
        let len = b.len();
        let (result, slice) = self.read(b.slice_mut(len..)).await;
        *buf = slice.into_inner();
        result
    }

    async fn write_prefix(&mut self, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
        let b = std::mem::take(buf);
        let (result, slice) = self.write_all(b.slice(..n)).await;
        *buf = slice.into_inner();
        result?;
        buf.drain(..n);
        Ok(())
    }
}

impl<S: AsyncReadRent + AsyncWriteRent + Split> Stream for S {
    type Raw = S;

    fn into_raw(self) -> Option<S> {
        Some(self)
    }
}

/// Read size floor: always offer the kernel at least this much room.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Reads more bytes onto the end of `buf`; `Ok(0)` is end of stream.
pub(crate) async fn read_more<S: Io>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    s.read_more(buf).await
}

/// Writes `buf[..n]` and removes it from `buf`, keeping what follows.
pub(crate) async fn write_prefix<S: Io>(s: &mut S, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
    s.write_prefix(buf, n).await
}

/// Writes all of `buf`, leaving it empty for reuse.
pub(crate) async fn write_all<S: Io>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<()> {
    let n = buf.len();
    s.write_prefix(buf, n).await
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
pub(crate) async fn copy_body<R: Io, W: Io>(
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
