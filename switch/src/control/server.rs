//! The control socket server: a single-threaded mio event loop that accepts
//! connections on a Unix socket, frames newline-delimited JSON requests and
//! hands each to a [`Handler`], writing replies back in order.
//!
//! It never blocks on a client: reads and writes are non-blocking, a slow
//! reader only grows its own output buffer, and a client that sends a line
//! longer than [`MAX_REQUEST`] gets an error and is disconnected. Bad JSON
//! or an unknown command is answered with a structured error; the loop keeps
//! running whatever a client sends.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use super::proto::{ErrorBody, ErrorCode, Reply, Request, MAX_REQUEST};

/// Something that answers requests (the bridge).
pub trait Handler {
    /// Answer one request.
    fn handle(&mut self, req: Request) -> Reply;
    /// Called at least every `tick` interval (timeouts, housekeeping).
    fn tick(&mut self) {}
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another process is listening on the socket path.
    #[error("another switchd is already listening on {0}")]
    InUse(PathBuf),
    /// The socket path is longer than sockaddr_un allows (107 bytes + NUL).
    #[error("socket path {0} is {1} bytes long; Unix socket paths are limited to 107 bytes")]
    PathTooLong(PathBuf, usize),
    /// Some other I/O error, with what was being done.
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

const LISTENER: Token = Token(0);

struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    closing: bool,
}

/// The control server.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    poll: Poll,
    listener: UnixListener,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("in", &self.inbuf.len())
            .field("out", &self.outbuf.len())
            .finish()
    }
}

