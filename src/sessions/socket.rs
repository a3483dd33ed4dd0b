//! A connection's socket taken back from hyper after the upgrade (TCP or
//! UNIX), with the non-blocking reads and writes the outlet builds on.
//!
//! Owns the socket type only; who may write when is the outlet's business.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

/// The connection's socket, as accepted by the server.
#[derive(Debug)]
pub(crate) enum RawSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

macro_rules! each_socket {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            RawSocket::Tcp($s) => $e,
            RawSocket::Unix($s) => $e,
        }
    };
}

/// Slices written per vectored write at most.
const MAX_IOV: usize = 64;

impl RawSocket {
    /// Takes the socket and any read-ahead bytes back from hyper after an
    /// upgrade; `None` for an I/O type the server does not accept.
    pub(crate) fn from_upgraded(upgraded: Upgraded) -> Option<(RawSocket, Bytes)> {
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => return Some((RawSocket::Tcp(parts.io.into_inner()), parts.read_buf)),
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<UnixStream>>() {
            Ok(parts) => Some((RawSocket::Unix(parts.io.into_inner()), parts.read_buf)),
            Err(_) => None,
        }
    }

    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        each_socket!(self, s => s.try_write(buf))
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        each_socket!(self, s => s.try_write_vectored(bufs))
    }

    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_socket!(self, s => s.poll_write_ready(cx))
    }

    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        each_socket!(self, s => s.try_read(buf))
    }

    /// Reads into `buf`'s spare capacity.
    pub(crate) fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        each_socket!(self, s => s.try_read_buf(buf))
    }

    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_socket!(self, s => s.poll_read_ready(cx))
    }

    /// Writes every byte of `bufs` in order (vectored), waiting for the
    /// socket to become writable; what is written is removed from `bufs`.
    pub(crate) fn poll_write_all(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut VecDeque<Bytes>,
    ) -> Poll<io::Result<()>> {
        while !bufs.is_empty() {
            let result = if bufs.len() == 1 {
                self.try_write(&bufs[0])
            } else {
                let slices: Vec<IoSlice<'_>> =
                    bufs.iter().take(MAX_IOV).map(|b| IoSlice::new(b)).collect();
                self.try_write_vectored(&slices)
            };
            match result {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => advance(bufs, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl RawSocket {
    /// Shuts the write side (sends FIN); the read side stays open.
    pub(crate) fn shutdown_write(&self) {
        let _ =
            each_socket!(self, s => socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write));
    }

    /// Reads and drops everything until the peer closes or an error. The
    /// scratch buffer lives only while a read runs, not in the future (which
    /// every connection's task holds).
    pub(crate) async fn discard_reads(&self) {
        std::future::poll_fn(|cx| loop {
            if ready!(self.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            let mut scratch = [0u8; 1024];
            match self.try_read(&mut scratch) {
                Ok(0) => return Poll::Ready(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        })
        .await
    }
}

/// Drops the first `n` bytes of `bufs`.
fn advance(bufs: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let front = bufs.front_mut().expect("wrote no more than was queued");
        if front.len() <= n {
            n -= front.len();
            bufs.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_crosses_buffers() {
        let mut bufs: VecDeque<Bytes> = [&b"abc"[..], b"de", b"fgh"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        advance(&mut bufs, 4);
        assert_eq!(bufs, [Bytes::from_static(b"e"), Bytes::from_static(b"fgh")]);
        advance(&mut bufs, 4);
        assert!(bufs.is_empty());
    }
}
