//! Options of a vhost-user port, as given to `add-port ... type=vhost_user
//! key=value...`.
//!
//! Input is the port's option map; output is a checked [`VhostOptions`] or
//! an error string naming the key. Nothing here touches the file system:
//! checks that need it (an existing non-socket file, a live socket) happen
//! when the socket is created.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Longest socket path: `sun_path` is 108 bytes including the final NUL.
pub const SUN_PATH_MAX: usize = 107;
/// Most queue pairs a port offers (`VHOST_USER_GET_QUEUE_NUM`).
pub const MAX_QUEUE_PAIRS: u32 = 16;
/// Option keys a vhost_user port accepts.
pub const VHOST_OPTION_KEYS: [&str; 5] = ["socket", "mode", "owner", "perm", "n_rxq"];

/// Who creates the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// switchd creates and listens on the socket (OVS `dpdkvhostuser`).
    Server,
    /// switchd connects to the application's socket and reconnects when it
    /// restarts (OVS `dpdkvhostuserclient`).
    Client,
}

/// The checked options of a vhost_user port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VhostOptions {
    /// Socket path.
    pub socket: PathBuf,
    /// Server or client.
    pub mode: Mode,
    /// Owner of the socket file (server mode): uid, gid.
    pub owner: Option<(u32, u32)>,
    /// Permission bits of the socket file (server mode).
    pub perm: Option<u32>,
    /// Queue pairs offered to the front-end.
    pub n_rxq: u32,
}

fn bad(key: &str, v: &str, why: &str) -> String {
    format!("vhost_user option {key}={v:?}: {why}")
}

impl VhostOptions {
    /// Parse the option map. `socket` is required; `mode` defaults to
    /// `server`, `n_rxq` to 1.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<VhostOptions, String> {
        let mut socket = None;
        let mut o = VhostOptions {
            socket: PathBuf::new(),
            mode: Mode::Server,
            owner: None,
            perm: None,
            n_rxq: 1,
        };
        for (k, v) in map {
            match k.as_str() {
                "socket" => {
                    if v.is_empty() {
                        return Err(bad(k, v, "empty path"));
                    }
                    if v.len() > SUN_PATH_MAX {
                        return Err(bad(
                            k,
                            v,
                            &format!(
                                "path is {} bytes, a unix socket path holds at most {SUN_PATH_MAX} (sun_path is 108 bytes with the NUL)",
                                v.len()
                            ),
                        ));
                    }
                    if v.contains('\0') {
                        return Err(bad(k, v, "path contains a NUL byte"));
                    }
                    socket = Some(PathBuf::from(v));
                }
                "mode" => {
                    o.mode = match v.as_str() {
                        "server" => Mode::Server,
                        "client" => Mode::Client,
                        _ => return Err(bad(k, v, "must be server or client")),
                    }
                }
                "owner" => {
                    let (u, g) = v
                        .split_once(':')
                        .ok_or_else(|| bad(k, v, "must be UID:GID (numbers)"))?;
                    let u = u
                        .parse::<u32>()
                        .map_err(|_| bad(k, v, "must be UID:GID (numbers)"))?;
                    let g = g
                        .parse::<u32>()
                        .map_err(|_| bad(k, v, "must be UID:GID (numbers)"))?;
                    o.owner = Some((u, g));
                }
                "perm" => {
                    let p = u32::from_str_radix(v.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|p| *p <= 0o777)
                        .ok_or_else(|| {
                            bad(k, v, "must be octal permission bits 000..777, e.g. 0660")
                        })?;
                    o.perm = Some(p);
                }
                "n_rxq" => {
                    o.n_rxq = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_QUEUE_PAIRS).contains(n))
                        .ok_or_else(|| bad(k, v, &format!("must be 1..{MAX_QUEUE_PAIRS}")))?;
                }
                _ => {
                    return Err(format!(
                        "vhost_user ports take no option {k:?} (known: {})",
                        VHOST_OPTION_KEYS.join(", ")
                    ))
                }
            }
        }
        o.socket = socket.ok_or("vhost_user ports need socket=PATH")?;
        if o.mode == Mode::Client && (o.owner.is_some() || o.perm.is_some()) {
            return Err("owner and perm apply to mode=server only (in client mode the application creates the socket)".into());
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_server_and_client() {
        let o = VhostOptions::from_map(&m(&[("socket", "/tmp/a.sock")])).unwrap();
        assert_eq!(o.mode, Mode::Server);
        assert_eq!(o.n_rxq, 1);
        let o = VhostOptions::from_map(&m(&[
            ("socket", "/tmp/a.sock"),
            ("mode", "client"),
            ("n_rxq", "4"),
        ]))
        .unwrap();
        assert_eq!(o.mode, Mode::Client);
        assert_eq!(o.n_rxq, 4);
        let o = VhostOptions::from_map(&m(&[
            ("socket", "/tmp/a.sock"),
            ("owner", "1000:1001"),
            ("perm", "0660"),
        ]))
        .unwrap();
        assert_eq!(o.owner, Some((1000, 1001)));
        assert_eq!(o.perm, Some(0o660));
    }

    #[test]
    fn refuses_bad_options_with_the_key_named() {
        let long = format!("/tmp/{}", "x".repeat(103));
        assert_eq!(long.len(), 108);
        let e = VhostOptions::from_map(&m(&[("socket", &long)])).unwrap_err();
        assert!(e.contains("at most 107"), "{e}");
        let ok = format!("/tmp/{}", "x".repeat(102));
        assert!(VhostOptions::from_map(&m(&[("socket", &ok)])).is_ok());
        for (kv, want) in [
            (vec![], "need socket"),
            (vec![("socket", "/s"), ("mode", "both")], "server or client"),
            (vec![("socket", "/s"), ("n_rxq", "0")], "1..16"),
            (vec![("socket", "/s"), ("n_rxq", "17")], "1..16"),
            (vec![("socket", "/s"), ("perm", "0999")], "octal"),
            (vec![("socket", "/s"), ("owner", "root")], "UID:GID"),
            (
                vec![("socket", "/s"), ("color", "red")],
                "no option \"color\"",
            ),
            (
                vec![("socket", "/s"), ("mode", "client"), ("perm", "0600")],
                "mode=server only",
            ),
        ] {
            let e = VhostOptions::from_map(&m(&kv)).unwrap_err();
            assert!(e.contains(want), "{kv:?}: {e}");
        }
    }
}
