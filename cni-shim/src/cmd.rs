//! The CNI commands: ADD, DEL, CHECK, GC, STATUS (VERSION is in main).
//!
//! Each takes the validated configuration and environment and returns the
//! JSON to print (or nothing) or a [`CniError`]. Every command that changes
//! anything holds the state lock for its whole run. ADD undoes everything it
//! did when a later step fails; DEL tolerates everything being gone already
//! and defers switchd's part when switchd is down. Behaviour per command:
//! docs/cni.md "Commands".

use std::net::Ipv4Addr;

use serde_json::{json, Value};
use switch::control::proto::{ErrorCode, Request};

use crate::config::{parse_cidr4, version_cmp, Env, IfaceType, NetConf};
use crate::error::*;
use crate::flows::{cookie_selector, PodFlows};
use crate::ipam::Ipam;
use crate::names;
use crate::result::{CniResultBody, Interface, Route};
use crate::state::{Pending, Record, State};
use crate::switchd::{CallError, Switchd};
use crate::sys;

/// Perform the cleanups earlier DELs deferred, for every socket whose
/// switchd now answers; report each on stderr and in cleanup.log.
pub fn flush_pending(state: &State) {
    for p in state.pending() {
        let Ok(mut sd) = Switchd::connect(&p.socket) else {
            continue;
        };
        match switch_teardown(&mut sd, &p.bridge, &p.port, p.cookie) {
            Ok(()) => {
                let line = format!(
                    "performed deferred cleanup: flows {} and port {} on bridge {} ({})",
                    cookie_selector(p.cookie),
                    p.port,
                    p.bridge,
                    p.socket
                );
                eprintln!("ferroswitch: {line}");
                state.log(&line);
                let _ = state.undefer(&p.port);
            }
            Err(e) => eprintln!(
                "ferroswitch: deferred cleanup of port {} still fails: {}",
                p.port,
                e.into_cni("the cleanup")
            ),
        }
    }
}

