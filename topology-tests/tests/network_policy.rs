//! A Kubernetes NetworkPolicy on a real node, end to end, the way an
//! operator runs it (docs/policy.md): two pods attached by the real
//! `ferroswitch` CNI plugin (AF_XDP ports, the plugin's own L2/L3 pod
//! flows with their ACL hooks), a NetworkPolicy in YAML and an inventory of
//! the pods' labels, addresses and switch port names, compiled and applied
//! with the real `ferroswitch-policy` binary against the test's switchd, then
//! real TCP connections between the pods.
//!
//! The policy set is one policy, `default/web-from-client-80`: it selects
//! pod b (`app: web`) with `policyTypes: [Ingress, Egress]`, allows ingress
//! from pods `app: client` (pod a) on TCP 80, and has no egress rule. So:
//! - a -> b:80 is allowed by the ingress rule, and b's answer comes back
//!   (it is `+est` in b's egress zone: replies are not new connections);
//! - a -> b:81 is refused by b's ingress default deny (b serves 81 too, so
//!   only the policy can make the connection time out);
//! - b cannot open a connection to a:80 because the policy makes b
//!   egress-isolated with nothing allowed (b's egress default deny), a
//!   consequence of `Egress` in `policyTypes`, not of anything about a (a is
//!   selected by no policy and has no conntrack at all);
//! - both refusals are counted on the policy's own drop flows (its cookie
//!   in `dump-flows`: `n_packets` 0 right after `apply`, > 0 after), and
//!   `flowctl trace` of the refused SYN's second pass shows the policy's
//!   ingress drop flow.
//!
//! Before the policy, both refused connections work (the pods' ordinary
//! flows forward them), so the refusals are the policy's doing. After
//! `apply` with no policy (every policy flow removed, b -> a works again),
//! a second policy selects a for ingress from an `ipBlock` (the pod subnet)
//! `except` b's address on TCP 80: a third pod c gets through, b times out
//! (counted on that policy's drop), and a's own connections still work.
//!
//! Root only (passes early otherwise); needs `cargo build --bins`
//! (switchd, flowctl, ferroswitch, ferroswitch-policy), python3 and
//! containernetworking-plugins (host-local).

mod cni_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cni_support::{attachment_name, have_plugins, wait_reachable, Attachment, NetList, Node, Pod};
use serde_json::json;
use topology_tests::{
    bin_dir, hello_server, output, require_root, tcp_hello, Netns, Result, TopoError,
};

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-client-80
  namespace: default
spec:
  podSelector:
    matchLabels: { app: web }
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector:
        matchLabels: { app: client }
    ports:
    - { protocol: TCP, port: 80 }
"#;

const POLICY_ID: &str = "default/web-from-client-80";

fn fail(s: impl Into<String>) -> TopoError {
    TopoError::Other(s.into())
}

/// Connect from `ns` to `ip:port`: "got hello" or "failed ...".
fn connect(ns: &Netns, ip: &str, port: u16) -> Result<String> {
    tcp_hello(ns, ip, port)
}

fn timed_out(r: &str) -> bool {
    r.starts_with("failed") && r.contains("imeout")
}

/// The OpenFlow port of switch port `name`, from `flowctl show`
/// (` 3(fs0123456789ab): type=afxdp ...`).
fn ofport(node: &Node, name: &str) -> Result<u32> {
    let show = node.sd.flowctl_ok(&["show", "br0"])?;
    let want = format!("({name}):");
    show.lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once('(')?;
            rest.starts_with(&want[1..]).then(|| n.parse().ok())?
        })
        .ok_or_else(|| fail(format!("no port {name} in show:\n{show}")))
}

