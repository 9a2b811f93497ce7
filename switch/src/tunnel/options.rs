//! Options of a `type=vxlan` port, parsed from the operator's key=value map
//! (`flowctl add-port br0 vx0 type=vxlan local_ip=192.168.10.1
//! remote_ip=flow key=flow underlay=eth1`).
//!
//! Keys follow OVS's tunnel `options:` (vswitchd/vswitch.xml: `local_ip`,
//! `remote_ip`, `key`, `dst_port`, `df_default`, `ttl`, `tos`) plus ours:
//! `underlay` (the uplink interface switchd opens with AF_XDP), `gw` (the
//! underlay next hop for every remote VTEP; without it remote VTEPs are
//! assumed on-link), `underlay_mac` / `underlay_mtu` (override what is read
//! from the interface) and `underlay_xdp_mode`. Every unknown key and every
//! bad value is a clear error naming the key; nothing here touches the
//! kernel.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::packet::ethernet::Mac;
use crate::packet::vxlan::UDP_PORT;

/// Where a tunnel field comes from: fixed by the port, or set by the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromFlow<T> {
    /// `=flow`: the flow sets it (`set_field:...->tun_id` / `tun_dst`).
    Flow,
    /// A fixed value.
    Fixed(T),
}

/// A parsed `type=vxlan` configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanOptions {
    /// The local VTEP address (outer source; decapsulated frames must be to it).
    pub local_ip: u32,
    /// `local_ip=ADDR/LEN`: the underlay subnet. Remote VTEPs inside it are
    /// on-link, others go through `gw` (None: every VTEP through `gw` when
    /// set, else on-link).
    pub local_len: Option<u8>,
    /// `routed=true`: the port also carries routed, unencapsulated traffic
    /// on its underlay (Calico's cross-subnet mode: one uplink, two ways).
    pub routed: bool,
    /// The remote VTEP (`remote_ip=flow|IP`).
    pub remote_ip: FromFlow<u32>,
    /// The VNI (`key=flow|N`, OVS default 0).
    pub key: FromFlow<u32>,
    /// UDP destination port (default 4789).
    pub dst_port: u16,
    /// The uplink interface.
    pub underlay: String,
    /// Next hop for every remote VTEP (None: on-link).
    pub gw: Option<u32>,
    /// Outer DF bit (OVS `df_default`, default true).
    pub df: bool,
    /// Outer TTL (OVS default 64).
    pub ttl: u8,
    /// Outer TOS (default 0).
    pub tos: u8,
    /// Underlay MAC override (None: read from the interface).
    pub underlay_mac: Option<Mac>,
    /// Underlay MTU override (None: read from the interface).
    pub underlay_mtu: Option<u32>,
    /// `xdp-mode` for the underlay's AF_XDP socket (None: the AF_XDP default).
    pub underlay_xdp_mode: Option<String>,
}

/// Keys a vxlan port accepts.
pub const KEYS: &[&str] = &[
    "local_ip",
    "remote_ip",
    "key",
    "dst_port",
    "underlay",
    "gw",
    "df_default",
    "ttl",
    "tos",
    "underlay_mac",
    "underlay_mtu",
    "underlay_xdp_mode",
    "routed",
];

