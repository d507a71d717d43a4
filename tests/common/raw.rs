//! HTTP/1.1 by hand on a connection the test holds: to send a request over the very same connection
//! before and after a reload, to send headers a byte at a time, or to stop sending half-way.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A response: status, headers (names in lower case) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A GET with a bearer token, keeping the connection open.
pub fn get(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n")
}

/// Reads one response (Content-Length framed, as the daemon sends them) within 10 s.
pub async fn read_answer<S: AsyncRead + Unpin>(s: &mut S) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), read(s)).await.expect("an answer within 10 s")
}

async fn read<S: AsyncRead + Unpin>(s: &mut S) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a response; got {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().expect("length"));
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Sends `request` and reads the answer.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &str) -> Answer {
    s.write_all(request.as_bytes()).await.expect("write");
    read_answer(s).await
}

/// Whether the server closes the connection within `within` (reads until end of stream, discarding).
pub async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