/// Remove an attachment's flows and port; "not there" is success.
fn switch_teardown(
    sd: &mut Switchd,
    bridge: &str,
    port: &str,
    cookie: u64,
) -> Result<(), CallError> {
    match sd.call(&Request::DelFlows {
        bridge: bridge.into(),
        flow: Some(cookie_selector(cookie)),
        strict: false,
    }) {
        Ok(_) => {}
        Err(CallError::Switchd(e)) if e.code == ErrorCode::UnknownBridge => return Ok(()),
        Err(e) => return Err(e),
    }
    match sd.call(&Request::DelPort {
        bridge: bridge.into(),
        name: port.into(),
    }) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The first IPv4 address of an IPAM result, with its gateway; IPv6 is
/// refused (code 2), no address is an IPAM error.
fn pick_ipv4(r: &CniResultBody) -> CniResult<(usize, Ipv4Addr, u8, Option<Ipv4Addr>)> {
    if let Some(v6) = r.ips.iter().find(|i| i.address.contains(':')) {
        return Err(CniError::new(
            UNSUPPORTED_FIELD,
            format!(
                "the IPAM result has the IPv6 address {}; ferroswitch attaches IPv4 only (configure an IPv4 range)",
                v6.address
            ),
        ));
    }
    let (idx, ipc) = r
        .ips
        .iter()
        .enumerate()
        .next()
        .ok_or_else(|| CniError::new(IPAM_ERROR, "the IPAM plugin returned no address"))?;
    let (ip, prefix) = parse_cidr4(&ipc.address).ok_or_else(|| {
        CniError::new(
            DECODE_FAILURE,
            format!("the IPAM address {:?} is not a.b.c.d/n", ipc.address),
        )
    })?;
    let gw = match &ipc.gateway {
        None => None,
        Some(g) => Some(g.parse::<Ipv4Addr>().map_err(|_| {
            CniError::new(
                DECODE_FAILURE,
                format!("the IPAM gateway {g:?} is not an IPv4 address"),
            )
        })?),
    };
    Ok((idx, ip, prefix, gw))
}

/// What ADD has done so far, to undo on failure.
#[derive(Default)]
struct Undo {
    ipam: bool,
    veth: Option<String>,
    port: bool,
}

/// ADD.
pub fn add(conf: &NetConf, env: &Env) -> CniResult<Value> {
    let cid = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.need(&env.netns, "CNI_NETNS")?;
    let cni_path = env.need(&env.path, "CNI_PATH")?;
    if conf.iface_type == IfaceType::Veth && !sys::netns_exists(netns) {
        return Err(CniError::new(
            UNKNOWN_CONTAINER,
            format!("CNI_NETNS {netns:?} does not exist"),
        ));
    }
    let state = State::open(&conf.state_dir)?;
    flush_pending(&state);
    let port = names::port_name(cid, ifname);
    let cookie = names::cookie(cid, ifname);
    if state.record(&port).is_some() {
        return Err(CniError::new(
            ATTACHMENT_EXISTS,
            format!("container {cid} already has interface {ifname} on this network (port {port}); DEL it first"),
        ));
    }
    let mut sd = Switchd::connect(&conf.socket).map_err(|e| e.into_cni("the connection"))?;
    sd.call(&Request::Show {
        bridge: conf.bridge.clone(),
    })
    .map_err(|e| e.into_cni(&format!("bridge {:?}", conf.bridge)))?;
    let ipam = Ipam::new(cni_path, &conf.ipam_type()?, &conf.cni_version)?;
    let mut undo = Undo::default();
    let r = add_steps(
        conf, env, cid, ifname, netns, &port, cookie, &ipam, &mut sd, &mut undo,
    );
    match r {
        Ok((result, rec)) => {
            if let Err(e) = state.save(&rec) {
                rollback(conf, &port, cookie, &ipam, &mut sd, &undo);
                return Err(e);
            }
            Ok(result.encode(&conf.cni_version))
        }
        Err(e) => {
            rollback(conf, &port, cookie, &ipam, &mut sd, &undo);
            Err(e)
        }
    }
}

fn rollback(conf: &NetConf, port: &str, cookie: u64, ipam: &Ipam, sd: &mut Switchd, u: &Undo) {
    if u.port {
        if let Err(e) = switch_teardown(sd, &conf.bridge, port, cookie) {
            eprintln!("ferroswitch: rollback: {}", e.into_cni("removing the port"));
        }
    }
    if let Some(v) = &u.veth {
        if let Err(e) = sys::link_del(v) {
            eprintln!("ferroswitch: rollback: {e}");
        }
    }
    if u.ipam {
        if let Err(e) = ipam.del(&conf.raw, None) {
            eprintln!("ferroswitch: rollback: {e}");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn add_steps(
    conf: &NetConf,
    env: &Env,
    cid: &str,
    ifname: &str,
    netns: &str,
    port: &str,
    cookie: u64,
    ipam: &Ipam,
    sd: &mut Switchd,
    undo: &mut Undo,
) -> CniResult<(CniResultBody, Record)> {
    let ipr = ipam.add(&conf.raw)?;
    undo.ipam = true;
    let (ip_idx, ip, prefix, gw) = pick_ipv4(&ipr)?;
    let mac = names::pod_mac(ip);
    let cidr = format!("{ip}/{prefix}");
    let mtu = conf.mtu.to_string();
    let mut result = CniResultBody {
        dns: ipr.dns.clone(),
        ..Default::default()
    };
    let mut ipc = ipr.ips[ip_idx].clone();
    let add_port = match conf.iface_type {
        IfaceType::Veth => {
            // Both ends created at once inside the pod's netns, the peer
            // moved to ours by pid: no setns in this process. One queue
            // each: the AF_XDP port binds queue 0 only, and frames the pod
            // hashed to another veth queue would meet an XDP program with no
            // socket for it and be dropped.
            let pid = std::process::id().to_string();
            sys::run_in(
                netns,
                "ip",
                &[
                    "link",
                    "add",
                    ifname,
                    "numtxqueues",
                    "1",
                    "numrxqueues",
                    "1",
                    "mtu",
                    &mtu,
                    "address",
                    &mac,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    port,
                    "numtxqueues",
                    "1",
                    "numrxqueues",
                    "1",
                    "mtu",
                    &mtu,
                    "netns",
                    &pid,
                ],
            )?;
            undo.veth = Some(port.to_string());
            // IPv6 off on both ends: its router solicitations would only be
            // dropped by port security. Best effort (IPv6 may be absent).
            let _ = sys::run_in(
                netns,
                "sysctl",
                &["-qw", &format!("net.ipv6.conf.{ifname}.disable_ipv6=1")],
            );
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{port}/disable_ipv6"), "1");
            // AF_XDP copy mode on veth hands frames on as they are: the pod
            // must send complete checksums (BENCH.md "AF_XDP on veth").
            sys::run_in(netns, "ethtool", &["-K", ifname, "tx", "off"])?;
            if conf.xdp_offload {
                // A frame switchd's XDP program redirects into the host end
                // is delivered to this end only if it runs NAPI, which GRO
                // turns on (kernel >= 5.13; docs/architecture.md "XDP offload").
                sys::run_in(netns, "ethtool", &["-K", ifname, "gro", "on"])?;
            }
            sys::run_in(netns, "ip", &["addr", "add", &cidr, "dev", ifname])?;
            sys::run_in(netns, "ip", &["link", "set", "dev", ifname, "up"])?;
            let mut routes = ipr.routes.clone();
            // IPAM gave no routes: a default route via the gateway, unless
            // the pod already has one (a second interface, as Multus adds,
            // must not take or collide with the primary's default route).
            let has_default = || {
                sys::run_in(netns, "ip", &["-4", "route", "show", "default"])
                    .map(|o| !o.trim().is_empty())
                    .unwrap_or(false)
            };
            if routes.is_empty() && !has_default() {
                if let Some(g) = gw {
                    routes.push(Route {
                        dst: "0.0.0.0/0".into(),
                        gw: Some(g.to_string()),
                        extra: Default::default(),
                    });
                }
            }
            for r in &routes {
                if r.dst.contains(':') {
                    continue;
                }
                let via = r.gw.clone().or_else(|| gw.map(|g| g.to_string()));
                let mut a = vec!["route", "add", r.dst.as_str()];
                if let Some(v) = &via {
                    a.extend_from_slice(&["via", v.as_str()]);
                }
                a.extend_from_slice(&["dev", ifname]);
                sys::run_in(netns, "ip", &a)?;
            }
            result.routes = routes;
            sys::run("ip", &["link", "set", "dev", port, "up"])?;
            let host_mac =
                sys::link_show(None, port)?.and_then(|l| l["address"].as_str().map(str::to_string));
            result.interfaces.push(Interface {
                name: port.to_string(),
                mac: host_mac,
                ..Default::default()
            });
            result.interfaces.push(Interface {
                name: ifname.to_string(),
                mac: Some(mac.clone()),
                mtu: Some(conf.mtu),
                sandbox: Some(netns.to_string()),
                socket_path: None,
            });
            ipc.interface = Some(1);
            Request::AddPort {
                bridge: conf.bridge.clone(),
                name: port.to_string(),
                port_type: "afxdp".into(),
                ofport: None,
                options: [
                    ("ifname".to_string(), port.to_string()),
                    ("n-rxq-desc".to_string(), conf.rx_ring.to_string()),
                    ("xdp-offload".to_string(), conf.xdp_offload.to_string()),
                ]
                .into_iter()
                .collect(),
            }
        }
        IfaceType::VhostUser => {
            std::fs::create_dir_all(&conf.socket_dir).map_err(|e| {
                CniError::new(
                    IO_FAILURE,
                    format!("cannot create socketDir {:?}: {e}", conf.socket_dir),
                )
            })?;
            let sock = format!("{}/{port}.sock", conf.socket_dir.trim_end_matches('/'));
            result.routes = ipr.routes.clone();
            result.interfaces.push(Interface {
                name: port.to_string(),
                mac: Some(mac.clone()),
                mtu: Some(conf.mtu),
                sandbox: Some(netns.to_string()),
                socket_path: Some(sock.clone()),
            });
            ipc.interface = Some(0);
            Request::AddPort {
                bridge: conf.bridge.clone(),
                name: port.to_string(),
                port_type: "vhost_user".into(),
                ofport: None,
                options: [
                    ("socket".to_string(), sock),
                    ("mode".to_string(), "server".to_string()),
                ]
                .into_iter()
                .collect(),
            }
        }
    };
    result.ips = vec![ipc];
    let reply = sd
        .call(&add_port)
        .map_err(|e| e.into_cni(&format!("add-port {port}")))?;
    undo.port = true;
    let ofport = reply["ofport"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            CniError::new(
                SWITCHD_ERROR,
                format!("add-port {port}: no ofport in the reply {reply}"),
            )
        })?;
    let flows = PodFlows {
        ofport,
        mac: &mac,
        ip,
        gateway: gw,
        router_mac: &conf.router_mac,
        mode: conf.mode,
        cookie,
    }
    .flows();
    sd.call(&Request::AddFlows {
        bridge: conf.bridge.clone(),
        flows,
    })
    .map_err(|e| e.into_cni(&format!("the flows of port {port}")))?;
    let rec = Record {
        network: conf.name.clone(),
        container_id: cid.to_string(),
        ifname: ifname.to_string(),
        netns: netns.to_string(),
        socket: conf.socket.clone(),
        bridge: conf.bridge.clone(),
        port: port.to_string(),
        ofport,
        cookie,
        interface_type: match conf.iface_type {
            IfaceType::Veth => "veth".into(),
            IfaceType::VhostUser => "vhost-user".into(),
        },
        address: cidr,
        mac,
        pod_namespace: env.arg("K8S_POD_NAMESPACE")?,
        pod_name: env.arg("K8S_POD_NAME")?,
        ipam_conf: conf.raw.clone(),
    };
    Ok((result, rec))
}

/// What an IPAM release needs: the plugin, the network configuration to
/// give it, and (for GC's releases of other attachments) the container ID and
/// interface name that reservation was made for.
type IpamRelease<'a> = (&'a Ipam, &'a Value, Option<(&'a str, &'a str)>);

/// Tear one attachment down: switchd part (deferred when switchd is down),
/// host veth, IPAM. `ipam`: the plugin and the configuration to release with.
fn teardown(
    state: &State,
    socket: &str,
    bridge: &str,
    port: &str,
    cookie: u64,
    ipam: Option<IpamRelease<'_>>,
) -> CniResult<()> {
    match Switchd::connect(socket) {
        Ok(mut sd) => {
            switch_teardown(&mut sd, bridge, port, cookie).map_err(|e| match e {
                CallError::Unreachable(m) => {
                    CniError::new(TRY_AGAIN_LATER, format!("switchd went away: {m}"))
                }
                e => e.into_cni(&format!("removing port {port}")),
            })?;
            state.undefer(port)?;
        }
        Err(CallError::Unreachable(m)) => {
            state.defer(&Pending {
                socket: socket.into(),
                bridge: bridge.into(),
                port: port.into(),
                cookie,
            })?;
            let line = format!(
                "switchd unreachable ({m}): removal of port {port} and flows {} deferred",
                cookie_selector(cookie)
            );
            eprintln!("ferroswitch: {line}");
            state.log(&line);
        }
        Err(e) => return Err(e.into_cni("the connection")),
    }
    sys::link_del(port)?;
    if let Some((ipam, conf, att)) = ipam {
        ipam.del(conf, att)?;
    }
    state.forget(port)
}

/// DEL.
pub fn del(conf: &NetConf, env: &Env) -> CniResult<()> {
    let cid = env.container_id()?;
    let ifname = env.ifname()?;
    let state = State::open(&conf.state_dir)?;
    flush_pending(&state);
    let port = names::port_name(cid, ifname);
    let cookie = names::cookie(cid, ifname);
    let rec = state.record(&port);
    let (socket, bridge) = match &rec {
        Some(r) => (r.socket.clone(), r.bridge.clone()),
        None => (conf.socket.clone(), conf.bridge.clone()),
    };
    let ipam = match (&env.path, conf.ipam_type()) {
        (Some(p), Ok(t)) => Some(Ipam::new(p, &t, &conf.cni_version)?),
        (None, _) => {
            return Err(CniError::new(
                INVALID_ENV,
                "CNI_PATH is not set (required for DEL, to release the address through IPAM)",
            ))
        }
        (_, Err(e)) => return Err(e),
    };
    teardown(
        &state,
        &socket,
        &bridge,
        &port,
        cookie,
        ipam.as_ref().map(|i| (i, &conf.raw, None)),
    )
}

/// The flows as switchd prints them (`dump-flows --no-stats`), for comparing
/// what we would install with what is installed.
fn canonical(flow: &str) -> Option<String> {
    let spec = switch::flow::parse_flow(flow, switch::flow::ParseMode::Add).ok()?;
    let f = switch::flow::Flow {
        table: spec.table.unwrap_or(0),
        priority: spec.priority,
        cookie: spec.cookie,
        matches: spec.matches,
        actions: spec.actions,
        idle_timeout: spec.idle_timeout,
        hard_timeout: spec.hard_timeout,
        flags: spec.flags,
    };
    Some(switch::flow::format_flow(&f).trim().to_string())
}

/// CHECK.
pub fn check(conf: &NetConf, env: &Env) -> CniResult<()> {
    if version_cmp(&conf.cni_version, "0.4.0").is_lt() {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {} does not allow CHECK (0.4.0 or newer)",
                conf.cni_version
            ),
        ));
    }
    let cid = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.need(&env.netns, "CNI_NETNS")?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "CHECK needs \"prevResult\" in the configuration",
        )
    })?;
    let prev = CniResultBody::decode(prev, "prevResult")?;
    if conf.iface_type == IfaceType::Veth && !sys::netns_exists(netns) {
        return Err(CniError::new(
            UNKNOWN_CONTAINER,
            format!("CNI_NETNS {netns:?} does not exist"),
        ));
    }
    let state = State::open(&conf.state_dir)?;
    flush_pending(&state);
    let port = names::port_name(cid, ifname);
    let cookie = names::cookie(cid, ifname);
    let mut problems: Vec<String> = Vec::new();
    let rec = state.record(&port);
    if rec.is_none() {
        problems.push(format!(
            "no record of this attachment (port {port}) in {}",
            conf.state_dir
        ));
    }
    // Our interface in prevResult: the pod end (veth) or the vhost-user port.
    let want_name = match conf.iface_type {
        IfaceType::Veth => ifname,
        IfaceType::VhostUser => port.as_str(),
    };
    let Some(idx) = prev
        .interfaces
        .iter()
        .position(|i| i.name == want_name && i.sandbox.is_some())
    else {
        return Err(CniError::new(
            CHECK_FAILED,
            format!("prevResult has no interface {want_name} with a sandbox"),
        ));
    };
    let pif = &prev.interfaces[idx];
    let our_ips: Vec<_> = prev
        .ips
        .iter()
        .filter(|i| i.interface == Some(idx))
        .collect();
    if our_ips.is_empty() {
        problems.push(format!(
            "prevResult has no address for interface {want_name}"
        ));
    }
    if conf.iface_type == IfaceType::Veth {
        match sys::link_show(Some(netns), ifname)? {
            None => problems.push(format!("interface {ifname} is missing in {netns}")),
            Some(l) => {
                let mac = l["address"].as_str().unwrap_or_default();
                if let Some(m) = &pif.mac {
                    if !m.eq_ignore_ascii_case(mac) {
                        problems.push(format!("{ifname} has MAC {mac}, prevResult says {m}"));
                    }
                }
                // The MTU prevResult states (a plugin chained after us, such
                // as tuning, may have changed ours and said so); results
                // older than 1.1.0 carry no MTU and are not checked for it.
                let mtu = l["mtu"].as_u64().unwrap_or(0);
                if let Some(want) = pif.mtu {
                    if mtu != u64::from(want) {
                        problems.push(format!("{ifname} has MTU {mtu}, prevResult says {want}"));
                    }
                }
                let have = sys::addrs(netns, ifname)?;
                for ip in &our_ips {
                    if !have.contains(&ip.address) {
                        problems.push(format!(
                            "{ifname} lacks address {} (has {have:?})",
                            ip.address
                        ));
                    }
                }
                let rts = sys::routes(netns, ifname)?;
                let gw = our_ips.first().and_then(|i| i.gateway.clone());
                for r in prev.routes.iter().filter(|r| !r.dst.contains(':')) {
                    let via = r.gw.clone().or_else(|| gw.clone());
                    if !rts
                        .iter()
                        .any(|(d, g)| *d == r.dst && (via.is_none() || *g == via))
                    {
                        problems.push(format!(
                            "route to {}{} is missing in {netns}",
                            r.dst,
                            via.map(|v| format!(" via {v}")).unwrap_or_default()
                        ));
                    }
                }
            }
        }
        if sys::link_show(None, &port)?.is_none() {
            problems.push(format!("host interface {port} is missing"));
        }
    }
    let (socket, bridge) = match &rec {
        Some(r) => (r.socket.clone(), r.bridge.clone()),
        None => (conf.socket.clone(), conf.bridge.clone()),
    };
    let mut sd = Switchd::connect(&socket).map_err(|e| e.into_cni("the connection"))?;
    let ports = sd
        .call(&Request::DumpPorts {
            bridge: bridge.clone(),
            port: Some(port.clone()),
        })
        .map_err(|e| e.into_cni(&format!("dump-ports {port}")));
    let entry = ports.ok().and_then(|v| v["ports"].get(0).cloned());
    let want_type = match conf.iface_type {
        IfaceType::Veth => "afxdp",
        IfaceType::VhostUser => "vhost_user",
    };
    match &entry {
        None => problems.push(format!("switchd has no port {port} on bridge {bridge}")),
        Some(p) => {
            if p["type"] != want_type {
                problems.push(format!(
                    "port {port} has type {}, expected {want_type}",
                    p["type"]
                ));
            }
            if let Some(r) = &rec {
                if p["ofport"].as_u64() != Some(u64::from(r.ofport)) {
                    problems.push(format!(
                        "port {port} is ofport {}, ADD got {}",
                        p["ofport"], r.ofport
                    ));
                }
            }
            if conf.iface_type == IfaceType::Veth && p["options"]["ifname"] != port.as_str() {
                problems.push(format!(
                    "port {port} is bound to {}, expected {port}",
                    p["options"]["ifname"]
                ));
            }
        }
    }
    if let (Some(r), Some(ipc)) = (&rec, our_ips.first()) {
        let ip = parse_cidr4(&ipc.address).map(|x| x.0);
        let gw = ipc.gateway.as_deref().and_then(|g| g.parse().ok());
        if let Some(ip) = ip {
            let expected: Vec<String> = PodFlows {
                ofport: r.ofport,
                mac: &r.mac,
                ip,
                gateway: gw,
                router_mac: &conf.router_mac,
                mode: conf.mode,
                cookie,
            }
            .flows()
            .iter()
            .filter_map(|f| canonical(f))
            .collect();
            let dumped = sd
                .call(&Request::DumpFlows {
                    bridge: bridge.clone(),
                    filter: Some(cookie_selector(cookie)),
                })
                .map_err(|e| e.into_cni("dump-flows"))?;
            let have: Vec<String> = dumped["flows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["line_no_stats"].as_str().map(|s| s.trim().to_string()))
                .collect();
            for f in &expected {
                if !have.contains(f) {
                    problems.push(format!("flow missing: {f}"));
                }
            }
            for f in &have {
                if !expected.contains(f) {
                    problems.push(format!("unexpected flow: {f}"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            CHECK_FAILED,
            format!("{} problem(s): {}", problems.len(), problems[0]),
        )
        .details(problems.join("\n")))
    }
}

/// The attachments GC must keep: `cni.dev/valid-attachments` (or the older
/// `cni.dev/attachments`), as (container id, ifname).
pub fn valid_attachments(raw: &Value) -> CniResult<Vec<(String, String)>> {
    let list = raw
        .get("cni.dev/valid-attachments")
        .or_else(|| raw.get("cni.dev/attachments"));
    let Some(list) = list else {
        return Err(CniError::new(
            INVALID_CONFIG,
            "GC needs \"cni.dev/valid-attachments\" in the configuration",
        ));
    };
    let arr = list.as_array().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "\"cni.dev/valid-attachments\" must be an array",
        )
    })?;
    arr.iter()
        .map(
            |a| match (a["containerID"].as_str(), a["ifname"].as_str()) {
                (Some(c), Some(i)) => Ok((c.to_string(), i.to_string())),
                _ => Err(CniError::new(
                    INVALID_CONFIG,
                    format!("a valid attachment needs \"containerID\" and \"ifname\", got {a}"),
                )),
            },
        )
        .collect()
}

