//! A recording relay in front of the control service: Envoy's calls pass through unchanged and
//! each HTTP/1.1 request (method, target, body, when it was complete) is kept. The tests read
//! report bodies and their spacing from it, which the control service's own log does not keep,
//! and count calls exactly however many there are (that log keeps the last 1000).
//!
//! A relay that cannot reach its upstream closes the client's connection: Envoy sees what it
//! would see with the control service stopped behind it. A hanging relay
//! ([`Tap::set_hanging`]) reads requests and never answers them: a control service that
//! accepts and then stalls, so only the caller's timeout ends the call.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::{HarnessError, Result};

/// One request that went through the tap.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub method: String,
    /// The raw request target, still percent-encoded.
    pub target: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// When its last byte arrived.
    pub at: Instant,
}

impl Tapped {
    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

type Log = Arc<Mutex<Vec<Tapped>>>;

/// The relay, listening on 127.0.0.1; stops accepting when dropped.
pub struct Tap {
    addr: SocketAddr,
    log: Log,
    stop: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
}

impl Tap {
    /// Relays connections to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("binding the tap"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("reading the tap's address"))?;
        let log: Log = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let hang = Arc::new(AtomicBool::new(false));
        let (accept_log, accept_stop, accept_hang) = (log.clone(), stop.clone(), hang.clone());
        std::thread::Builder::new()
            .name("tap-accept".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if accept_stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(client) = client {
                        relay(client, upstream, accept_log.clone(), accept_hang.clone());
                    }
                }
            })
            .map_err(HarnessError::io("starting the tap"))?;
        Ok(Self {
            addr,
            log,
            stop,
            hang,
        })
    }

    /// While set, requests are read and dropped: never forwarded, never answered, not kept.
    /// A connection that dropped one stays silent until its client closes it.
    pub fn set_hanging(&self, hanging: bool) {
        self.hang.store(hanging, Ordering::Relaxed);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in the order they completed.
    pub fn requests(&self) -> Vec<Tapped> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests so far had `path` (without the query).
    pub fn count(&self, path: &str) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|t| t.path() == path)
            .count()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Two threads per connection: client → upstream (parsed on the way) and back.
fn relay(client: TcpStream, upstream: SocketAddr, log: Log, hang: Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        // Dropped: the client's connection closes, as with nothing listening.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_back), Ok(server_back)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("tap-up".into())
        .spawn(move || forward(client, server, &log, &hang));
    let _ = std::thread::Builder::new()
        .name("tap-down".into())
        .spawn(move || {
            let (mut from, mut to) = (server_back, client_back);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
}

fn forward(mut from: TcpStream, mut to: TcpStream, log: &Log, hang: &AtomicBool) {
    let mut parser = Parser::default();
    let mut chunk = [0u8; 16 * 1024];
    let mut silent = false;
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Some(read) = chunk.get(..n) else { break };
        silent = silent || hang.load(Ordering::Relaxed);
        if silent {
            continue;
        }
        // Recorded before it is forwarded: an answer cannot arrive before its request is kept.
        let done = parser.feed(read);
        if !done.is_empty() {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(done);
        }
        if to.write_all(read).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Splits a client's byte stream into requests (Content-Length or chunked bodies).
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Tapped> {
        self.buf.extend_from_slice(bytes);
        let mut done = Vec::new();
        while let Some((request, used)) = parse(&self.buf) {
            done.push(request);
            self.buf.drain(..used.min(self.buf.len()));
        }
        done
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One complete request at the start of `buf` and the bytes it took, or `None` if incomplete.
fn parse(buf: &[u8]) -> Option<(Tapped, usize)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(buf.get(..head_end)?);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let mut length = 0usize;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok()?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let rest = buf.get(head_end..)?;
    let (body, used) = if chunked {
        dechunk(rest)?
    } else {
        (rest.get(..length)?.to_vec(), length)
    };
    Some((
        Tapped {
            method,
            target,
            body,
            at: Instant::now(),
        },
        head_end + used,
    ))
}

/// A chunked body (trailers skipped) and the bytes it took, or `None` if incomplete.
fn dechunk(mut rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = rest.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")?;
        let size_text = String::from_utf8_lossy(rest.get(..line_end)?);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        rest = rest.get(line_end + 2..)?;
        if size == 0 {
            // Trailers, then an empty line.
            let end = find(rest, b"\r\n")?;
            let mut after = rest.get(end + 2..)?;
            if end > 0 {
                let trailers_end = find(rest, b"\r\n\r\n")?;
                after = rest.get(trailers_end + 4..)?;
            }
            return Some((body, total - after.len()));
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// The pairs of an `application/x-www-form-urlencoded` body, keys and values decoded (`+` is a
/// space).
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            let key = kv.next().unwrap_or_default();
            let value = kv.next().unwrap_or_default();
            (decode(key), decode(value))
        })
        .collect()
}

fn decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn requests_split_with_lengths_and_chunks() {
        let mut p = Parser::default();
        let stream = b"GET /a?x=1 HTTP/1.1\r\nhost: h\r\n\r\nPOST /t HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcPOST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nxy\r\n1\r\nz\r\n0\r\n\r\n";
        // Byte by byte: a request is kept only once complete.
        let mut all = Vec::new();
        for b in stream.iter() {
            all.extend(p.feed(std::slice::from_ref(b)));
        }
        let got: Vec<_> = all
            .iter()
            .map(|t| (t.method.as_str(), t.target.as_str(), t.body.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                ("GET", "/a?x=1", &b""[..]),
                ("POST", "/t", &b"abc"[..]),
                ("POST", "/c", &b"xyz"[..])
            ]
        );
        assert!(p.buf.is_empty());
        assert_eq!(all[0].path(), "/a");
    }

    #[test]
    fn form_bodies_decode() {
        assert_eq!(
            form_pairs(b"transactions%5B0%5D%5Bapp_id%5D=a+b%2B&x="),
            [
                ("transactions[0][app_id]".to_owned(), "a b+".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
    }
}
