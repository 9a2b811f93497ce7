//! The network configuration (stdin) and the CNI environment.
//!
//! Input is the JSON a runtime writes on stdin and the `CNI_*` variables;
//! output is a validated [`NetConf`] and [`Env`], or a [`CniError`] with the
//! spec's code (6 undecodable, 1 version, 7 invalid, 2 unsupported value,
//! 4 environment) naming the key to fix. Unknown keys are ignored, as CNI
//! SPEC.md requires. The raw JSON is kept: IPAM is delegated the same
//! configuration with only `cniVersion` changed.

use std::net::Ipv4Addr;

use serde_json::Value;

use crate::error::*;

/// The versions this plugin reads configurations in and writes results in.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Default control socket (switchd's own default).
pub const DEFAULT_SOCKET: &str = switch::control::proto::DEFAULT_SOCKET;
/// Default router (gateway) MAC.
pub const DEFAULT_ROUTER_MAC: &str = "0a:58:00:00:00:01";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/ferroswitch";
/// Default AF_XDP rx ring of a pod port. Every AF_XDP port of a polling
/// thread fills its fill ring from the thread's one UMEM of 16384 frames
/// (switch/src/port/afxdp/umem.rs), an eighth kept back for transmit: at
/// switchd's default of 2048 only 7 ports get frames; at 256, 60 pods fit.
pub const DEFAULT_RX_RING: u32 = 256;
/// Default vhost-user socket directory.
pub const DEFAULT_SOCKET_DIR: &str = "/run/ferroswitch/vhost";

/// Network mode (defined beside the per-pod flows it shapes, in the library).
pub use cni_shim::flows::Mode;

/// The pod's interface kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaceType {
    /// veth pair, host end attached as an AF_XDP port.
    Veth,
    /// vhost-user socket for a DPDK application (no veth).
    VhostUser,
}

/// A validated network configuration.
#[derive(Clone, Debug)]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: String,
    /// `name`.
    pub name: String,
    /// switchd's control socket.
    pub socket: String,
    /// Bridge name.
    pub bridge: String,
    /// Mode.
    pub mode: Mode,
    /// Pod MTU.
    pub mtu: u32,
    /// Gateway MAC, lower case.
    pub router_mac: String,
    /// Interface kind.
    pub iface_type: IfaceType,
    /// vhost-user socket directory.
    pub socket_dir: String,
    /// State directory.
    pub state_dir: String,
    /// AF_XDP rx (and fill) ring size of a pod port (`n-rxq-desc`).
    pub rx_ring: u32,
    /// `xdpOffload`: forward the pod port's plain flows in switchd's XDP
    /// program (`add-port ... xdp-offload=true`), with GRO on the pod end so
    /// a redirect into it is delivered (docs/architecture.md "XDP offload").
    pub xdp_offload: bool,
    /// `ipam` object (None only where a command does not need it).
    pub ipam: Option<Value>,
    /// `prevResult`, if any.
    pub prev_result: Option<Value>,
    /// The whole configuration as received.
    pub raw: Value,
}

/// Compare two dotted versions numerically (`0.4.0` < `1.0.0`); unparsable
/// parts compare as 0.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let p = |s: &str| -> Vec<u64> { s.split('.').map(|x| x.parse().unwrap_or(0)).collect() };
    p(a).cmp(&p(b))
}

/// Whether `v` is one of [`SUPPORTED_VERSIONS`].
pub fn supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// Decode stdin into JSON (code 6 on failure).
pub fn decode(stdin: &[u8]) -> CniResult<Value> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            DECODE_FAILURE,
            format!("the network configuration on stdin is not valid JSON: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(CniError::new(
            DECODE_FAILURE,
            "the network configuration on stdin must be a JSON object",
        ));
    }
    Ok(v)
}

/// The `cniVersion` of a decoded configuration, validated (code 1 / 7).
pub fn cni_version(v: &Value) -> CniResult<String> {
    match v.get("cniVersion") {
        None => Err(CniError::new(
            INVALID_CONFIG,
            "the network configuration has no \"cniVersion\"",
        )),
        Some(Value::String(s)) if supported(s) => Ok(s.clone()),
        Some(Value::String(s)) => Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {s:?} is not supported; use one of {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        )),
        Some(other) => Err(CniError::new(
            INVALID_CONFIG,
            format!("\"cniVersion\" must be a string, got {other}"),
        )),
    }
}

fn opt_str(v: &Value, key: &str) -> CniResult<Option<String>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::new(
            INVALID_CONFIG,
            format!("{key:?} must be a string, got {other}"),
        )),
    }
}

/// Parse a MAC `aa:bb:cc:dd:ee:ff` into lower case, or None.
pub fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