/// GC.
pub fn gc(conf: &NetConf, env: &Env) -> CniResult<()> {
    if version_cmp(&conf.cni_version, "1.1.0").is_lt() {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {} does not allow GC (1.1.0 or newer)",
                conf.cni_version
            ),
        ));
    }
    let valid = valid_attachments(&conf.raw)?;
    let cni_path = env.need(&env.path, "CNI_PATH")?;
    let state = State::open(&conf.state_dir)?;
    flush_pending(&state);
    let mut errors = Vec::new();
    for r in state.records() {
        if r.network != conf.name
            || valid
                .iter()
                .any(|(c, i)| *c == r.container_id && *i == r.ifname)
        {
            continue;
        }
        let ipam_type = r.ipam_conf["ipam"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let res = Ipam::new(cni_path, &ipam_type, &conf.cni_version).and_then(|ipam| {
            teardown(
                &state,
                &r.socket,
                &r.bridge,
                &r.port,
                r.cookie,
                Some((&ipam, &r.ipam_conf, Some((&r.container_id, &r.ifname)))),
            )
        });
        match res {
            Ok(()) => eprintln!(
                "ferroswitch: GC removed {} {} (port {})",
                r.container_id, r.ifname, r.port
            ),
            Err(e) => errors.push(format!("{} {}: {e}", r.container_id, r.ifname)),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            IO_FAILURE,
            format!("GC could not remove {} attachment(s)", errors.len()),
        )
        .details(errors.join("\n")))
    }
}

