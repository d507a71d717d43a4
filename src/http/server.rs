//! The connection loop: accept, TLS when configured, HTTP/1.1 through hyper, and the limits that keep one
//! careless or hostile client from starving the others: a cap on connections served at once (beyond it
//! the longest idle connection is closed for the new one; when every connection has a request in
//! progress, new ones are refused with a 503 and a WARN), a header read timeout (which also ends a kept-alive connection that starts
//! no next request), and an inactivity timeout. Graceful shutdown stops accepting, lets in-flight requests
//! finish within the grace period, then closes what is left.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::ops::Shared;
use crate::ops::tls::Tls;

/// The connection limits (`[server]`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
        }
    }
}

/// What the loop needs beside the application.
pub struct Listener {
    pub listener: TcpListener,
    pub tls: Option<Arc<Tls>>,
    pub limits: Arc<Shared<ConnectionLimits>>,
    /// Counts connections refused at the cap.
    pub refused: Option<prometheus_client::metrics::counter::Counter>,
}

/// A stream that records when bytes last moved, for the inactivity timeout.
struct Watched<S> {
    inner: S,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<S> Watched<S> {
    fn touch(&self) {
        self.last.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The connections being served, so that the cap can make room: when it is reached, the connection quiet
/// the longest without a request in progress is closed for the new one. Idle clients thus cannot lock
/// out a client with a request to make; only when every connection has a request in progress is a new
/// one refused.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Conn>>,
}

#[derive(Clone)]
struct Conn {
    last: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

impl Registry {
    fn len(&self) -> usize {
        self.conns.lock().map_or(0, |c| c.len())
    }

    fn add(self: &Arc<Self>, conn: Conn) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.conns.lock() {
            c.insert(id, conn);
        }
        Registered { registry: self.clone(), id }
    }

    /// Closes the connection quiet the longest that has no request in progress. False when every
    /// connection has one.
    fn evict_idlest(&self) -> bool {
        let Ok(mut conns) = self.conns.lock() else { return false };
        let idlest = conns
            .iter()
            .filter(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, c)| c.last.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        // Out of the registry at once, so that it is not chosen twice while it closes.
        match idlest.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the registry when it ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut c) = self.registry.conns.lock() {
            c.remove(&self.id);
        }
    }
}

/// Marks a request in progress on its connection.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(n: &Arc<AtomicUsize>) -> Busy {
        n.fetch_add(1, Ordering::Relaxed);
        Busy(n.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Rewrites a request before routing (see `http::canonical_path`).
pub type Rewrite = Arc<dyn Fn(axum::extract::Request) -> axum::extract::Request + Send + Sync>;

/// Serves `app` until `shutdown` resolves, then lets in-flight requests finish (at most `grace`).
///
/// # Errors
/// Accepting fails in a way that is not about one connection.
pub async fn run(
    l: Listener,
    app: Router,
    rewrite: Rewrite,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let registry = Arc::new(Registry::default());
    let mut warned: Option<Instant> = None;
    let mut accept_warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = l.listener.accept() => match accepted {
                Ok(a) => a,
                // Per-connection failures (reset before accept, out of descriptors for a moment): go on.
                Err(e) => {
                    if accept_warned.is_none_or(|w| w.elapsed() > Duration::from_secs(10)) {
                        accept_warned = Some(Instant::now());
                        tracing::warn!(error = %e, "accepting a connection failed (logged at most every 10 s)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let limits = l.limits.get();
        if registry.len() >= limits.max_connections {
            let made_room = registry.evict_idlest();
            if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(10)) {
                warned = Some(Instant::now());
                tracing::warn!(
                    max_connections = limits.max_connections,
                    client = %peer.ip(),
                    "connection limit reached (server.max_connections): {} (logged at most every 10 s)",
                    if made_room { "closing the longest idle connection for each new one" } else { "every connection has a request in progress; refusing new ones with 503" }
                );
            }
            if !made_room {
                if let Some(c) = &l.refused {
                    c.inc();
                }
                if l.tls.is_none() {
                    tokio::spawn(refuse(stream));
                }
                continue;
            }
        }
        let conn = Conn { last: Arc::new(AtomicU64::new(0)), in_flight: Arc::default(), evict: Arc::default() };
        let registered = registry.add(conn.clone());
        let (app, rewrite, tls) = (app.clone(), rewrite.clone(), l.tls.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _registered = registered;
            let _ = stream.set_nodelay(true);
            let in_flight = conn.in_flight.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                let req = rewrite(req);
                let busy = Busy::enter(&in_flight);
                let app = app.clone();
                async move {
                    let resp = tower::ServiceExt::oneshot(app, req).await;
                    drop(busy);
                    resp
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
            let epoch = Instant::now();
            match tls {
                None => {
                    let io = TokioIo::new(Watched { inner: stream, last: conn.last.clone(), epoch });
                    let served = watcher.watch(builder.serve_connection(io, service));
                    drive(served, &conn, epoch, limits.idle_timeout, peer).await;
                }
                Some(tls) => {
                    let handshake = tokio::select! {
                        h = tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(stream)) => h,
                        () = conn.evict.notified() => return,
                    };
                    let stream = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer.ip(), error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(client = %peer.ip(), "TLS handshake timed out");
                            return;
                        }
                    };
                    let io = TokioIo::new(Watched { inner: stream, last: conn.last.clone(), epoch });
                    let served = watcher.watch(builder.serve_connection(io, service));
                    drive(served, &conn, epoch, limits.idle_timeout, peer).await;
                }
            }
        });
    }
    drop(l.listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace_seconds = grace.as_secs(), "in-flight requests did not finish in time; closing them");
    }
    Ok(())
}

/// The answer to a connection beyond the cap, while one can still be sent (plain HTTP).
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"503","detail":"too many connections; retry"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/scim+json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(response.as_bytes())).await;
}

/// Runs a connection until it ends, until no byte has moved for `idle`, or until it is evicted to make
/// room under the connection cap.
async fn drive<C>(conn: C, state: &Conn, epoch: Instant, idle: Duration, peer: SocketAddr)
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    loop {
        let last = Duration::from_millis(state.last.load(Ordering::Relaxed));
        let quiet_for = epoch.elapsed().saturating_sub(last);
        if quiet_for >= idle {
            tracing::debug!(client = %peer.ip(), idle_seconds = idle.as_secs(), "closing an idle connection");
            return;
        }
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r
                    && !e.is_incomplete_message()
                {
                    tracing::debug!(client = %peer.ip(), error = %e, "connection ended with an error");
                }
                return;
            }
            () = state.evict.notified() => {
                tracing::debug!(client = %peer.ip(), "closing an idle connection to make room for a new one");
                return;
            }
            () = tokio::time::sleep(idle - quiet_for) => {}
        }
    }
}