impl Server {
    /// Bind `path` (creating its directory, replacing a stale socket left by a
    /// dead switchd, refusing one that is alive) with permissions `mode`.
    pub fn bind(path: &Path, mode: u32) -> Result<Server, ServerError> {
        let len = path.as_os_str().len();
        if len > 107 {
            return Err(ServerError::PathTooLong(path.to_path_buf(), len));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| ServerError::Io(format!("creating {}", dir.display()), e))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path)
                .map_err(|e| ServerError::Io(format!("removing stale {}", path.display()), e))?;
        }
        // The socket appears at `path` only once it listens with its final
        // permissions: bound under a temporary name in the same directory,
        // chmod-ed, then renamed (atomic). A client that sees the path (a
        // CNI plugin, a test polling for it) never gets ECONNREFUSED from
        // the bind-to-listen window, nor a socket with the default mode.
        // When the temporary name would be over the length limit, bind in
        // place.
        let tmp = path.with_file_name(format!(".switchd-{}.sock", std::process::id()));
        let staged = tmp.as_os_str().len() <= 107;
        let at = if staged {
            let _ = std::fs::remove_file(&tmp);
            tmp.as_path()
        } else {
            path
        };
        let mut listener = UnixListener::bind(at)
            .map_err(|e| ServerError::Io(format!("binding {}", at.display()), e))?;
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ServerError::Io(format!("chmod {}", at.display()), e))?;
        if staged {
            std::fs::rename(at, path).map_err(|e| {
                let _ = std::fs::remove_file(at);
                ServerError::Io(
                    format!("renaming {} to {}", at.display(), path.display()),
                    e,
                )
            })?;
        }
        let poll = Poll::new().map_err(|e| ServerError::Io("creating poll".into(), e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| ServerError::Io("registering listener".into(), e))?;
        Ok(Server {
            path: path.to_path_buf(),
            poll,
            listener,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve until `stop` becomes true, calling `handler.tick()` every `tick`.
    pub fn run<H: Handler>(
        &mut self,
        handler: &mut H,
        stop: &AtomicBool,
        tick: Duration,
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut conns: HashMap<Token, Conn> = HashMap::new();
        let mut next = 1usize;
        while !stop.load(Ordering::Relaxed) {
            match self.poll.poll(&mut events, Some(tick)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    loop {
                        match self.listener.accept() {
                            Ok((mut stream, _)) => {
                                let t = Token(next);
                                next += 1;
                                self.poll.registry().register(
                                    &mut stream,
                                    t,
                                    Interest::READABLE,
                                )?;
                                conns.insert(
                                    t,
                                    Conn {
                                        stream,
                                        inbuf: Vec::new(),
                                        outbuf: Vec::new(),
                                        closing: false,
                                    },
                                );
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    continue;
                }
                let t = ev.token();
                let Some(c) = conns.get_mut(&t) else { continue };
                let alive = service(c, handler);
                if !alive || (c.closing && c.outbuf.is_empty()) {
                    if let Some(mut c) = conns.remove(&t) {
                        let _ = self.poll.registry().deregister(&mut c.stream);
                    }
                    continue;
                }
                let want = if c.outbuf.is_empty() {
                    Interest::READABLE
                } else {
                    Interest::READABLE | Interest::WRITABLE
                };
                self.poll.registry().reregister(&mut c.stream, t, want)?;
            }
            handler.tick();
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Read what is there, answer complete lines, write what can be written.
/// Returns false when the connection is finished.
fn service<H: Handler>(c: &mut Conn, handler: &mut H) -> bool {
    let mut buf = [0u8; 65536];
    let mut eof = false;
    if !c.closing {
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        let mut start = 0;
        while let Some(nl) = c.inbuf[start..].iter().position(|b| *b == b'\n') {
            let line = &c.inbuf[start..start + nl];
            start += nl + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let reply = answer(line, handler);
            let mut out = serde_json::to_vec(&reply).unwrap_or_else(|e| {
                format!(r#"{{"error":{{"code":"internal","message":"cannot encode reply: {e}"}}}}"#)
                    .into_bytes()
            });
            out.push(b'\n');
            c.outbuf.extend_from_slice(&out);
        }
        c.inbuf.drain(..start);
        if c.inbuf.len() > MAX_REQUEST {
            let e = Reply::Error(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("request line longer than {MAX_REQUEST} bytes; closing the connection"),
            ));
            if let Ok(mut out) = serde_json::to_vec(&e) {
                out.push(b'\n');
                c.outbuf.extend_from_slice(&out);
            }
            c.inbuf.clear();
            c.closing = true;
        }
        if eof {
            c.closing = true;
        }
    }
    while !c.outbuf.is_empty() {
        match c.stream.write(&c.outbuf) {
            Ok(0) => return false,
            Ok(n) => {
                c.outbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

fn answer<H: Handler>(line: &[u8], handler: &mut H) -> Reply {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(_) => {
            return Reply::Error(ErrorBody::new(
                ErrorCode::BadRequest,
                "request is not UTF-8",
            ))
        }
    };
    match serde_json::from_str::<Request>(text) {
        Ok(req) => handler.handle(req),
        Err(e) => {
            let what = if serde_json::from_str::<serde_json::Value>(text).is_ok() {
                format!("not a valid request: {e}")
            } else {
                format!("request is not valid JSON: {e}")
            };
            let mut input = text.to_string();
            input.truncate(200);
            Reply::Error(ErrorBody::new(ErrorCode::BadRequest, what).with_input(input))
        }
    }
}

/// A blocking client for the control socket (flowctl, cni-shim, tests).
#[derive(Debug)]
pub struct Client {
    stream: std::os::unix::net::UnixStream,
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl Client {
    /// Connect to `path`.
    pub fn connect(path: &Path) -> io::Result<Client> {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        let reader = std::io::BufReader::new(stream.try_clone()?);
        Ok(Client { stream, reader })
    }

    /// Send a request and wait for its reply.
    pub fn call(&mut self, req: &Request) -> io::Result<Reply> {
        use std::io::BufRead;
        let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
        line.push(b'\n');
        self.stream.write_all(&line)?;
        let mut resp = String::new();
        if self.reader.read_line(&mut resp)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "switchd closed the connection",
            ));
        }
        // A trace of a deep resubmit chain nests far beyond serde_json's default
        // limit of 128; the reply comes from switchd, which we trust, and its
        // depth is bounded by translation's own limits (64 resubmits).
        let mut de = serde_json::Deserializer::from_str(&resp);
        de.disable_recursion_limit();
        serde::Deserialize::deserialize(&mut de).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("switchd's reply could not be decoded: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Echo;
    impl Handler for Echo {
        fn handle(&mut self, req: Request) -> Reply {
            match req {
                Request::Hello => Reply::Ok(serde_json::json!({"hello": true})),
                other => Reply::Error(ErrorBody::new(ErrorCode::Internal, format!("{other:?}"))),
            }
        }
    }

    #[test]
    fn serves_requests_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let mut server = Server::bind(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            Server::bind(&path, 0o600),
            Err(ServerError::InUse(_))
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let p2 = path.clone();
        let client = std::thread::spawn(move || {
            let mut c = Client::connect(&p2).unwrap();
            assert_eq!(
                c.call(&Request::Hello).unwrap(),
                Reply::Ok(serde_json::json!({"hello": true}))
            );
            // Raw garbage on a second connection gets a structured error.
            let mut raw = std::os::unix::net::UnixStream::connect(&p2).unwrap();
            raw.write_all(b"{not json\n{\"cmd\":\"nope\"}\n").unwrap();
            let mut r = std::io::BufReader::new(raw);
            let mut l1 = String::new();
            let mut l2 = String::new();
            std::io::BufRead::read_line(&mut r, &mut l1).unwrap();
            std::io::BufRead::read_line(&mut r, &mut l2).unwrap();
            // The first connection still works.
            assert!(matches!(c.call(&Request::Hello).unwrap(), Reply::Ok(_)));
            stop2.store(true, Ordering::Relaxed);
            (l1, l2)
        });
        server
            .run(&mut Echo, &stop, Duration::from_millis(20))
            .unwrap();
        let (l1, l2) = client.join().unwrap();
        assert!(
            l1.contains("bad-request") && l1.contains("not valid JSON"),
            "{l1}"
        );
        assert!(
            l2.contains("bad-request") && l2.contains("not a valid request"),
            "{l2}"
        );
        drop(server);
        assert!(!path.exists(), "socket removed on drop");
    }

    #[test]
    fn stale_socket_replaced_and_long_path_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(Server::bind(&path, 0o600).is_ok());
        let long = dir.path().join("x".repeat(120));
        assert!(matches!(
            Server::bind(&long, 0o600),
            Err(ServerError::PathTooLong(..))
        ));
    }
}
