//! A small client of switchd's control socket (switch::control::proto).
//!
//! One connection per invocation; each request is one JSON line, each reply
//! one line, with a timeout so a wedged switchd fails the CNI command
//! instead of hanging the runtime. Connection failures are reported apart
//! from switchd's own errors: ADD turns the first into "try again later"
//! (11), DEL into a deferred cleanup.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;
use switch::control::proto::{ErrorBody, ErrorCode, Reply, Request};

use crate::error::*;

/// How long one request may take (adding an AF_XDP port loads an XDP
/// program and maps the UMEM: well under a second normally).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug)]
pub enum CallError {
    /// switchd could not be reached (or the connection broke).
    Unreachable(String),
    /// switchd answered with an error.
    Switchd(ErrorBody),
}

impl CallError {
    /// As a CNI error for ADD.
    pub fn into_cni(self, what: &str) -> CniError {
        match self {
            CallError::Unreachable(m) => {
                CniError::new(TRY_AGAIN_LATER, format!("switchd is unreachable: {m}"))
            }
            CallError::Switchd(e) => CniError::new(
                SWITCHD_ERROR,
                format!("switchd refused {what}: {}", e.message),
            )
            .details(e.to_string()),
        }
    }

    /// Whether switchd said the thing is not there (port or bridge).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Switchd(e) if e.code == ErrorCode::UnknownPort)
    }
}

/// A connection to switchd.
#[derive(Debug)]
pub struct Switchd {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Switchd {
    /// Connect to the control socket.
    pub fn connect(path: &str) -> Result<Switchd, CallError> {
        let un = |e: std::io::Error| CallError::Unreachable(format!("{path}: {e}"));
        let stream = UnixStream::connect(path).map_err(un)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(un)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(un)?;
        let reader = BufReader::new(stream.try_clone().map_err(un)?);
        Ok(Switchd { stream, reader })
    }

    /// Send one request; the `ok` body or the error.
    pub fn call(&mut self, req: &Request) -> Result<Value, CallError> {
        let un = |e: std::io::Error| CallError::Unreachable(e.to_string());
        let mut line =
            serde_json::to_vec(req).map_err(|e| CallError::Unreachable(e.to_string()))?;
        line.push(b'\n');
        self.stream.write_all(&line).map_err(un)?;
        let mut resp = String::new();
        if self.reader.read_line(&mut resp).map_err(un)? == 0 {
            return Err(CallError::Unreachable(
                "switchd closed the connection".into(),
            ));
        }
        match serde_json::from_str::<Reply>(&resp) {
            Ok(Reply::Ok(v)) => Ok(v),
            Ok(Reply::Error(e)) => Err(CallError::Switchd(e)),
            Err(e) => Err(CallError::Unreachable(format!(
                "switchd's reply could not be decoded: {e}"
            ))),
        }
    }
}
