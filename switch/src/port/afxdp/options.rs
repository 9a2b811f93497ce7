//! Options of an AF_XDP port, parsed from the operator's key=value map
//! (`flowctl add-port ... type=afxdp ifname=eth0 xdp-mode=generic`).
//!
//! Keys follow OVS's `options:` for `type=afxdp` (vswitchd/vswitch.xml:
//! `n_rxq`, `xdp-mode`, `n_rxq_desc`/`n_txq_desc` spelled with dashes here). Every
//! unknown key and every bad value is a clear error naming the key; nothing
//! here touches the kernel, so checking that the interface exists is
//! [`super::AfxdpPort::open`]'s job.

use std::collections::BTreeMap;
use std::fmt;

/// Default descriptors per ring (OVS netdev-afxdp uses 2048 too).
pub const DEFAULT_RING_DESCS: u32 = 2048;
/// Smallest ring accepted (the polling loop moves 32 descriptors per call).
pub const MIN_RING_DESCS: u32 = 64;
/// Largest ring accepted.
pub const MAX_RING_DESCS: u32 = 16384;
/// Largest UMEM accepted, in frames (4 KiB each: 256 MiB).
pub const MAX_UMEM_FRAMES: u32 = 65536;
/// Most rx queues one port may poll (`n_rxq`).
pub const MAX_RXQ: u32 = 64;

/// How the XDP program is attached and how the socket binds (OVS `xdp-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Try `native`, fall back to `generic` (the default, as in OVS).
    #[default]
    BestEffort,
    /// Driver-mode XDP with zero-copy binding. Refused at bind: every port
    /// socket shares its thread's UMEM, whose owner socket is copy mode,
    /// and a shared socket takes the owner's mode (umem.rs).
    NativeWithZerocopy,
    /// Driver-mode XDP, copy binding.
    Native,
    /// Generic (skb) XDP, copy binding: works on every interface, slowest.
    Generic,
}