impl NetConf {
    /// Validate a decoded configuration. `need_ipam`: ADD, DEL, CHECK and GC
    /// delegate to IPAM and need `ipam.type`.
    pub fn parse(v: Value, need_ipam: bool) -> CniResult<NetConf> {
        let cni_version = cni_version(&v)?;
        let name = opt_str(&v, "name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                CniError::new(INVALID_CONFIG, "the network configuration has no \"name\"")
            })?;
        let mode = match opt_str(&v, "mode")?.as_deref() {
            None | Some("overlay") => Mode::Overlay,
            Some("routed") => Mode::Routed,
            Some(m) => {
                return Err(CniError::new(
                    UNSUPPORTED_FIELD,
                    format!("unsupported \"mode\": {m:?} (use \"overlay\" or \"routed\")"),
                ))
            }
        };
        let iface_type = match opt_str(&v, "interfaceType")?.as_deref() {
            None | Some("veth") => IfaceType::Veth,
            Some("vhost-user") => IfaceType::VhostUser,
            Some(t) => {
                return Err(CniError::new(
                    UNSUPPORTED_FIELD,
                    format!(
                        "unsupported \"interfaceType\": {t:?} (use \"veth\" or \"vhost-user\")"
                    ),
                ))
            }
        };
        let mtu = match v.get("mtu") {
            None | Some(Value::Null) => match mode {
                // VXLAN over IPv4 adds 50 bytes (RFC 7348 §5: outer Ethernet
                // excluded, 20 IP + 8 UDP + 8 VXLAN + 14 inner Ethernet).
                Mode::Overlay => 1450,
                Mode::Routed => 1500,
            },
            Some(m) => match m.as_u64() {
                Some(n @ 68..=65535) => n as u32,
                _ => {
                    return Err(CniError::new(
                        INVALID_CONFIG,
                        format!("\"mtu\" must be an integer 68..65535, got {m}"),
                    ))
                }
            },
        };
        let router_mac = match opt_str(&v, "routerMac")? {
            None => DEFAULT_ROUTER_MAC.to_string(),
            Some(m) => parse_mac(&m).ok_or_else(|| {
                CniError::new(
                    INVALID_CONFIG,
                    format!("\"routerMac\" must be a MAC like 0a:58:00:00:00:01, got {m:?}"),
                )
            })?,
        };
        let bridge = opt_str(&v, "bridge")?.unwrap_or_else(|| "br0".into());
        if bridge.is_empty() {
            return Err(CniError::new(INVALID_CONFIG, "\"bridge\" is empty"));
        }
        let socket = opt_str(&v, "socket")?.unwrap_or_else(|| DEFAULT_SOCKET.into());
        let socket_dir = opt_str(&v, "socketDir")?.unwrap_or_else(|| DEFAULT_SOCKET_DIR.into());
        let state_dir = opt_str(&v, "stateDir")?.unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        let rx_ring = match v.get("rxRingSize") {
            None | Some(Value::Null) => DEFAULT_RX_RING,
            Some(n) => match n.as_u64() {
                Some(r @ 64..=16384) if r.is_power_of_two() => r as u32,
                _ => {
                    return Err(CniError::new(
                        INVALID_CONFIG,
                        format!("\"rxRingSize\" must be a power of two 64..16384, got {n}"),
                    ))
                }
            },
        };
        let xdp_offload = match v.get("xdpOffload") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("\"xdpOffload\" must be true or false, got {other}"),
                ))
            }
        };
        let ipam = match v.get("ipam") {
            None | Some(Value::Null) => None,
            Some(i @ Value::Object(_)) => Some(i.clone()),
            Some(other) => {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("\"ipam\" must be an object, got {other}"),
                ))
            }
        };
        if need_ipam {
            match ipam.as_ref().and_then(|i| i.get("type")) {
                Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => {}
                Some(t) => {
                    return Err(CniError::new(
                        INVALID_CONFIG,
                        format!("\"ipam.type\" must be a plugin name (no '/'), got {t}"),
                    ))
                }
                None => {
                    return Err(CniError::new(
                        INVALID_CONFIG,
                        "the network configuration has no \"ipam\" with a \"type\" (e.g. \"host-local\")",
                    ))
                }
            }
        }
        let prev_result = match v.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => Some(p.clone()),
            Some(other) => {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("\"prevResult\" must be an object, got {other}"),
                ))
            }
        };
        Ok(NetConf {
            cni_version,
            name,
            socket,
            bridge,
            mode,
            mtu,
            router_mac,
            iface_type,
            socket_dir,
            state_dir,
            rx_ring,
            xdp_offload,
            ipam,
            prev_result,
            raw: v,
        })
    }

    /// The `ipam.type` (validated by [`NetConf::parse`] with `need_ipam`).
    pub fn ipam_type(&self) -> CniResult<String> {
        self.ipam
            .as_ref()
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| CniError::new(INVALID_CONFIG, "no \"ipam.type\""))
    }
}