fn ip(key: &str, v: &str) -> Result<u32, String> {
    v.parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("{key}: {v:?} is not an IPv4 address"))
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(v: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut n = 0;
    for (i, part) in v.split(':').enumerate() {
        if i >= 6 || part.len() != 2 {
            return None;
        }
        m[i] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(m)
}

impl VxlanOptions {
    /// Parse and validate the option map.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<VxlanOptions, String> {
        if let Some(k) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!(
                "vxlan ports take no option {k:?} (known: {})",
                KEYS.join(", ")
            ));
        }
        let get = |k: &str| map.get(k).map(String::as_str);
        let local_text = get("local_ip").ok_or("vxlan ports need local_ip=IP")?;
        let (local_addr, local_len) = match local_text.split_once('/') {
            None => (local_text, None),
            Some((a, l)) => (
                a,
                Some(
                    l.parse::<u8>()
                        .ok()
                        .filter(|l| (1..=32).contains(l))
                        .ok_or_else(|| format!("local_ip: prefix length {l:?} is not 1..32"))?,
                ),
            ),
        };
        let local_ip = ip("local_ip", local_addr)?;
        let routed = match get("routed") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => return Err(format!("routed: {v:?} is not true or false")),
        };
        if local_ip == 0 || Ipv4Addr::from(local_ip).is_multicast() {
            return Err("local_ip must be a unicast address".into());
        }
        let remote_ip = match get("remote_ip") {
            None => return Err("vxlan ports need remote_ip=flow or remote_ip=IP".into()),
            Some("flow") => FromFlow::Flow,
            Some(v) => {
                let r = ip("remote_ip", v)?;
                if r == 0 || Ipv4Addr::from(r).is_multicast() || Ipv4Addr::from(r).is_broadcast() {
                    return Err(format!(
                        "remote_ip: {v:?} must be a unicast address (multicast VTEP groups are not supported)"
                    ));
                }
                FromFlow::Fixed(r)
            }
        };
        let key = match get("key") {
            None => FromFlow::Fixed(0),
            Some("flow") => FromFlow::Flow,
            Some(v) => {
                let n = if let Some(h) = v.strip_prefix("0x") {
                    u32::from_str_radix(h, 16).ok()
                } else {
                    v.parse::<u32>().ok()
                };
                FromFlow::Fixed(
                    n.filter(|n| *n <= 0x00ff_ffff)
                        .ok_or_else(|| format!("key: {v:?} is not flow or a VNI 0..16777215"))?,
                )
            }
        };
        let dst_port = match get("dst_port") {
            None => UDP_PORT,
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("dst_port: {v:?} is not a port 1..65535"))?,
        };
        let underlay = get("underlay")
            .filter(|u| !u.is_empty() && u.len() < 16 && !u.contains('/'))
            .ok_or("vxlan ports need underlay=IFNAME (the uplink interface, 1-15 characters)")?
            .to_string();
        let gw = get("gw").map(|v| ip("gw", v)).transpose()?;
        let df = match get("df_default") {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => return Err(format!("df_default: {v:?} is not true or false")),
        };
        let ttl = match get("ttl") {
            None => 64,
            Some(v) => v
                .parse::<u8>()
                .ok()
                .filter(|t| *t != 0)
                .ok_or_else(|| format!("ttl: {v:?} is not 1..255"))?,
        };
        let tos = match get("tos") {
            None => 0,
            Some(v) => v
                .parse::<u8>()
                .map_err(|_| format!("tos: {v:?} is not 0..255"))?,
        };
        let underlay_mac = get("underlay_mac")
            .map(|v| parse_mac(v).ok_or_else(|| format!("underlay_mac: {v:?} is not a MAC")))
            .transpose()?;
        let underlay_mtu = get("underlay_mtu")
            .map(|v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| format!("underlay_mtu: {v:?} is not 68..65535"))
            })
            .transpose()?;
        Ok(VxlanOptions {
            local_ip,
            local_len,
            routed,
            remote_ip,
            key,
            dst_port,
            underlay,
            gw,
            df,
            ttl,
            tos,
            underlay_mac,
            underlay_mtu,
            underlay_xdp_mode: get("underlay_xdp_mode").map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ovs_style_options_parse() {
        let o = VxlanOptions::from_map(&map(&[
            ("local_ip", "192.168.10.1"),
            ("remote_ip", "flow"),
            ("key", "flow"),
            ("underlay", "eth1"),
        ]))
        .unwrap();
        assert_eq!(o.local_ip, 0xc0a8_0a01);
        assert_eq!((o.remote_ip, o.key), (FromFlow::Flow, FromFlow::Flow));
        assert_eq!((o.dst_port, o.df, o.ttl, o.gw), (4789, true, 64, None));
        let o = VxlanOptions::from_map(&map(&[
            ("local_ip", "192.168.10.1"),
            ("remote_ip", "192.168.10.2"),
            ("key", "0x2a"),
            ("dst_port", "8472"),
            ("underlay", "eth1"),
            ("gw", "192.168.10.254"),
            ("df_default", "false"),
        ]))
        .unwrap();
        assert_eq!(o.remote_ip, FromFlow::Fixed(0xc0a8_0a02));
        assert_eq!(o.key, FromFlow::Fixed(42));
        assert_eq!((o.dst_port, o.df, o.gw), (8472, false, Some(0xc0a8_0afe)));
        assert_eq!((o.local_len, o.routed), (None, false));
        let o = VxlanOptions::from_map(&map(&[
            ("local_ip", "192.168.10.1/24"),
            ("remote_ip", "flow"),
            ("underlay", "eth1"),
            ("routed", "true"),
        ]))
        .unwrap();
        assert_eq!(
            (o.local_ip, o.local_len, o.routed),
            (0xc0a8_0a01, Some(24), true)
        );
    }

    #[test]
    fn bad_options_name_the_key() {
        let base = [
            ("local_ip", "192.168.10.1"),
            ("remote_ip", "flow"),
            ("underlay", "eth1"),
        ];
        for (k, v, want) in [
            ("local_ip", "x", "local_ip"),
            ("remote_ip", "224.0.0.1", "remote_ip"),
            ("key", "16777216", "key"),
            ("dst_port", "0", "dst_port"),
            ("underlay", "", "underlay"),
            ("ttl", "0", "ttl"),
            ("df_default", "yes", "df_default"),
            ("underlay_mac", "zz", "underlay_mac"),
            ("routed", "yes", "routed"),
            ("local_ip", "192.168.10.1/33", "local_ip"),
            ("color", "red", "color"),
        ] {
            let mut m = map(&base);
            m.insert(k.into(), v.into());
            let e = VxlanOptions::from_map(&m).unwrap_err();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
        let e = VxlanOptions::from_map(&map(&base[1..])).unwrap_err();
        assert!(e.contains("local_ip"), "{e}");
    }
}