impl XdpMode {
    /// The option value naming this mode.
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::BestEffort => "best-effort",
            XdpMode::NativeWithZerocopy => "native-with-zerocopy",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }

    /// Parse an option value.
    pub fn parse(s: &str) -> Option<XdpMode> {
        Some(match s {
            "best-effort" => XdpMode::BestEffort,
            "native-with-zerocopy" => XdpMode::NativeWithZerocopy,
            "native" => XdpMode::Native,
            "generic" => XdpMode::Generic,
            _ => return None,
        })
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything needed to open one AF_XDP socket on one interface queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfxdpOptions {
    /// Interface to attach to (must exist when the port is opened).
    pub ifname: String,
    /// Hardware queue to bind (default 0). With `n_rxq` > 1 the port binds
    /// queues 0..n_rxq and this is the queue of one socket of them.
    pub queue: u32,
    /// Queues the port polls, one socket each (OVS `options:n_rxq`, default 1).
    pub n_rxq: u32,
    /// XDP attach / bind mode.
    pub xdp_mode: XdpMode,
    /// Descriptors in the rx ring and the fill ring (power of two).
    pub n_rxq_desc: u32,
    /// Descriptors in the tx ring and the completion ring (power of two).
    pub n_txq_desc: u32,
    /// UMEM frames (4 KiB each) of the port's own UMEM when it is opened
    /// alone ([`super::AfxdpPort::open`]); at least `n_rxq_desc + n_txq_desc`
    /// so the fill ring can be full while a whole tx ring is in flight. In
    /// switchd a port shares its polling thread's UMEM
    /// ([`super::umem::THREAD_UMEM_FRAMES`]) and this is only validated.
    pub umem_frames: u32,
    /// `xdp-offload=true`: flows between this port and other such ports may
    /// be forwarded by switchd's XDP program in the kernel (offload.rs).
    /// Setting it asserts that the interface's veth peer can take XDP
    /// redirects (it has GRO enabled or an XDP program: the peer needs NAPI,
    /// kernel >= 5.13); without that the kernel drops redirected frames.
    pub xdp_offload: bool,
    /// `xdp-offload-entries`: size of the interface's offload table.
    pub offload_entries: u32,
}

/// The keys [`AfxdpOptions::from_map`] accepts (`type` is the port type itself).
pub const KEYS: [&str; 10] = [
    "type",
    "ifname",
    "queue",
    "n_rxq",
    "xdp-mode",
    "n-rxq-desc",
    "n-txq-desc",
    "umem-frames",
    "xdp-offload",
    "xdp-offload-entries",
];

impl AfxdpOptions {
    /// The options of each socket of the port: one per queue, `queue` set.
    pub fn per_queue(&self) -> Vec<AfxdpOptions> {
        if self.n_rxq <= 1 {
            return vec![self.clone()];
        }
        (0..self.n_rxq)
            .map(|q| AfxdpOptions {
                queue: q,
                ..self.clone()
            })
            .collect()
    }

    /// Options with defaults for interface `ifname`.
    pub fn new(ifname: &str) -> AfxdpOptions {
        AfxdpOptions {
            ifname: ifname.to_string(),
            queue: 0,
            n_rxq: 1,
            xdp_mode: XdpMode::BestEffort,
            n_rxq_desc: DEFAULT_RING_DESCS,
            n_txq_desc: DEFAULT_RING_DESCS,
            umem_frames: 2 * DEFAULT_RING_DESCS,
            xdp_offload: false,
            offload_entries: super::fastpath::DEFAULT_OFFLOAD_ENTRIES,
        }
    }

    /// Parse `ifname` (required), `queue`, `n_rxq`, `xdp-mode`, `n-rxq-desc`,
    /// `n-txq-desc`, `umem-frames`. A `type` key, if present, must be `afxdp`.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<AfxdpOptions, String> {
        for k in map.keys() {
            if !KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "afxdp: unknown option `{k}` (expected one of: {})",
                    KEYS[1..].join(", ")
                ));
            }
        }
        if let Some(t) = map.get("type") {
            if t != "afxdp" {
                return Err(format!("afxdp: option type={t}, expected type=afxdp"));
            }
        }
        let ifname = map
            .get("ifname")
            .ok_or_else(|| "afxdp: missing required option `ifname`".to_string())?;
        check_ifname(ifname)?;
        let mut o = AfxdpOptions::new(ifname);
        if let Some(v) = map.get("queue") {
            o.queue = v
                .parse::<u32>()
                .map_err(|_| format!("afxdp: queue={v} is not a queue number (0, 1, ...)"))?;
        }
        if let Some(v) = map.get("n_rxq") {
            o.n_rxq = v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_RXQ).contains(n))
                .ok_or_else(|| {
                    format!("afxdp: n_rxq={v} must be a number of queues, 1 to {MAX_RXQ}")
                })?;
            if o.n_rxq > 1 && map.contains_key("queue") {
                return Err(format!(
                    "afxdp: queue= and n_rxq={} do not go together (n_rxq polls queues 0 to {})",
                    o.n_rxq,
                    o.n_rxq - 1
                ));
            }
        }
        if let Some(v) = map.get("xdp-mode") {
            o.xdp_mode = XdpMode::parse(v).ok_or_else(|| {
                format!(
                    "afxdp: xdp-mode={v} is not one of best-effort, native-with-zerocopy, native, generic"
                )
            })?;
        }
        if let Some(v) = map.get("n-rxq-desc") {
            o.n_rxq_desc = ring_size("n-rxq-desc", v)?;
        }
        if let Some(v) = map.get("n-txq-desc") {
            o.n_txq_desc = ring_size("n-txq-desc", v)?;
        }
        if let Some(v) = map.get("xdp-offload") {
            o.xdp_offload = match v.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(format!("afxdp: xdp-offload={v} must be true or false")),
            };
        }
        if let Some(v) = map.get("xdp-offload-entries") {
            let max = super::fastpath::MAX_OFFLOAD_ENTRIES;
            o.offload_entries = v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    format!(
                        "afxdp: xdp-offload-entries={v} must be a number of entries, 1 to {max}"
                    )
                })?;
        }
        let need = o.n_rxq_desc + o.n_txq_desc;
        match map.get("umem-frames") {
            Some(v) => {
                let n = v
                    .parse::<u32>()
                    .map_err(|_| format!("afxdp: umem-frames={v} is not a number of frames"))?;
                if n < need || n > MAX_UMEM_FRAMES {
                    return Err(format!(
                        "afxdp: umem-frames={n} must be between n-rxq-desc + n-txq-desc ({need}) and {MAX_UMEM_FRAMES}"
                    ));
                }
                o.umem_frames = n;
            }
            None => o.umem_frames = need,
        }
        Ok(o)
    }
}

/// Linux interface names: 1..=15 bytes (IFNAMSIZ 16 with the NUL), no `/`,
/// no whitespace, not `.` or `..` (net/core/dev.c dev_valid_name).
fn check_ifname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "afxdp: ifname={name:?} is not a valid interface name"
        ))
    }
}