/// The CNI environment of one invocation.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// CNI_COMMAND.
    pub command: String,
    /// CNI_CONTAINERID.
    pub container_id: Option<String>,
    /// CNI_NETNS.
    pub netns: Option<String>,
    /// CNI_IFNAME.
    pub ifname: Option<String>,
    /// CNI_ARGS, raw.
    pub args: Option<String>,
    /// CNI_PATH.
    pub path: Option<String>,
}

impl Env {
    /// Read from the process environment.
    pub fn from_process() -> Env {
        let g = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        Env {
            command: g("CNI_COMMAND").unwrap_or_default(),
            container_id: g("CNI_CONTAINERID"),
            netns: g("CNI_NETNS"),
            ifname: g("CNI_IFNAME"),
            args: g("CNI_ARGS"),
            path: g("CNI_PATH"),
        }
    }

    /// A required variable (code 4 naming it when missing).
    pub fn need<'a>(&self, v: &'a Option<String>, name: &str) -> CniResult<&'a str> {
        v.as_deref().ok_or_else(|| {
            CniError::new(
                INVALID_ENV,
                format!("{name} is not set (required for {})", self.command),
            )
        })
    }

    /// CNI_CONTAINERID, validated as the spec says (alphanumeric plus `_.-`,
    /// starting with an alphanumeric).
    pub fn container_id(&self) -> CniResult<&str> {
        let id = self.need(&self.container_id, "CNI_CONTAINERID")?;
        let ok = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !ok {
            return Err(CniError::new(
                INVALID_ENV,
                format!("CNI_CONTAINERID {id:?} must be alphanumeric plus _ . - and start with an alphanumeric"),
            ));
        }
        Ok(id)
    }

    /// CNI_IFNAME, validated as a Linux interface name.
    pub fn ifname(&self) -> CniResult<&str> {
        let n = self.need(&self.ifname, "CNI_IFNAME")?;
        if !crate::names::valid_ifname(n) {
            return Err(CniError::new(
                INVALID_ENV,
                format!("CNI_IFNAME {n:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"),
            ));
        }
        Ok(n)
    }

    /// CNI_ARGS as key/value pairs (`K=V;K2=V2`; code 4 on a malformed pair).
    pub fn args(&self) -> CniResult<Vec<(String, String)>> {
        let Some(a) = &self.args else {
            return Ok(Vec::new());
        };
        a.split(';')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(CniError::new(
                    INVALID_ENV,
                    format!("CNI_ARGS: {p:?} is not KEY=VALUE (pairs are separated by ';')"),
                )),
            })
            .collect()
    }

    /// One CNI_ARGS value.
    pub fn arg(&self, key: &str) -> CniResult<Option<String>> {
        Ok(self
            .args()?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v))
    }
}