/// `ferroswitch-policy ARGS...`: (exit code, stdout, stderr).
fn policy_tool(args: &[&str]) -> Result<(i32, String, String)> {
    let bin: PathBuf = bin_dir()?.join("ferroswitch-policy");
    if !bin.is_file() {
        return Err(fail(format!(
            "{} not found: run `cargo build --bins` first",
            bin.display()
        )));
    }
    let mut c = Command::new(bin);
    c.args(args);
    let o = output(c)?;
    Ok((
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

/// `(table, priority, n_packets)` of every `actions=drop` flow with `cookie`.
fn drop_counts(node: &Node, cookie: u64) -> Result<Vec<(u32, u32, u64)>> {
    let filter = format!("cookie={cookie:#x}/-1");
    let dump = node.sd.flowctl_ok(&["dump-flows", "br0", &filter])?;
    let field = |l: &str, k: &str| -> Option<u64> {
        let v = l.split(k).nth(1)?;
        let end = v.find([',', ' ']).unwrap_or(v.len());
        v[..end].parse().ok()
    };
    let mut out = Vec::new();
    for l in dump.lines().filter(|l| l.ends_with("actions=drop")) {
        match (
            field(l, "table="),
            field(l, "priority="),
            field(l, "n_packets="),
        ) {
            (Some(t), Some(p), Some(n)) => out.push((t as u32, p as u32, n)),
            _ => return Err(fail(format!("unparsable dump-flows line {l:?}"))),
        }
    }
    Ok(out)
}

/// `n_packets` of the policy's drop flow in `table` (the default deny).
fn deny_count(counts: &[(u32, u32, u64)], table: u32) -> Option<u64> {
    counts
        .iter()
        .find(|(t, p, _)| *t == table && *p == 100)
        .map(|c| c.2)
}

#[test]
fn policy_allows_a_to_b_80_only_and_b_cannot_open_to_a() -> Result<()> {
    if !require_root() || !have_plugins()? {
        return Ok(());
    }
    let node = Node::start("np")?;
    let ipam = node.rt.host_local("10.247.32.0/24", "10.247.32.1");
    let net = NetList::single("fs-np", "1.1.0", node.rt.ferroswitch_conf(ipam, json!({})));
    let ns_a = node.netns("a")?;
    let ns_b = node.netns("b")?;
    let pod_a = Pod::add(&node, &net, Attachment::pod("np-a", &ns_a, "eth0"))?;
    let pod_b = Pod::add(&node, &net, Attachment::pod("np-b", &ns_b, "eth0"))?;
    let (ip_a, ip_b) = (pod_a.ip()?, pod_b.ip()?);
    let (name_a, name_b) = (attachment_name(&pod_a.att), attachment_name(&pod_b.att));
    let (port_a, port_b) = (ofport(&node, &name_a)?, ofport(&node, &name_b)?);

    let _srv_b80 = hello_server(&ns_b, 80)?;
    let _srv_b81 = hello_server(&ns_b, 81)?;
    let _srv_a80 = hello_server(&ns_a, 80)?;
    wait_reachable(&ns_a, &ip_b, Duration::from_secs(10))?;
    wait_reachable(&ns_b, &ip_a, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(300));

    // Without a policy the pods' ordinary flows carry everything.
    for (ns, ip, port) in [(&ns_a, &ip_b, 81), (&ns_b, &ip_a, 80)] {
        let r = connect(ns, ip, port)?;
        assert_eq!(r, "got hello", "before the policy, -> {ip}:{port}: {r}");
    }

    // The operator's files: the pods' labels and addresses (by switch port
    // name, resolved by `apply` with `show`), and the policy.
    let inv = |by_name: bool| {
        let at = |name: &str, port: u32| {
            if by_name {
                format!("port: {name}")
            } else {
                format!("ofport: {port}")
            }
        };
        format!(
            "namespaces:\n  - name: default\npods:\n  \
             - {{ namespace: default, name: a, labels: {{ app: client }}, ips: [{ip_a}], {} }}\n  \
             - {{ namespace: default, name: b, labels: {{ app: web }}, ips: [{ip_b}], {} }}\n",
            at(&name_a, port_a),
            at(&name_b, port_b)
        )
    };
    let inv_names = node.guard.path("inventory.yaml");
    let inv_ports = node.guard.path("inventory-ofports.yaml");
    let pol = node.guard.path("policy.yaml");
    std::fs::write(&inv_names, inv(true)).map_err(|e| fail(e.to_string()))?;
    std::fs::write(&inv_ports, inv(false)).map_err(|e| fail(e.to_string()))?;
    std::fs::write(&pol, POLICY).map_err(|e| fail(e.to_string()))?;
    let s = |p: &PathBuf| p.display().to_string();
    let socket = node.sd.socket().display().to_string();

    // `compile` (offline) names the policy's cookie.
    let (code, compiled, err) = policy_tool(&["compile", "--inventory", &s(&inv_ports), &s(&pol)])?;
    assert_eq!(code, 0, "compile: {err}");
    let cookie = compiled
        .lines()
        .find_map(|l| {
            let (c, id) = l.strip_prefix("# ")?.split_once(": ")?;
            (id == POLICY_ID).then(|| u64::from_str_radix(c.strip_prefix("0x")?, 16).ok())?
        })
        .ok_or_else(|| fail(format!("no cookie for {POLICY_ID} in:\n{compiled}")))?;
    assert!(
        compiled.contains(&format!(
            "table=41,priority=500,cookie={cookie:#018x},tcp,ct_state=+new+trk,ct_zone={port_b},nw_src={ip_a},tp_dst=80,"
        )),
        "the allow rule:\n{compiled}"
    );
    assert!(
        !compiled.contains(&format!("ct_zone={port_a}")),
        "a is selected by nothing: no flow of a's zone\n{compiled}"
    );

    // `apply` sends them to switchd.
    let (code, out, err) = policy_tool(&[
        "apply",
        "--inventory",
        &s(&inv_names),
        "--socket",
        &socket,
        &s(&pol),
    ])?;
    assert_eq!(code, 0, "apply: {out}{err}\n{}", node.sd.log());
    let before = drop_counts(&node, cookie)?;
    assert_eq!(
        (deny_count(&before, 2), deny_count(&before, 41)),
        (Some(0), Some(0)),
        "b's egress (table 2) and ingress (table 41) default deny, unused yet: {before:?}"
    );

    // a -> b:80: allowed, and the answer comes back (twice: a second
    // connection is new again and allowed again).
    for _ in 0..2 {
        let r = connect(&ns_a, &ip_b, 80)?;
        assert_eq!(r, "got hello", "a -> b:80: {r}\n{}", node.sd.log());
    }
    let after_allowed = drop_counts(&node, cookie)?;
    assert_eq!(
        (
            deny_count(&after_allowed, 2),
            deny_count(&after_allowed, 41)
        ),
        (Some(0), Some(0)),
        "the allowed connections and b's replies hit no drop: {after_allowed:?}"
    );

    // a -> b:81: b serves it, but the policy drops the SYN: a times out.
    let r = connect(&ns_a, &ip_b, 81)?;
    assert!(timed_out(&r), "a -> b:81: {r}");
    let c = drop_counts(&node, cookie)?;
    let in_drops = deny_count(&c, 41).unwrap_or(0);
    assert!(
        in_drops > 0,
        "the refused SYNs count on the policy's ingress drop: {c:?}"
    );
    assert_eq!(deny_count(&c, 2), Some(0), "{c:?}");

    // b -> a:80: a serves it and selects nothing, but b may open nothing.
    let r = connect(&ns_b, &ip_a, 80)?;
    assert!(timed_out(&r), "b -> a:80: {r}");
    let c = drop_counts(&node, cookie)?;
    assert!(
        deny_count(&c, 2).unwrap_or(0) > 0,
        "b's SYNs count on the policy's egress drop: {c:?}"
    );
    assert_eq!(deny_count(&c, 41), Some(in_drops), "{c:?}");

    // And a -> b:80 still works after the refusals.
    let r = connect(&ns_a, &ip_b, 80)?;
    assert_eq!(r, "got hello", "a -> b:80 again: {r}");

    // trace: the refused SYN enters b's ingress hook (ct into zone b,
    // table 41) and, tracked as new, meets the policy's drop.
    let mac = |ip: &str| -> Result<String> {
        let v: Vec<u8> = ip
            .split('.')
            .map(|o| o.parse().map_err(|_| fail(format!("bad address {ip}"))))
            .collect::<Result<_>>()?;
        Ok(format!(
            "0a:58:{:02x}:{:02x}:{:02x}:{:02x}",
            v[0], v[1], v[2], v[3]
        ))
    };
    let pkt = format!(
        "in_port={port_a},tcp,dl_src={},dl_dst={},nw_src={ip_a},nw_dst={ip_b},nw_ttl=64,tcp_src=40000,tcp_dst=81",
        mac(&ip_a)?,
        mac(&ip_b)?
    );
    let first = node.sd.flowctl_ok(&["trace", "br0", &pkt])?;
    assert!(
        first.contains(&format!("ct(zone={port_b}")) && first.contains("recirc(0x2a)"),
        "first pass: into conntrack, zone b, resuming in table 41:\n{first}"
    );
    let second = node.sd.flowctl_ok(&[
        "trace",
        "br0",
        &format!("{pkt},recirc_id=42,ct_state=0x21,ct_zone={port_b}"),
    ])?;
    let lines: Vec<&str> = second.lines().collect();
    let at = lines
        .iter()
        .position(|l| {
            l.trim_start().starts_with("41.")
                && l.contains("priority 100")
                && l.contains(&format!("cookie {cookie:#x}"))
        })
        .ok_or_else(|| fail(format!("no policy drop flow in the trace:\n{second}")))?;
    assert!(
        lines.get(at + 1).is_some_and(|l| l.trim() == "drop"),
        "{second}"
    );
    assert!(
        second.contains("Datapath actions: drop"),
        "second pass is dropped:\n{second}"
    );

    // Removing every policy (apply with no policy file) restores b -> a.
    let (code, out, err) =
        policy_tool(&["apply", "--inventory", &s(&inv_names), "--socket", &socket])?;
    assert_eq!(code, 0, "apply without policies: {out}{err}");
    assert_eq!(
        drop_counts(&node, cookie)?,
        vec![],
        "the policy's flows are gone"
    );
    let r = connect(&ns_b, &ip_a, 80)?;
    assert_eq!(r, "got hello", "b -> a:80 without the policy: {r}");

    // An ipBlock with an except: a accepts TCP 80 from the pod subnet
    // except b's address. A third pod c (in the block) gets through, b
    // does not (a's ingress default deny, this policy's cookie).
    let ns_c = node.netns("c")?;
    let pod_c = Pod::add(&node, &net, Attachment::pod("np-c", &ns_c, "eth0"))?;
    let ip_c = pod_c.ip()?;
    wait_reachable(&ns_c, &ip_a, Duration::from_secs(10))?;
    let block = node.guard.path("ipblock.yaml");
    std::fs::write(
        &block,
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{ name: client-from-subnet-but-b, namespace: default }}\n\
             spec:\n  podSelector: {{ matchLabels: {{ app: client }} }}\n  \
             ingress:\n  - from: [ {{ ipBlock: {{ cidr: 10.247.32.0/24, except: [{ip_b}/32] }} }} ]\n    \
             ports: [ {{ port: 80 }} ]\n"
        ),
    )
    .map_err(|e| fail(e.to_string()))?;
    let (code, out, err) = policy_tool(&[
        "apply",
        "--inventory",
        &s(&inv_names),
        "--socket",
        &socket,
        &s(&block),
    ])?;
    assert_eq!(code, 0, "apply ipBlock policy: {out}{err}");
    let (_, compiled, _) = policy_tool(&["compile", "--inventory", &s(&inv_ports), &s(&block)])?;
    let block_cookie = compiled
        .lines()
        .find_map(|l| {
            let (c, id) = l.strip_prefix("# ")?.split_once(": ")?;
            (id == "default/client-from-subnet-but-b")
                .then(|| u64::from_str_radix(c.strip_prefix("0x")?, 16).ok())?
        })
        .ok_or_else(|| fail(format!("no cookie in:\n{compiled}")))?;
    let r = connect(&ns_c, &ip_a, 80)?;
    assert_eq!(
        r, "got hello",
        "c ({ip_c}) -> a:80 (inside the ipBlock): {r}"
    );
    assert_eq!(
        deny_count(&drop_counts(&node, block_cookie)?, 41),
        Some(0),
        "nothing refused yet"
    );
    let r = connect(&ns_b, &ip_a, 80)?;
    assert!(timed_out(&r), "b -> a:80 (in the except): {r}");
    assert!(
        deny_count(&drop_counts(&node, block_cookie)?, 41).unwrap_or(0) > 0,
        "b's SYNs count on the ipBlock policy's ingress drop"
    );
    // a is isolated for ingress only: its own connections still work.
    let r = connect(&ns_a, &ip_b, 81)?;
    assert_eq!(r, "got hello", "a -> b:81 (a is not egress-isolated): {r}");

    for p in [&pod_a, &pod_b, &pod_c] {
        net.del(&node.rt, &p.att, p.result.as_ref())?;
    }
    Ok(())
}