fn ring_size(key: &str, v: &str) -> Result<u32, String> {
    let n = v
        .parse::<u32>()
        .map_err(|_| format!("afxdp: {key}={v} is not a number of descriptors"))?;
    if !n.is_power_of_two() || !(MIN_RING_DESCS..=MAX_RING_DESCS).contains(&n) {
        return Err(format!(
            "afxdp: {key}={n} must be a power of two between {MIN_RING_DESCS} and {MAX_RING_DESCS}"
        ));
    }
    Ok(n)
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
    fn defaults_and_every_key() {
        let o = AfxdpOptions::from_map(&map(&[("ifname", "veth0")])).unwrap();
        assert_eq!(o, AfxdpOptions::new("veth0"));
        assert_eq!(o.umem_frames, 4096);
        assert_eq!(o.xdp_mode, XdpMode::BestEffort);
        let o = AfxdpOptions::from_map(&map(&[
            ("type", "afxdp"),
            ("ifname", "eth1"),
            ("queue", "3"),
            ("xdp-mode", "native-with-zerocopy"),
            ("n-rxq-desc", "512"),
            ("n-txq-desc", "256"),
            ("umem-frames", "1024"),
        ]))
        .unwrap();
        assert_eq!(o.queue, 3);
        assert_eq!(o.xdp_mode, XdpMode::NativeWithZerocopy);
        assert_eq!(
            (o.n_rxq_desc, o.n_txq_desc, o.umem_frames),
            (512, 256, 1024)
        );
        // n_rxq: one socket per queue, 0..n
        let o = AfxdpOptions::from_map(&map(&[("ifname", "e"), ("n_rxq", "3")])).unwrap();
        let qs: Vec<u32> = o.per_queue().iter().map(|q| q.queue).collect();
        assert_eq!(qs, [0, 1, 2]);
        assert!(o
            .per_queue()
            .iter()
            .all(|q| q.ifname == "e" && q.n_rxq == 3));
        let o = AfxdpOptions::from_map(&map(&[("ifname", "e"), ("queue", "5")])).unwrap();
        assert_eq!(o.per_queue().len(), 1);
        assert_eq!(o.per_queue()[0].queue, 5);
        // umem-frames defaults to what the rings need
        let o = AfxdpOptions::from_map(&map(&[("ifname", "e"), ("n-rxq-desc", "128")])).unwrap();
        assert_eq!(o.umem_frames, 128 + 2048);
        assert!(!o.xdp_offload);
        let o = AfxdpOptions::from_map(&map(&[
            ("ifname", "e"),
            ("xdp-offload", "true"),
            ("xdp-offload-entries", "100"),
        ]))
        .unwrap();
        assert!(o.xdp_offload);
        assert_eq!(o.offload_entries, 100);
        for m in ["best-effort", "native", "generic", "native-with-zerocopy"] {
            assert_eq!(XdpMode::parse(m).unwrap().name(), m);
        }
    }

    #[test]
    fn errors_name_the_key() {
        let err = |kv: &[(&str, &str)]| AfxdpOptions::from_map(&map(kv)).unwrap_err();
        assert!(err(&[]).contains("missing required option `ifname`"));
        assert!(err(&[("ifname", "e"), ("colour", "red")]).contains("unknown option `colour`"));
        assert!(err(&[("ifname", "e"), ("type", "tap")]).contains("type=afxdp"));
        assert!(err(&[("ifname", "e"), ("xdp-mode", "fast")]).contains("xdp-mode=fast"));
        assert!(err(&[("ifname", "e"), ("queue", "-1")]).contains("queue=-1"));
        assert!(err(&[("ifname", "e"), ("n-rxq-desc", "1000")]).contains("power of two"));
        assert!(err(&[("ifname", "e"), ("n-txq-desc", "32")]).contains("n-txq-desc=32"));
        assert!(err(&[("ifname", "e"), ("n-txq-desc", "x")]).contains("n-txq-desc=x"));
        assert!(err(&[("ifname", "e"), ("umem-frames", "100")]).contains("umem-frames=100"));
        assert!(err(&[("ifname", "e"), ("umem-frames", "99999999")]).contains("umem-frames"));
        assert!(err(&[("ifname", "a/b")]).contains("not a valid interface name"));
        assert!(err(&[("ifname", "")]).contains("not a valid interface name"));
        assert!(err(&[("ifname", "sixteen-chars-xx")]).contains("not a valid interface name"));
        assert!(err(&[("ifname", "e"), ("n_rxq", "0")]).contains("n_rxq=0"));
        assert!(err(&[("ifname", "e"), ("n_rxq", "65")]).contains("1 to 64"));
        assert!(err(&[("ifname", "e"), ("n_rxq", "two")]).contains("n_rxq=two"));
        assert!(
            err(&[("ifname", "e"), ("n_rxq", "2"), ("queue", "1")]).contains("do not go together")
        );
        assert!(err(&[("ifname", "e"), ("xdp-offload", "yes")]).contains("xdp-offload=yes"));
        assert!(
            err(&[("ifname", "e"), ("xdp-offload-entries", "0")]).contains("xdp-offload-entries=0")
        );
    }
}
