//! Connection limits: a cap on connections served at once and an idle timeout.
//!
//! hyper bounds how long a client may take to send request headers (`header-read-timeout`,
//! set on the HTTP/1 builder in [`crate::run`]); it also bounds the wait for the next request
//! on an HTTP/1 keep-alive connection, since that wait is a header read. What hyper does not
//! bound is a connection that has not sent its first byte (the HTTP/1-or-2 detection read
//! comes before hyper's timer) or that stops moving bytes in any other state (an HTTP/2
//! connection with nothing open, a client that stopped reading a response, a TLS handshake
//! left half-done). Until the first byte arrives the header-read timeout applies here too. [`LimitAcceptor`] wraps every accepted socket in an [`IdleStream`] that fails
//! its I/O once no byte went either way for `idle-timeout`, which makes hyper drop the
//! connection, and refuses sockets beyond `max-connections` so idle clients cannot use up the
//! server's file descriptors.

use std::future::{Ready, ready};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Accepts a connection only while fewer than the cap are open, and wraps it in an
/// [`IdleStream`].
#[derive(Clone, Debug)]
pub struct LimitAcceptor {
    permits: Arc<Semaphore>,
    idle: Duration,
    first_byte: Duration,
}

impl LimitAcceptor {
    /// At most `max_connections` at once, each closed after `first_byte` if the client sends
    /// nothing, and after `idle` without I/O later.
    pub fn new(max_connections: usize, idle: Duration, first_byte: Duration) -> Self {
        LimitAcceptor {
            permits: Arc::new(Semaphore::new(max_connections)),
            idle,
            first_byte: first_byte.min(idle),
        }
    }

    /// Connections open now.
    pub fn open(&self, max_connections: usize) -> usize {
        max_connections - self.permits.available_permits()
    }
}

impl<I, S> Accept<I, S> for LimitAcceptor
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    type Stream = IdleStream<I>;
    type Service = S;
    type Future = Ready<io::Result<(IdleStream<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => ready(Ok((
                IdleStream::new(stream, self.idle, self.first_byte, permit),
                service,
            ))),
            Err(_) => {
                // Dropping the socket closes it: a full server answers nothing rather than
                // queueing more descriptors.
                metrics::counter!("http_connections_refused_total").increment(1);
                ready(Err(io::Error::other("connection limit reached")))
            }
        }
    }
}

/// A socket that fails with `TimedOut` once no byte was read or written for the idle time.
/// It holds its connection slot until dropped.
#[derive(Debug)]
pub struct IdleStream<I> {
    inner: I,
    idle: Duration,
    /// The idle bound before the first byte is read.
    first_byte: Duration,
    started: bool,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl<I> IdleStream<I> {
    fn new(inner: I, idle: Duration, first_byte: Duration, permit: OwnedSemaphorePermit) -> Self {
        let now = Instant::now();
        IdleStream {
            inner,
            idle,
            first_byte,
            started: false,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + first_byte)),
            _permit: permit,
        }
    }

    fn progress(&mut self) {
        self.last = Instant::now();
    }

    /// Called when the inner I/O is pending: arms the timer for the current deadline and
    /// reports whether the connection has been idle too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = if self.started {
            self.idle
        } else {
            self.first_byte
        };
        let deadline = self.last + limit;
        if Instant::now() >= deadline {
            return true;
        }
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleStream<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.started |= buf.filled().len() > before;
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleStream<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_streams_time_out_and_busy_ones_do_not() {
        let acceptor =
            LimitAcceptor::new(1, Duration::from_millis(400), Duration::from_millis(400));
        let (a, mut b) = tokio::io::duplex(64);
        let fut: Ready<io::Result<(IdleStream<_>, ())>> = acceptor.accept(a, ());
        let (mut s, ()) = fut.await.unwrap();
        // The cap: a second connection is refused while the first is open.
        let (c, _d) = tokio::io::duplex(64);
        let second: Ready<io::Result<(IdleStream<_>, ())>> = acceptor.accept(c, ());
        assert!(second.await.is_err());
        assert_eq!(acceptor.open(1), 1);
        // Traffic every 200 ms keeps it alive past the 400 ms limit.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            b.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
        }
        let mut buf = [0u8; 1];
        let started = Instant::now();
        let e = s.read(&mut buf).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(s);
        assert_eq!(acceptor.open(1), 0);
    }
}