/// STATUS.
pub fn status(conf: &NetConf) -> CniResult<()> {
    if version_cmp(&conf.cni_version, "1.1.0").is_lt() {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {} does not allow STATUS (1.1.0 or newer)",
                conf.cni_version
            ),
        ));
    }
    let mut sd = Switchd::connect(&conf.socket).map_err(|e| {
        CniError::new(
            NOT_AVAILABLE_LIMITED,
            format!(
                "switchd is not answering on {}: pods on this node have no connectivity",
                conf.socket
            ),
        )
        .details(format!("{e:?}"))
    })?;
    match sd.call(&Request::Show {
        bridge: conf.bridge.clone(),
    }) {
        Ok(_) => {}
        Err(CallError::Unreachable(m)) => {
            return Err(CniError::new(
                NOT_AVAILABLE_LIMITED,
                format!("switchd on {} stopped answering: {m}", conf.socket),
            ))
        }
        Err(CallError::Switchd(e)) => {
            return Err(CniError::new(
                NOT_AVAILABLE,
                format!(
                    "switchd has no usable bridge {:?}: {}",
                    conf.bridge, e.message
                ),
            ))
        }
    }
    if let Ok(state) = State::open(&conf.state_dir) {
        flush_pending(&state);
    }
    let _ = json!(null);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::IpConfig;

    #[test]
    fn valid_attachments_both_keys() {
        let v = json!({"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]});
        assert_eq!(
            valid_attachments(&v).unwrap(),
            vec![("a".into(), "eth0".into())]
        );
        let v = json!({"cni.dev/attachments": [{"containerID": "b", "ifname": "net1"}]});
        assert_eq!(
            valid_attachments(&v).unwrap(),
            vec![("b".into(), "net1".into())]
        );
        assert_eq!(
            valid_attachments(&json!({})).unwrap_err().code,
            INVALID_CONFIG
        );
        let v = json!({"cni.dev/valid-attachments": [{"containerID": "a"}]});
        assert_eq!(valid_attachments(&v).unwrap_err().code, INVALID_CONFIG);
    }

    #[test]
    fn ipv4_is_picked_ipv6_refused() {
        let mut r = CniResultBody {
            ips: vec![IpConfig {
                address: "10.1.0.5/16".into(),
                gateway: Some("10.1.0.1".into()),
                interface: None,
            }],
            ..Default::default()
        };
        let (i, ip, p, gw) = pick_ipv4(&r).unwrap();
        assert_eq!((i, ip, p), (0, Ipv4Addr::new(10, 1, 0, 5), 16));
        assert_eq!(gw, Some(Ipv4Addr::new(10, 1, 0, 1)));
        r.ips.push(IpConfig {
            address: "fd00::5/64".into(),
            ..Default::default()
        });
        assert_eq!(pick_ipv4(&r).unwrap_err().code, UNSUPPORTED_FIELD);
        assert_eq!(
            pick_ipv4(&CniResultBody::default()).unwrap_err().code,
            IPAM_ERROR
        );
    }

    #[test]
    fn canonical_form_matches_switchd_rendering() {
        // What dump-flows --no-stats prints for a flow we generate: cookie
        // first, match normalised, priority kept.
        let c = canonical(
            "table=20,priority=100,cookie=0xf5aa,dl_dst=0a:58:0a:f4:01:07,actions=output:7",
        )
        .unwrap();
        assert!(c.contains("cookie=0xf5aa"), "{c}");
        assert!(c.contains("table=20"), "{c}");
        assert!(c.contains("dl_dst=0a:58:0a:f4:01:07"), "{c}");
        assert!(c.contains("actions=output:7"), "{c}");
        assert_eq!(canonical("not a flow"), None);
    }
}
