//! The plugin's state directory: one record per attachment, deferred switchd
//! cleanups, and the lock that serialises invocations.
//!
//! Layout under `stateDir`: `lock` (flock(2), held for a whole invocation),
//! `attachments/<port>.json` (what ADD created, for DEL, CHECK and GC),
//! `pending/<port>.json` (switchd cleanups a DEL could not do because
//! switchd was down) and `cleanup.log` (what deferred cleanups did later).
//! Records are written to a temporary file and renamed, so a crash never
//! leaves half a record.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::*;

/// What ADD created for one attachment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Network name.
    pub network: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// CNI_NETNS at ADD.
    pub netns: String,
    /// switchd control socket.
    pub socket: String,
    /// Bridge.
    pub bridge: String,
    /// Port (and host veth) name.
    pub port: String,
    /// OpenFlow port number.
    pub ofport: u32,
    /// Flow cookie.
    pub cookie: u64,
    /// `veth` or `vhost-user`.
    pub interface_type: String,
    /// Pod address (CIDR).
    pub address: String,
    /// Pod MAC.
    pub mac: String,
    /// K8S_POD_NAMESPACE, if given.
    #[serde(default)]
    pub pod_namespace: Option<String>,
    /// K8S_POD_NAME, if given.
    #[serde(default)]
    pub pod_name: Option<String>,
    /// The configuration IPAM was delegated (to release it on GC).
    pub ipam_conf: Value,
}

/// A switchd cleanup that could not be done yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Control socket.
    pub socket: String,
    /// Bridge.
    pub bridge: String,
    /// Port name.
    pub port: String,
    /// Flow cookie.
    pub cookie: u64,
}

/// The state directory, locked.
#[derive(Debug)]
pub struct State {
    dir: PathBuf,
    _lock: File,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> CniError {
    CniError::new(IO_FAILURE, format!("{what} {}: {e}", p.display()))
}

fn write_atomic(path: &Path, data: &[u8]) -> CniResult<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| io("cannot write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io("cannot rename into", path, e))
}

fn remove(path: &Path) -> CniResult<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("cannot remove", path, e)),
    }
}

impl State {
    /// Create the directory if needed and take its lock (blocking).
    pub fn open(dir: &str) -> CniResult<State> {
        let dir = PathBuf::from(dir);
        for sub in ["attachments", "pending"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| io("cannot create", &p, e))?;
        }
        let lp = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lp)
            .map_err(|e| io("cannot open", &lp, e))?;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io("cannot lock", &lp, e));
            }
        }
        Ok(State { dir, _lock: lock })
    }

    fn rec_path(&self, port: &str) -> PathBuf {
        self.dir.join("attachments").join(format!("{port}.json"))
    }

    fn pending_path(&self, port: &str) -> PathBuf {
        self.dir.join("pending").join(format!("{port}.json"))
    }

    /// The record of a port, if any (an unreadable record counts as none).
    pub fn record(&self, port: &str) -> Option<Record> {
        let data = fs::read(self.rec_path(port)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Store a record.
    pub fn save(&self, r: &Record) -> CniResult<()> {
        let data = serde_json::to_vec_pretty(r).unwrap_or_default();
        write_atomic(&self.rec_path(&r.port), &data)
    }

    /// Drop a record.
    pub fn forget(&self, port: &str) -> CniResult<()> {
        remove(&self.rec_path(port))
    }

    /// Every record.
    pub fn records(&self) -> Vec<Record> {
        let mut v = Vec::new();
        if let Ok(rd) = fs::read_dir(self.dir.join("attachments")) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "json") {
                    if let Some(r) = fs::read(&p)
                        .ok()
                        .and_then(|d| serde_json::from_slice(&d).ok())
                    {
                        v.push(r);
                    }
                }
            }
        }
        v.sort_by(|a: &Record, b| a.port.cmp(&b.port));
        v
    }

    /// Store a deferred cleanup.
    pub fn defer(&self, p: &Pending) -> CniResult<()> {
        let data = serde_json::to_vec_pretty(p).unwrap_or_default();
        write_atomic(&self.pending_path(&p.port), &data)
    }

    /// Every deferred cleanup.
    pub fn pending(&self) -> Vec<Pending> {
        let mut v = Vec::new();
        if let Ok(rd) = fs::read_dir(self.dir.join("pending")) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "json") {
                    if let Some(r) = fs::read(&p)
                        .ok()
                        .and_then(|d| serde_json::from_slice(&d).ok())
                    {
                        v.push(r);
                    }
                }
            }
        }
        v.sort_by(|a: &Pending, b| a.port.cmp(&b.port));
        v
    }

    /// A deferred cleanup is done (or superseded).
    pub fn undefer(&self, port: &str) -> CniResult<()> {
        remove(&self.pending_path(port))
    }

    /// Append a line to `cleanup.log`.
    pub fn log(&self, line: &str) {
        let p = self.dir.join("cleanup.log");
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&p) {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let _ = writeln!(f, "{t} {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(port: &str) -> Record {
        Record {
            network: "pods".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            socket: "/s".into(),
            bridge: "br0".into(),
            port: port.into(),
            ofport: 3,
            cookie: 0xf5,
            interface_type: "veth".into(),
            address: "10.0.0.2/24".into(),
            mac: "0a:58:0a:00:00:02".into(),
            pod_namespace: None,
            pod_name: Some("web".into()),
            ipam_conf: serde_json::json!({"name":"pods"}),
        }
    }

    #[test]
    fn records_and_pending_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("st");
        let dir = dir.to_str().unwrap();
        {
            let s = State::open(dir).unwrap();
            s.save(&rec("fsa")).unwrap();
            s.save(&rec("fsb")).unwrap();
            s.defer(&Pending {
                socket: "/s".into(),
                bridge: "br0".into(),
                port: "fsz".into(),
                cookie: 1,
            })
            .unwrap();
        }
        let s = State::open(dir).unwrap();
        assert_eq!(s.record("fsa"), Some(rec("fsa")));
        assert_eq!(s.records().len(), 2);
        s.forget("fsa").unwrap();
        s.forget("fsa").unwrap(); // idempotent
        assert_eq!(s.record("fsa"), None);
        assert_eq!(s.pending()[0].port, "fsz");
        s.undefer("fsz").unwrap();
        assert!(s.pending().is_empty());
    }

    #[test]
    fn lock_excludes_a_second_holder() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_str().unwrap().to_string();
        let s = State::open(&dir).unwrap();
        let f = File::open(d.path().join("lock")).unwrap();
        // SAFETY: flock on our own descriptor.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, -1, "a second exclusive lock must not be granted");
        drop(s);
        // SAFETY: as above.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, 0);
    }
}
