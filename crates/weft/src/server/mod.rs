//! weft's HTTP server loop, shared by the `http_server` inputs and the admin endpoint: HTTP/1.1
//! over plain TCP or TLS ([`tls`]), with limits on what a client can hold: connections at once,
//! header count and size, the time to send the headers (between requests too, so an idle
//! keep-alive connection is closed) and the time an answer may wait for a client that stopped
//! reading it. Request bodies are limited by their handlers.

pub mod problem;
pub mod tls;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::units::{Dur, Size};

/// The limits one listening address applies to its clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Connections served at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Headers one request may carry (more is answered 431).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Bytes the request line and headers may take together (more is answered 431).
    #[serde(default = "default_max_header_size")]
    pub max_header_size: Size,
    /// Time a client has to complete the TLS handshake and send a request's headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// Time an answer may wait for a client that stopped reading it; then the connection is
    /// closed.
    #[serde(default = "default_write_timeout")]
    pub write_timeout: Dur,
}

fn default_max_connections() -> usize {
    1024
}
fn default_max_headers() -> usize {
    100
}
fn default_max_header_size() -> Size {
    Size(16 * 1024)
}
fn default_header_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_write_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            max_headers: default_max_headers(),
            max_header_size: default_max_header_size(),
            header_timeout: default_header_timeout(),
            write_timeout: default_write_timeout(),
        }
    }
}

/// hyper's smallest read buffer; header limits below it cannot be enforced.
const MIN_HEADER_SIZE: u64 = 8192;

impl Limits {
    /// The problems with these limits, by field.
    pub fn check(&self) -> Vec<crate::config::BuildError> {
        let mut errors = Vec::new();
        if self.max_connections == 0 {
            errors.push(crate::config::BuildError::new(
                "max_connections",
                "allow at least one connection",
            ));
        }
        if self.max_headers == 0 {
            errors.push(crate::config::BuildError::new(
                "max_headers",
                "allow at least one header",
            ));
        }
        if self.max_header_size.0 < MIN_HEADER_SIZE {
            errors.push(crate::config::BuildError::new(
                "max_header_size",
                format!("at least {MIN_HEADER_SIZE} bytes"),
            ));
        }
        for (field, time) in [
            ("header_timeout", self.header_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if time.0.is_zero() {
                errors.push(crate::config::BuildError::new(
                    field,
                    "give the client some time",
                ));
            }
        }
        errors
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets the requests in progress finish
/// (their callers get their real answer) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: impl Into<Routes>,
    tls: Option<Arc<tls::Tls>>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let router = router.into();
    let connections = TaskTracker::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        // A client beyond `max_connections` waits in the listen backlog until one closes.
        let slot = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let stream = WriteDeadline::new(stream, limits.write_timeout.0);
        let router = router.clone();
        let shutdown = shutdown.clone();
        let limits = limits.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        connections.spawn(async move {
            let _slot = slot;
            match acceptor {
                None => connection(stream, router, &limits, shutdown).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout.0, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => connection(stream, router, &limits, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// What a listener routes requests with: one router, or one its owner may swap while it
/// serves (a reload). Read per request, so that a request passes through one router only.
#[derive(Clone)]
pub enum Routes {
    Fixed(Router),
    Swappable(Arc<std::sync::RwLock<Router>>),
}

impl Routes {
    fn current(&self) -> Router {
        match self {
            Routes::Fixed(router) => router.clone(),
            Routes::Swappable(router) => router.read().expect("routing table lock").clone(),
        }
    }
}

impl From<Router> for Routes {
    fn from(router: Router) -> Routes {
        Routes::Fixed(router)
    }
}

/// A stream whose writes may not stall: once a write has to wait, the client must take
/// [`MIN_PROGRESS`] bytes within `limit`, or the connection is cut. A client that stops reading
/// its answer (a zero TCP window), or reads it a few bytes at a time, cannot hold its
/// connection, and its place, for ever. Reads are bounded by hyper's header timeout and the
/// handlers' body timeouts.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed at the first write that had to wait; with the bytes written since.
    stalled: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
}

/// What a client must read per `write_timeout` once it has made weft wait.
const MIN_PROGRESS: usize = 16 * 1024;

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After an operation came back pending: an error once it has been pending for `limit`.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let (sleep, _) = self
            .stalled
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep(limit)), 0));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// After a write completed having written `written` bytes: a stall is over once the
    /// client took enough since it began.
    fn done<T>(&mut self, result: io::Result<T>, written: usize) -> Poll<io::Result<T>> {
        if let Some((_, progress)) = &mut self.stalled {
            *progress += written;
            if *progress >= MIN_PROGRESS {
                self.stalled = None;
            }
        }
        Poll::Ready(result)
    }

    /// After a flush or shutdown completed: everything written was taken, no stall is left.
    fn caught_up<T>(&mut self, result: io::Result<T>) -> Poll<io::Result<T>> {
        if result.is_ok() {
            self.stalled = None;
        }
        Poll::Ready(result)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                let n = *result.as_ref().unwrap_or(&0);
                this.done(result, n)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                let n = *result.as_ref().unwrap_or(&0);
                this.done(result, n)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => this.caught_up(result),
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(result) => this.caught_up(result),
            Poll::Pending => this.pending(cx),
        }
    }
}

/// Why an HTTP/1.1 request's `Host` is refused (400): missing, sent twice, or not a host and
/// port (RFC 9112 §3.2). HTTP/1.0 may leave it out.
fn host_refusal<B>(request: &http::Request<B>) -> Option<Response> {
    if request.version() != http::Version::HTTP_11 {
        return None;
    }
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    let why = match (hosts.next(), hosts.next()) {
        (None, _) => "an HTTP/1.1 request needs a Host header",
        (Some(_), Some(_)) => "the request has more than one Host header",
        (Some(host), None) => {
            let valid = host
                .to_str()
                .ok()
                .and_then(|h| h.parse::<http::uri::Authority>().ok())
                .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'));
            if valid {
                return None;
            }
            "the Host header is not a host and port"
        }
    };
    Some(
        problem::Problem::new(
            http::StatusCode::BAD_REQUEST,
            "invalid-host",
            "The Host header is missing or not valid",
        )
        .detail(why)
        .into_response(),
    )
}

async fn connection<S>(stream: S, routes: Routes, limits: &Limits, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let mut router = routes.current();
        async move {
            if let Some(refused) = host_refusal(&request) {
                return Ok(refused);
            }
            tower_service::Service::call(&mut router, request).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout.0)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_size.0 as usize);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            // Finish the request in progress, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
