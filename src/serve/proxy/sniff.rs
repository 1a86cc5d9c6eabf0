//! Telling HTTP/1 from any other protocol by a connection's first bytes, and giving those bytes
//! back to whoever handles it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The longest request line we wait for before calling the connection plain TCP. nginx's
/// default limit for a request line is 8 KiB (`large_client_header_buffers`); a client that
/// sends a longer one is still served, as a tunnel.
const MAX_REQUEST_LINE: usize = 16 * 1024;

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    /// An HTTP/1.0 or HTTP/1.1 request line: served request by request.
    Http,
    /// Anything else, forwarded as it comes (TLS, a line protocol, HTTP/2 with prior knowledge).
    Tcp,
}

/// Reads until the first bytes decide the protocol. `Ok(None)`: the client closed without
/// sending anything. Bytes read stay in `buf` even if this future is dropped (on a timeout).
pub(super) async fn sniff(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> io::Result<Option<Protocol>> {
    loop {
        if let Some(protocol) = classify(buf) {
            return Ok(Some(protocol));
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            // A client that half-closes after a few bytes may still expect an answer: pass
            // what it sent on.
            return Ok((!buf.is_empty()).then_some(Protocol::Tcp));
        }
    }
}

/// Decides from a prefix of the stream, or `None` when more bytes are needed.
///
/// A method token followed by a space is not enough: `PING host` is a line protocol. Only a
/// whole request line ending in ` HTTP/1.0` or ` HTTP/1.1` counts, which the first read
/// nearly always holds, so HTTP pays no extra wait.
pub(super) fn classify(prefix: &[u8]) -> Option<Protocol> {
    let token_len = prefix.iter().take_while(|&&b| is_tchar(b)).count();
    if token_len == prefix.len() {
        // All token so far; a method is short, so a long run is not one.
        return (token_len > 32).then_some(Protocol::Tcp);
    }
    if token_len == 0 || prefix[token_len] != b' ' {
        return Some(Protocol::Tcp);
    }
    // HTTP/2 with prior knowledge (`PRI * HTTP/2.0`): our server speaks HTTP/1 only, so leave
    // it to the backend.
    if &prefix[..token_len] == b"PRI" {
        return Some(Protocol::Tcp);
    }
    let Some(newline) = prefix.iter().position(|&b| b == b'\n') else {
        return (prefix.len() >= MAX_REQUEST_LINE).then_some(Protocol::Tcp);
    };
    let line = prefix[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&prefix[..newline]);
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Some(Protocol::Http)
    } else {
        Some(Protocol::Tcp)
    }
}

/// RFC 9110 `tchar`: the characters of a method name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A stream that first yields the bytes sniffing already read.
pub(super) struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl Prefixed {
    pub(super) fn new(prefix: Bytes, inner: TcpStream) -> Self {
        Self { prefix, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{Protocol, classify};

    #[test]
    fn request_lines_are_http_and_everything_else_is_tcp() {
        let cases: &[(&[u8], Option<Protocol>)] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Some(Protocol::Http)),
            (b"POST /api?q=1 HTTP/1.0\n", Some(Protocol::Http)),
            (b"PROPFIND /dav HTTP/1.1\r\n", Some(Protocol::Http)),
            (b"GET / HTTP/1.1", None),
            (b"GE", None),
            (b"GET /long/path", None),
            (b"", None),
            (b"PING host\n", Some(Protocol::Tcp)),
            (b"hello world\r\n", Some(Protocol::Tcp)),
            (b"GET /\r\n", Some(Protocol::Tcp)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Protocol::Tcp)),
            (b"\x16\x03\x01\x02\x00", Some(Protocol::Tcp)),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", Some(Protocol::Tcp)),
            (b" GET / HTTP/1.1\r\n", Some(Protocol::Tcp)),
            (b"GET\t/ HTTP/1.1\r\n", Some(Protocol::Tcp)),
            (&[b'A'; 33], Some(Protocol::Tcp)),
        ];
        for (prefix, expected) in cases {
            assert_eq!(
                classify(prefix),
                *expected,
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    #[test]
    fn an_endless_request_line_is_tcp() {
        let mut line = b"GET /".to_vec();
        line.resize(super::MAX_REQUEST_LINE, b'a');
        assert_eq!(classify(&line), Some(Protocol::Tcp));
        line.truncate(super::MAX_REQUEST_LINE - 1);
        assert_eq!(classify(&line), None);
    }
}