/// Parse `a.b.c.d/n`.
pub fn parse_cidr4(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let ip: Ipv4Addr = a.parse().ok()?;
    let p: u8 = p.parse().ok()?;
    (p <= 32).then_some((ip, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> CniResult<NetConf> {
        NetConf::parse(v, true)
    }

    #[test]
    fn parses_each_version_with_defaults() {
        for ver in ["0.4.0", "1.0.0", "1.1.0"] {
            let c = conf(
                json!({"cniVersion": ver, "name": "pods", "type": "ferroswitch",
                "ipam": {"type": "host-local"}}),
            )
            .unwrap();
            assert_eq!(c.cni_version, ver);
            assert_eq!(c.bridge, "br0");
            assert_eq!(c.mode, Mode::Overlay);
            assert_eq!(c.mtu, 1450);
            assert_eq!(c.socket, DEFAULT_SOCKET);
            assert_eq!(c.iface_type, IfaceType::Veth);
            assert_eq!(c.router_mac, DEFAULT_ROUTER_MAC);
            assert_eq!(c.rx_ring, DEFAULT_RX_RING);
            assert!(!c.xdp_offload, "XDP offload is opt-in");
        }
        let c = conf(json!({"cniVersion": "1.1.0", "name": "r", "mode": "routed",
            "ipam": {"type": "host-local"}}))
        .unwrap();
        assert_eq!(c.mtu, 1500);
        let c = conf(
            json!({"cniVersion": "1.1.0", "name": "r", "mode": "routed", "mtu": 9000,
            "routerMac": "0A:58:00:00:00:FE", "interfaceType": "vhost-user", "socketDir": "/x",
            "ipam": {"type": "host-local"}}),
        )
        .unwrap();
        assert_eq!(c.mtu, 9000);
        assert_eq!(c.router_mac, "0a:58:00:00:00:fe");
        assert_eq!(c.iface_type, IfaceType::VhostUser);
        assert_eq!(c.socket_dir, "/x");
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let c = conf(
            json!({"cniVersion": "1.0.0", "name": "pods", "frobnicate": [1, 2],
            "ipam": {"type": "host-local", "whatever": true}, "dns": {"nameservers": []}}),
        )
        .unwrap();
        assert_eq!(c.name, "pods");
    }

    #[test]
    fn errors_have_the_spec_codes() {
        assert_eq!(decode(b"{not json").unwrap_err().code, DECODE_FAILURE);
        assert_eq!(decode(b"[1]").unwrap_err().code, DECODE_FAILURE);
        let e =
            conf(json!({"cniVersion": "9.9.9", "name": "x", "ipam": {"type": "h"}})).unwrap_err();
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("9.9.9"));
        let e = conf(json!({"name": "x"})).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        let e = conf(json!({"cniVersion": "1.0.0", "ipam": {"type": "h"}})).unwrap_err();
        assert_eq!((e.code, e.msg.contains("name")), (INVALID_CONFIG, true));
        let e = conf(json!({"cniVersion": "1.0.0", "name": "x"})).unwrap_err();
        assert!(e.msg.contains("ipam"));
        let e = conf(
            json!({"cniVersion": "1.0.0", "name": "x", "mode": "bridged",
            "ipam": {"type": "h"}}),
        )
        .unwrap_err();
        assert_eq!(e.code, UNSUPPORTED_FIELD);
        assert!(e.msg.contains("bridged"));
        let e = conf(json!({"cniVersion": "1.0.0", "name": "x", "mtu": 20,
            "ipam": {"type": "h"}}))
        .unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        let e = conf(json!({"cniVersion": "1.0.0", "name": "x", "mtu": "1500",
            "ipam": {"type": "h"}}))
        .unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        for bad in [json!(100), json!(32), json!(32768), json!("256")] {
            let e = conf(
                json!({"cniVersion": "1.0.0", "name": "x", "rxRingSize": bad,
                "ipam": {"type": "h"}}),
            )
            .unwrap_err();
            assert_eq!(e.code, INVALID_CONFIG);
        }
        let e = conf(
            json!({"cniVersion": "1.0.0", "name": "x", "xdpOffload": "yes",
            "ipam": {"type": "h"}}),
        )
        .unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.contains("xdpOffload"), "{}", e.msg);
        let c = conf(
            json!({"cniVersion": "1.0.0", "name": "x", "xdpOffload": true,
            "ipam": {"type": "h"}}),
        )
        .unwrap();
        assert!(c.xdp_offload);
        let e = conf(
            json!({"cniVersion": "1.0.0", "name": "x", "routerMac": "nope",
            "ipam": {"type": "h"}}),
        )
        .unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        let e = conf(json!({"cniVersion": "1.0.0", "name": "x", "ipam": {"type": "../evil"}}))
            .unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        // Without need_ipam (STATUS, VERSION) ipam may be absent.
        assert!(NetConf::parse(json!({"cniVersion": "1.1.0", "name": "x"}), false).is_ok());
    }

    #[test]
    fn versions_order_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("0.4.0", "1.0.0"), Less);
        assert_eq!(version_cmp("1.1.0", "1.0.0"), Greater);
        assert_eq!(version_cmp("0.3.1", "0.3.1"), Equal);
        assert_eq!(version_cmp("0.10.0", "0.4.0"), Greater);
    }

    #[test]
    fn env_validation_and_args() {
        let e = Env {
            command: "ADD".into(),
            container_id: Some("abc-1_2.x".into()),
            ifname: Some("eth0".into()),
            args: Some(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=10.1.1.9".into(),
            ),
            ..Env::default()
        };
        assert_eq!(e.container_id().unwrap(), "abc-1_2.x");
        assert_eq!(e.arg("IP").unwrap().as_deref(), Some("10.1.1.9"));
        assert_eq!(e.arg("K8S_POD_NAME").unwrap().as_deref(), Some("web-0"));
        assert_eq!(e.arg("NOPE").unwrap(), None);
        let bad = Env {
            command: "ADD".into(),
            container_id: Some("-bad/id".into()),
            ifname: Some("way-too-long-ifname".into()),
            args: Some("novalue".into()),
            ..Env::default()
        };
        assert_eq!(bad.container_id().unwrap_err().code, INVALID_ENV);
        assert_eq!(bad.ifname().unwrap_err().code, INVALID_ENV);
        assert_eq!(bad.args().unwrap_err().code, INVALID_ENV);
        let none = Env::default();
        let e = none.need(&none.netns, "CNI_NETNS").unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"));
    }

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr4("10.244.1.7/24"),
            Some((Ipv4Addr::new(10, 244, 1, 7), 24))
        );
        assert_eq!(parse_cidr4("10.244.1.7/33"), None);
        assert_eq!(parse_cidr4("fd00::1/64"), None);
        assert_eq!(parse_cidr4("10.244.1.7"), None);
    }
}
