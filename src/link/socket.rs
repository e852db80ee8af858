//! A link's one socket, shared by its reader, its writer and the senders
//! that write small frames at once (see [`crate::link::outbox`]).
//!
//! Each [`Shared`] handle reads and writes through tokio's readiness of the
//! one registered socket, so a link holds one file descriptor, not a second
//! one for the senders. As tokio's own halves do on a socket that reports
//! edges, a read that leaves room in the buffer (or a write that the kernel
//! takes in part) clears the socket's readiness: the next one waits for the
//! socket to say it is ready instead of asking it again for nothing.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// One handle on a link's socket; clones share it.
#[derive(Clone)]
pub(crate) struct Shared(Arc<TcpStream>);

impl Shared {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Shared(Arc::new(stream))
    }

    /// Runs one system call `io` on the socket once it is ready for
    /// `interest`; `short` says of its result that the socket has nothing
    /// more (or no more room) for now, so its readiness is cleared.
    fn once<R>(
        &self,
        interest: Interest,
        io: impl FnOnce() -> io::Result<R>,
        short: impl FnOnce(&R) -> bool,
    ) -> io::Result<R> {
        let mut done = None;
        let r = self.0.try_io(interest, || {
            let r = io()?;
            if short(&r) {
                // Clears the readiness; the result is kept aside.
                done = Some(r);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(r)
        });
        match (r, done) {
            (_, Some(r)) => Ok(r),
            (r, None) => r,
        }
    }

    /// Ready if the socket may have something to read; else the task of
    /// `cx` is woken when it does (the one waker kept for reads: the last
    /// one given).
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx)
    }

    /// Writes what the kernel takes of `bufs` now, without waiting.
    fn write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.once(
            Interest::WRITABLE,
            || self.0.try_write_vectored(bufs),
            |&n| n < len,
        )
    }
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            let room = buf.remaining();
            let read = self.once(
                Interest::READABLE,
                || self.0.try_read_buf(buf),
                |&n| n > 0 && n < room,
            );
            match read {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.write_now(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the socket's write side down (for every handle: it is the
    /// socket's).
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(shutdown_write(&self.0))
    }
}

/// A sender's write at once: what the kernel takes now, never waiting.
impl io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_now(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_now(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// tokio shuts a socket's write side down only through an owned stream or
/// write half; a shared one is shut down through a handle of the standard
/// library's on the same socket, made for this and closed at once.
#[cfg(unix)]
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsFd;
    let handle = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
    handle.shutdown(std::net::Shutdown::Write)
}

#[cfg(windows)]
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    use std::os::windows::io::AsSocket;
    let handle = std::net::TcpStream::from(stream.as_socket().try_clone_to_owned()?);
    handle.shutdown(std::net::Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two handles on one socket: a write at once and an awaited write
    /// arrive in order; a read that leaves room in its buffer, then one
    /// that waits for more, each get what was sent; the write side shut
    /// down through one handle ends the peer's stream while the other
    /// handle still reads.
    #[tokio::test]
    async fn handles_share_one_socket_both_ways() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialed = TcpStream::connect(listener.local_addr().unwrap());
        let (dialed, accepted) = tokio::join!(dialed, listener.accept());
        let mut peer = accepted.unwrap().0;
        let mut reader = Shared::new(dialed.unwrap());
        let mut writer = reader.clone();
        let mut at_once = reader.clone();

        assert_eq!(io::Write::write(&mut at_once, b"now ").unwrap(), 4);
        AsyncWriteExt::write_all(&mut writer, b"and later")
            .await
            .unwrap();
        let mut got = [0u8; 13];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"now and later");

        let mut buf = [0u8; 64];
        peer.write_all(b"one").await.unwrap();
        assert_eq!(reader.read(&mut buf).await.unwrap(), 3, "a short read");
        let mut read = std::pin::pin!(reader.read(&mut buf));
        assert!(
            futures::poll!(read.as_mut()).is_pending(),
            "nothing more yet"
        );
        peer.write_all(b"two").await.unwrap();
        assert_eq!(read.await.unwrap(), 3, "woken for more");
        assert_eq!(&buf[..3], b"two");

        AsyncWriteExt::shutdown(&mut writer).await.unwrap();
        assert_eq!(peer.read(&mut buf).await.unwrap(), 0, "our end of stream");
        peer.write_all(b"still").await.unwrap();
        drop(peer);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"still");
    }
}
