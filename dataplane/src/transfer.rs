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

/// The most room a body copy offers one read. A source that keeps filling
/// what it is offered (a large response from a fast backend) gets twice the
/// room next time, up to this: a 1 MiB body then takes about 10 reads and
/// writes instead of 64, and the destination's reader is woken as often.
const BODY_CHUNK_MAX: usize = 256 * 1024;

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
    let mut room = READ_CHUNK;
    let result = loop {
        let take = match &mut framing {
            Framing::Length(remaining) => {
                let n = (*remaining).min(buf.len() as u64);
                *remaining -= n;
                n as usize
            }
            Framing::Chunked(decoder) => match decoder.advance(buf) {
                Ok(n) => n,
                Err(e) => break Err(CopyError::Invalid(e)),
            },
            Framing::UntilClose => buf.len(),
        };
        if take > 0 && write_prefix(dst, buf, take).await.is_err() {
            break Err(CopyError::Write);
        }
        let done = match &framing {
            Framing::Length(remaining) => *remaining == 0,
            Framing::Chunked(decoder) => decoder.is_done(),
            Framing::UntilClose => false,
        };
        if done {
            break Ok(moved);
        }
        buf.reserve_exact(room);
        match monoio::time::timeout(read_timeout, read_more(src, buf)).await {
            Err(_) => break Err(CopyError::Timeout),
            Ok(Err(_)) => break Err(CopyError::Read),
            Ok(Ok(0)) if matches!(framing, Framing::UntilClose) => break Ok(moved),
            Ok(Ok(0)) => break Err(CopyError::Read),
            Ok(Ok(n)) => {
                moved.read += n as u64;
                if n >= room {
                    room = (room * 2).min(BODY_CHUNK_MAX);
                }
            }
        }
    };
    // An idle keep-alive connection goes back to a small buffer.
    if buf.capacity() > 4 * READ_CHUNK {
        buf.shrink_to(READ_CHUNK.max(buf.len()));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that fills every read completely from `data`, and a sink
    /// that keeps what it is given; both record the sizes involved.
    struct Mem {
        data: Vec<u8>,
        at: usize,
        offered: Vec<usize>,
        written: Vec<u8>,
    }

    impl Mem {
        fn new(data: Vec<u8>) -> Self {
            Mem {
                data,
                at: 0,
                offered: Vec::new(),
                written: Vec::new(),
            }
        }
    }

    impl Io for Mem {
        async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
            let room = buf.capacity() - buf.len();
            self.offered.push(room);
            let n = room.min(self.data.len() - self.at);
            buf.extend_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }

        async fn write_prefix(&mut self, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
            self.written.extend(buf.drain(..n));
            Ok(())
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn large_body_reads_grow_and_the_buffer_shrinks_back() {
        let body: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut stream = body.clone();
        stream.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let mut src = Mem::new(stream);
        let mut dst = Mem::new(Vec::new());
        let mut buf = Vec::with_capacity(READ_CHUNK);
        let moved = block_on(copy_body(
            &mut src,
            &mut buf,
            &mut dst,
            Framing::Length(body.len() as u64),
            Duration::from_secs(5),
        ))
        .expect("copied");
        assert!(dst.written == body, "the body arrives whole and in order");
        assert_eq!(buf, b"GET /next HTTP/1.1\r\n", "the pipelined rest stays");
        assert_eq!(moved.read as usize, body.len() + buf.len());
        assert_eq!(src.offered.iter().max(), Some(&BODY_CHUNK_MAX));
        assert!(
            src.offered.len() <= 10,
            "1 MiB in {} reads: {:?}",
            src.offered.len(),
            src.offered
        );
        assert!(buf.capacity() <= 4 * READ_CHUNK, "{}", buf.capacity());
    }

    #[test]
    fn a_trickling_source_keeps_small_reads() {
        // A source that never fills what it is offered gets no more room.
        struct Trickle(usize, Vec<usize>);
        impl Io for Trickle {
            async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
                self.1.push(buf.capacity() - buf.len());
                let n = self.0.min(100);
                buf.extend(std::iter::repeat_n(b'x', n));
                self.0 -= n;
                Ok(n)
            }
            async fn write_prefix(&mut self, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
                buf.drain(..n);
                Ok(())
            }
        }
        let mut src = Trickle(10_000, Vec::new());
        let mut dst = Mem::new(Vec::new());
        let mut buf = Vec::new();
        block_on(copy_body(
            &mut src,
            &mut buf,
            &mut dst,
            Framing::Length(10_000),
            Duration::from_secs(5),
        ))
        .expect("copied");
        assert_eq!(dst.written.len(), 10_000);
        assert!(
            src.1.iter().all(|&room| room < 2 * READ_CHUNK),
            "{:?}",
            src.1
        );
    }
}
