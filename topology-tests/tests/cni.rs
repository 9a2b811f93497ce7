//! The `ferroswitch` CNI plugin driven exactly as a container runtime
//! drives it (see tests/cni_support: environment plus stdin, the binary in
//! a CNI_PATH directory beside Debian's host-local and tuning), against a
//! real switchd of the test's own.
//!
//! - A pod's life: three pods ADDed get complete results (interfaces with
//!   mac and sandbox, ips with interface index and gateway, routes) that
//!   match what is configured in their namespaces, ping each other through
//!   the switch, pass CHECK; a broken pod fails CHECK with a message; DEL
//!   removes veths, switch ports, the pods' flows and host-local's
//!   reservations, is idempotent, and works after the netns is gone.
//! - Versions and bad input: the result comes in the configuration's
//!   cniVersion (0.4.0, 1.0.0, 1.1.0), VERSION lists them, STATUS follows
//!   switchd, and malformed JSON, an unknown version, a missing CNI_NETNS
//!   and a netns that does not exist get the spec's error codes with
//!   nothing half-created left behind.
//! - CNI_ARGS `IP=` reaches host-local; chaining with `tuning`; two
//!   interfaces per pod (a secondary network, as Multus attaches it);
//!   routed mode (proxy ARP, one routed hop); a pod added after the last
//!   one left.
//!
//! Root only (each test passes early otherwise); needs `cargo build --bins`
//! (switchd, flowctl, ferroswitch) and containernetworking-plugins. The
//! tests run one at a time: each has a polling switchd of its own.

mod cni_support;

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cni_support::{
    attachment_cookie, attachment_name, err, first_ip, flows_with_cookies, have_plugins,
    host_ifaces, host_link_exists, netns_path, pod_addrs, pod_default_gw, sandbox_ifaces,
    switch_ports, wait_reachable, Attachment, NetList, Node, Pod,
};
use serde_json::{json, Value};
use topology_tests::{ping, require_root, Netns, Result};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// True when the test can run here (root, plugins installed).
fn runnable() -> Result<bool> {
    Ok(require_root() && have_plugins()?)
}

/// The pod network of a test: `10.247.N.0/24`, gateway `.1`, one plugin
/// (ferroswitch, overlay mode) with host-local.
fn pod_net(node: &Node, name: &str, version: &str, n: u8) -> NetList {
    let ipam = node
        .rt
        .host_local(&format!("10.247.{n}.0/24"), &format!("10.247.{n}.1"));
    NetList::single(
        name,
        version,
        node.rt
            .ferroswitch_conf(ipam, json!({ "unknownKeyTheSpecSaysToIgnore": 1 })),
    )
}

/// Assert that pod `pod` (namespace `ns`) got a complete 1.x result that
/// matches its namespace: the sandbox interface `ifname` with its real MAC
/// and the netns path, an address on it with the gateway, the default route.
fn assert_result_matches_pod(pod: &Pod, ns: &Netns, gw: &str) -> Result<()> {
    let r = pod.result()?;
    let ifname = &pod.att.ifname;
    let sb = sandbox_ifaces(r);
    let (idx, iface) = sb
        .iter()
        .find(|(_, i)| i["name"].as_str() == Some(ifname))
        .ok_or_else(|| err(format!("no sandbox interface {ifname} in {r}")))?;
    assert_eq!(
        iface["sandbox"].as_str(),
        Some(netns_path(ns).as_str()),
        "{r}"
    );
    let mac = ns.mac(ifname)?;
    assert_eq!(
        iface["mac"].as_str().map(str::to_ascii_lowercase),
        Some(mac.clone()),
        "result MAC is the pod's {ifname} MAC: {r}"
    );
    let ips = r["ips"]
        .as_array()
        .ok_or_else(|| err(format!("no ips in {r}")))?;
    assert_eq!(ips.len(), 1, "{r}");
    assert_eq!(ips[0]["interface"].as_u64(), Some(*idx as u64), "{r}");
    assert_eq!(ips[0]["gateway"].as_str(), Some(gw), "{r}");
    let addr = ips[0]["address"].as_str().unwrap_or_default();
    assert_eq!(
        pod_addrs(ns, ifname)?,
        vec![addr.to_string()],
        "the result's address is the one on {ifname}"
    );
    let routes = r["routes"].as_array().cloned().unwrap_or_default();
    assert!(
        routes
            .iter()
            .any(|rt| rt["dst"].as_str() == Some("0.0.0.0/0")),
        "default route in the result: {r}"
    );
    assert_eq!(pod_default_gw(ns)?.as_deref(), Some(gw), "default route");
    // docs/cni.md: the pod MAC is 0a:58 + the IPv4 address's bytes; host
    // veth and switch port are named, and the flows cookied, after the
    // attachment, so DEL finds them from the environment alone.
    let ip: std::net::Ipv4Addr = addr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| err(format!("bad address {addr}")))?;
    let o = ip.octets();
    assert_eq!(
        mac,
        format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    );
    let name = attachment_name(&pod.att);
    assert_eq!(
        host_ifaces(r),
        vec![name.clone()],
        "the host end in the result"
    );
    assert!(host_link_exists(&name), "host end {name}");
    assert_eq!(
        pod.ports,
        BTreeSet::from([name]),
        "one switch port per ADD, named after the attachment"
    );
    assert_eq!(
        pod.cookies,
        BTreeSet::from([attachment_cookie(&pod.att)]),
        "the ADD installed flows with the attachment's cookie, and only those"
    );
    Ok(())
}

/// Assert everything of `pod` is gone: host veth, switch port, its flows.
fn assert_pod_gone(node: &Node, pod: &Pod, host_veths: &[String]) -> Result<()> {
    for h in host_veths {
        assert!(!host_link_exists(h), "host veth {h} removed by DEL");
    }
    let ports = switch_ports(&node.sd)?;
    for p in &pod.ports {
        assert!(!ports.contains(p), "port {p} removed by DEL: {ports:?}");
    }
    let left = flows_with_cookies(&node.sd, &pod.cookies)?;
    assert!(
        left.is_empty(),
        "flows of {}: {left:#?}",
        pod.att.container_id
    );
    Ok(())
}

#[test]
fn three_pods_add_ping_check_del_and_leave_nothing_behind() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let node = Node::start("cn1")?;
    let net = pod_net(&node, "fs-cn1", "1.1.0", 1);
    let gw = "10.247.1.1";
    let names = ["a", "b", "c"];
    let nss: Vec<Netns> = names.iter().map(|n| node.netns(n)).collect::<Result<_>>()?;
    let mut pods = Vec::new();
    for (n, ns) in names.iter().zip(&nss) {
        let pod = Pod::add(&node, &net, Attachment::pod(n, ns, "eth0"))?;
        assert_eq!(pod.result()?["cniVersion"].as_str(), Some("1.1.0"));
        assert_result_matches_pod(&pod, ns, gw)?;
        assert_eq!(ns.mtu("eth0")?, 1450, "overlay mode's default MTU");
        pods.push(pod);
    }
    let ips: Vec<String> = pods.iter().map(Pod::ip).collect::<Result<_>>()?;
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 3, "{ips:?}");
    let reserved = node.rt.reservations("fs-cn1")?;
    assert_eq!(reserved.len(), 3, "host-local reserved one IP per pod");
    for (p, ip) in pods.iter().zip(&ips) {
        assert!(
            reserved
                .iter()
                .any(|(r, who)| r.to_string() == *ip && who.contains(&p.att.container_id)),
            "{ip} reserved for {}: {reserved:?}",
            p.att.container_id
        );
    }
    let cookie_sets: Vec<_> = pods.iter().map(|p| &p.cookies).collect();
    for (i, a) in cookie_sets.iter().enumerate() {
        for b in &cookie_sets[i + 1..] {
            assert!(a.is_disjoint(b), "each pod's flows have their own cookies");
        }
    }
    // A second ADD of an existing attachment is refused (102) and changes nothing.
    let flows_before = cni_support::flows(&node.sd)?;
    let again = net.add_reply(&node.rt, &pods[0].att)?;
    let (code, msg, _) = again.error()?;
    assert_eq!(code, 102, "{msg}");
    assert_eq!(cni_support::flows(&node.sd)?.len(), flows_before.len());
    assert_eq!(
        node.rt.reservations("fs-cn1")?.len(),
        3,
        "no IP taken by the refused ADD"
    );

    // Every pod reaches every other through the switch.
    for (i, from) in nss.iter().enumerate() {
        for (j, to) in ips.iter().enumerate() {
            if i == j {
                continue;
            }
            wait_reachable(from, to, Duration::from_secs(5))?;
            let r = ping(Some(from), to, 2)?;
            assert_eq!((r.transmitted, r.received), (2, 2), "{}", r.output);
        }
    }

    for p in &pods {
        let c = net.check(&node.rt, &p.att, p.result()?)?;
        c.ok_empty()?;
    }
    // A pod whose address vanished fails CHECK, and the message says what.
    nss[2].ip(&["addr", "flush", "dev", "eth0"])?;
    let c = net.check(&node.rt, &pods[2].att, pods[2].result()?)?;
    let (code, msg, details) = c.error()?;
    assert_eq!(code, 103, "CHECK found a difference: {msg} {details}");
    eprintln!("CHECK of the broken pod: code {code}: {msg} ({details})");
    let text = format!("{msg} {details}");
    assert!(
        text.contains(&ips[2]) || text.to_ascii_lowercase().contains("addr"),
        "the CHECK error names the missing address: {text}"
    );
    // The others still pass.
    net.check(&node.rt, &pods[0].att, pods[0].result()?)?
        .ok_empty()?;

    // DEL after the pod's namespace is gone (the runtime tore the sandbox
    // down first): succeeds, twice, and still cleans up.
    let d_ns = node.netns("d")?;
    let d = Pod::add(&node, &net, Attachment::pod("d", &d_ns, "eth0"))?;
    let d_veths = host_ifaces(d.result()?);
    drop(d_ns);
    net.del(&node.rt, &d.att, d.result.as_ref())?;
    net.del(&node.rt, &d.att, d.result.as_ref())?;
    assert_pod_gone(&node, &d, &d_veths)?;
    assert_eq!(node.rt.reservations("fs-cn1")?.len(), 3, "d's IP released");

    for p in &mut pods {
        let veths = host_ifaces(p.result()?);
        net.del(&node.rt, &p.att, p.result.as_ref())?;
        assert_pod_gone(&node, p, &veths)?;
        // Repeated: still success (the runtime retries a DEL it is unsure of).
        net.del(&node.rt, &p.att, p.result.as_ref())?;
        p.result = None;
    }
    assert_eq!(switch_ports(&node.sd)?, BTreeSet::new(), "no ports left");
    assert_eq!(node.rt.reservations("fs-cn1")?, vec![], "IPs released");
    // A DEL without prevResult (a runtime that lost its cache) succeeds too.
    net.del(&node.rt, &pods[0].att, None)?;
    Ok(())
}

#[test]
fn a_pod_added_after_the_last_pod_left_gets_a_port_and_traffic() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    // A one-pod node during a rollout: the old pod goes, new ones come.
    let node = Node::start("cn0")?;
    let net = pod_net(&node, "fs-cn0", "1.1.0", 10);
    let old_ns = node.netns("old")?;
    let old = Pod::add(&node, &net, Attachment::pod("old", &old_ns, "eth0"))?;
    net.del(&node.rt, &old.att, old.result.as_ref())?;
    assert_eq!(switch_ports(&node.sd)?, BTreeSet::new());
    let (ns_a, ns_b) = (node.netns("a")?, node.netns("b")?);
    let a = Pod::add(&node, &net, Attachment::pod("a", &ns_a, "eth0"))?;
    let b = Pod::add(&node, &net, Attachment::pod("b", &ns_b, "eth0"))?;
    wait_reachable(&ns_a, &b.ip()?, Duration::from_secs(5))?;
    for p in [&a, &b] {
        net.del(&node.rt, &p.att, p.result.as_ref())?;
    }
    assert_eq!(node.rt.reservations("fs-cn0")?, vec![]);
    Ok(())
}

/// The host's links, the switch ports and the number of host-local
/// reservations of `net`: what a failed ADD must not change.
fn footprint(node: &Node, net: &str) -> Result<(BTreeSet<String>, BTreeSet<String>, usize)> {
    Ok((
        Netns::host().links()?.into_iter().collect(),
        switch_ports(&node.sd)?,
        node.rt.reservations(net)?.len(),
    ))
}

/// Assert that nothing of the plugin's appeared since `before`: no host
/// link named as the plugin names veths (other users of the machine create
/// links meanwhile, so only those count), no switch port, no reservation.
fn assert_nothing_new(
    node: &Node,
    net: &str,
    before: &(BTreeSet<String>, BTreeSet<String>, usize),
    what: &str,
) -> Result<()> {
    let after = footprint(node, net)?;
    let new_links: Vec<&String> = after.0.difference(&before.0).collect();
    let ours: Vec<&&String> = new_links
        .iter()
        .filter(|l| cni_support::is_plugin_veth(l))
        .collect();
    assert!(ours.is_empty(), "{what} left host links {ours:?}");
    assert_eq!(after.1, before.1, "{what} left switch ports");
    assert_eq!(after.2, before.2, "{what} left an IP reserved");
    Ok(())
}

#[test]
fn results_follow_the_config_version_and_bad_input_gets_the_spec_error_codes() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let mut node = Node::start("cn2")?;
    let ns = node.netns("v")?;

    // The same ADD in each version's format (three pods, all DELed at the
    // end: see cni-bugs h17-1 for why not one by one).
    let vns: Vec<Netns> = (0..3)
        .map(|i| node.netns(&format!("v{i}")))
        .collect::<Result<_>>()?;
    let mut added = Vec::new();
    for (i, v) in ["0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let net = pod_net(&node, "fs-cn2", v, 2);
        let att = Attachment::pod(&format!("v{i}"), &vns[i], "eth0");
        let pod = Pod::add(&node, &net, att)?;
        let r = pod.result()?;
        assert_eq!(r["cniVersion"].as_str(), Some(*v), "{r}");
        let ip0 = &r["ips"][0];
        if *v == "0.4.0" {
            // 0.4.0 (types/040): every IP config says its version.
            assert_eq!(ip0["version"].as_str(), Some("4"), "{r}");
        } else {
            // 1.0.0 removed the field; a 1.0.0 parser rejects unknown shape.
            assert!(ip0.get("version").is_none(), "{v}: {r}");
        }
        assert!(ip0["interface"].is_u64(), "{r}");
        assert!(!sandbox_ifaces(r).is_empty(), "{r}");
        if *v != "1.1.0" {
            // interfaces[].mtu and socketPath are 1.1.0 fields.
            assert!(r["interfaces"][0].get("socketPath").is_none(), "{r}");
        }
        added.push((net, pod));
    }
    for (net, pod) in &added {
        net.del(&node.rt, &pod.att, pod.result.as_ref())?;
    }
    assert_eq!(node.rt.reservations("fs-cn2")?, vec![]);

    let net = pod_net(&node, "fs-cn2", "1.1.0", 2);
    // VERSION lists what the plugin speaks.
    let r = node
        .rt
        .exec("ferroswitch", "VERSION", None, r#"{"cniVersion":"1.1.0"}"#)?;
    let v = r.result()?;
    let sup: Vec<&str> = v["supportedVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for want in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(sup.contains(&want), "VERSION supports {want}: {v}");
    }

    // STATUS: ready with switchd up, code 50 with switchd down.
    for r in net.status(&node.rt)? {
        r.ok_empty()?;
    }
    node.sd.stop();
    let st = net.status(&node.rt)?;
    let (code, msg, _) = st[0].error()?;
    // Spec 1.1.0: 50 "not available (cannot service ADD)", 51 "... and
    // existing containers may have limited connectivity": with the
    // datapath down, 51 is the precise one (docs/cni.md); 50 is accepted.
    assert!(
        code == 50 || code == 51,
        "STATUS with switchd down: {code}: {msg}"
    );
    eprintln!("STATUS with switchd down: {msg}");
    node.sd.restart()?;
    for r in net.status(&node.rt)? {
        r.ok_empty()?;
    }

    let before = footprint(&node, "fs-cn2")?;
    // Malformed JSON: decode failure (6) or invalid config (7), with a message.
    let att = Attachment::pod("bad", &ns, "eth0");
    let r = node.rt.exec(
        "ferroswitch",
        "ADD",
        Some(&att),
        r#"{"cniVersion": "1.1.0", "name": "fs-cn2", "type": "ferroswitch", "#,
    )?;
    let (code, msg, _) = r.error()?;
    assert!(code == 6 || code == 7, "malformed JSON: code {code}: {msg}");
    assert_nothing_new(&node, "fs-cn2", &before, "malformed JSON")?;

    // An unknown cniVersion: incompatible version (1).
    let mut conf = net.plugin_conf(0, None);
    conf["cniVersion"] = json!("9.9.9");
    let r = node
        .rt
        .exec("ferroswitch", "ADD", Some(&att), &conf.to_string())?;
    let (code, msg, _) = r.error()?;
    assert_eq!(code, 1, "unknown cniVersion: {msg}");
    assert_nothing_new(&node, "fs-cn2", &before, "unknown cniVersion")?;

    // No CNI_NETNS on ADD: invalid environment (4).
    let mut no_ns = att.clone();
    no_ns.netns = None;
    let r = net.add_reply(&node.rt, &no_ns)?;
    let (code, msg, _) = r.error()?;
    assert_eq!(code, 4, "missing CNI_NETNS: {msg}");
    assert!(
        msg.contains("CNI_NETNS") || r.stdout.contains("CNI_NETNS"),
        "{msg}"
    );
    assert_nothing_new(&node, "fs-cn2", &before, "missing CNI_NETNS")?;

    // A netns that does not exist: an error that says so, nothing created,
    // no IP kept.
    let mut gone = att.clone();
    gone.netns = Some(format!(
        "/var/run/netns/fs-cn2-nonexistent-{}",
        std::process::id()
    ));
    let r = net.add_reply(&node.rt, &gone)?;
    let (code, msg, details) = r.error()?;
    eprintln!("ADD into a missing netns: code {code}: {msg} ({details})");
    assert_eq!(code, 3, "a netns that does not exist: {msg}");
    assert_nothing_new(&node, "fs-cn2", &before, "ADD into a missing netns")?;

    // A bridge switchd does not run: an error naming it, nothing created.
    let mut conf = net.plugins[0].clone();
    conf["bridge"] = json!("br9");
    let r = NetList::single("fs-cn2", "1.1.0", conf).add_reply(&node.rt, &att)?;
    let (code, msg, details) = r.error()?;
    eprintln!("ADD to a missing bridge: code {code}: {msg} ({details})");
    assert!(format!("{msg} {details}").contains("br9"), "{msg}");
    assert_nothing_new(&node, "fs-cn2", &before, "ADD to a missing bridge")?;

    // A failure late in ADD, after the IP is taken and the veth made: IPAM
    // hands out a route via a gateway that is not on-link, so configuring
    // the pod fails. Everything done so far is rolled back.
    let mut conf = net.plugins[0].clone();
    conf["ipam"]["routes"] = json!([{ "dst": "10.99.0.0/16", "gw": "192.0.2.1" }]);
    let r = NetList::single("fs-cn2", "1.1.0", conf).add_reply(&node.rt, &att)?;
    let (code, msg, details) = r.error()?;
    eprintln!("ADD with an unusable route: code {code}: {msg} ({details})");
    assert_nothing_new(&node, "fs-cn2", &before, "ADD with an unusable route")?;
    assert!(
        !host_link_exists(&attachment_name(&att)),
        "veth rolled back"
    );
    assert_eq!(
        ns.links()?,
        vec!["lo".to_string()],
        "nothing left in the pod"
    );
    Ok(())
}

#[test]
fn cni_args_ip_asks_host_local_for_that_address() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let node = Node::start("cn3")?;
    let net = pod_net(&node, "fs-cn3", "1.1.0", 3);
    let ns = node.netns("p")?;
    let att = Attachment::pod("p", &ns, "eth0").with_arg("IP=10.247.3.77");
    let pod = Pod::add(&node, &net, att)?;
    assert_eq!(pod.ip()?, "10.247.3.77", "{}", pod.result()?);
    assert_eq!(pod_addrs(&ns, "eth0")?, vec!["10.247.3.77/24".to_string()]);
    let res = node.rt.reservations("fs-cn3")?;
    assert_eq!(
        res.iter().map(|(ip, _)| ip.to_string()).collect::<Vec<_>>(),
        vec!["10.247.3.77".to_string()]
    );
    // The address works: the pod reaches a second pod through the switch.
    let ns2 = node.netns("q")?;
    let q = Pod::add(&node, &net, Attachment::pod("q", &ns2, "eth0"))?;
    wait_reachable(&ns2, "10.247.3.77", Duration::from_secs(5))?;
    net.del(&node.rt, &q.att, q.result.as_ref())?;
    net.del(&node.rt, &pod.att, pod.result.as_ref())?;
    assert_eq!(node.rt.reservations("fs-cn3")?, vec![]);
    Ok(())
}

#[test]
fn tuning_chained_after_ferroswitch_sets_a_sysctl_and_the_mtu() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let node = Node::start("cn4")?;
    let ipam = node.rt.host_local("10.247.4.0/24", "10.247.4.1");
    // containernetworking-plugins 1.1.1 speaks cniVersion up to 1.0.0.
    let net = NetList {
        name: "fs-cn4".into(),
        cni_version: "1.0.0".into(),
        plugins: vec![
            node.rt.ferroswitch_conf(ipam, json!({})),
            json!({
                "type": "tuning",
                "mtu": 1400,
                "sysctl": { "net.ipv4.conf.eth0.rp_filter": "2" }
            }),
        ],
    };
    let ns = node.netns("t")?;
    let att = Attachment::pod("t", &ns, "eth0");
    // Run the chain step by step to compare what tuning got and gave.
    let first = node
        .rt
        .exec(
            "ferroswitch",
            "ADD",
            Some(&att),
            &net.plugin_conf(0, None).to_string(),
        )?
        .result()?;
    let last = node
        .rt
        .exec(
            "tuning",
            "ADD",
            Some(&att),
            &net.plugin_conf(1, Some(&first)).to_string(),
        )?
        .result()?;
    assert_eq!(first["cniVersion"].as_str(), Some("1.0.0"), "{first}");
    // tuning parsed our result and passed it through unchanged.
    for k in ["interfaces", "ips", "routes"] {
        assert_eq!(last[k], first[k], "{k} through tuning: {first} -> {last}");
    }
    let rp = ns.run(&["sysctl", "-n", "net.ipv4.conf.eth0.rp_filter"])?;
    assert_eq!(rp.trim(), "2", "tuning's sysctl took effect");
    assert_eq!(ns.mtu("eth0")?, 1400, "tuning's MTU took effect");
    // The pod still works through the switch at the smaller MTU.
    let ns2 = node.netns("u")?;
    let net_plain = NetList::single(
        "fs-cn4",
        "1.0.0",
        node.rt
            .ferroswitch_conf(node.rt.host_local("10.247.4.0/24", "10.247.4.1"), json!({})),
    );
    let u = Pod::add(&node, &net_plain, Attachment::pod("u", &ns2, "eth0"))?;
    wait_reachable(&ns, &u.ip()?, Duration::from_secs(5))?;
    // CHECK over the chain, with the chain's result.
    let c = net.check(&node.rt, &att, &last)?;
    c.ok_empty()?;
    // DEL in reverse order (tuning, then ferroswitch).
    net.del(&node.rt, &att, Some(&last))?;
    net_plain.del(&node.rt, &u.att, u.result.as_ref())?;
    assert_eq!(switch_ports(&node.sd)?, BTreeSet::new());
    assert_eq!(node.rt.reservations("fs-cn4")?, vec![]);
    for h in host_ifaces(&first) {
        assert!(!host_link_exists(&h), "{h} removed");
    }
    Ok(())
}

#[test]
fn a_pod_with_a_secondary_network_has_two_ports_and_both_carry_traffic() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let node = Node::start("cn5")?;
    let primary = pod_net(&node, "fs-cn5a", "1.1.0", 5);
    // A secondary network (Multus style): its own subnet, no default route.
    let secondary = NetList::single(
        "fs-cn5b",
        "1.1.0",
        node.rt.ferroswitch_conf(
            json!({
                "type": "host-local",
                "dataDir": node.rt.ipam_dir,
                "ranges": [[{ "subnet": "10.247.6.0/24", "gateway": "10.247.6.1" }]]
            }),
            json!({}),
        ),
    );
    let mut pods = Vec::new();
    let nss: Vec<Netns> = ["p", "q"]
        .iter()
        .map(|n| node.netns(n))
        .collect::<Result<_>>()?;
    for (n, ns) in ["p", "q"].iter().zip(&nss) {
        let eth0 = Pod::add(&node, &primary, Attachment::pod(n, ns, "eth0"))?;
        let net1 = Pod::add(&node, &secondary, Attachment::pod(n, ns, "net1"))?;
        assert_ne!(eth0.ports, net1.ports, "two ports for two interfaces");
        assert_eq!(net1.ports.len(), 1);
        assert!(first_ip(net1.result()?)?.starts_with("10.247.6."));
        assert_eq!(
            pod_default_gw(ns)?.as_deref(),
            Some("10.247.5.1"),
            "the primary network's default route stays"
        );
        pods.push((eth0, net1));
    }
    assert_eq!(switch_ports(&node.sd)?.len(), 4);
    let (p, q) = (&pods[0], &pods[1]);
    // Both interfaces carry traffic: eth0 to eth0, net1 to net1.
    for (to, dev) in [(q.0.ip()?, "eth0"), (q.1.ip()?, "net1")] {
        wait_reachable(&nss[0], &to, Duration::from_secs(5))?;
        let r = nss[0].exec(&[
            "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-I", dev, &to,
        ])?;
        let out = String::from_utf8_lossy(&r.stdout);
        assert!(out.contains("2 received"), "{dev} -> {to}: {out}");
    }
    let r = ping(Some(&nss[1]), &p.1.ip()?, 2)?;
    assert_eq!(r.received, 2, "{}", r.output);
    for (eth0, net1) in &pods {
        secondary.del(&node.rt, &net1.att, net1.result.as_ref())?;
        assert_pod_gone(&node, net1, &host_ifaces(net1.result()?))?;
        // Removing net1 left eth0 alone.
        assert!(switch_ports(&node.sd)?.is_superset(&eth0.ports));
        primary.del(&node.rt, &eth0.att, eth0.result.as_ref())?;
        assert_pod_gone(&node, eth0, &host_ifaces(eth0.result()?))?;
    }
    assert_eq!(node.rt.reservations("fs-cn5a")?, vec![]);
    assert_eq!(node.rt.reservations("fs-cn5b")?, vec![]);
    Ok(())
}

#[test]
fn routed_mode_pods_reach_each_other_one_routed_hop_through_the_router_mac() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let node = Node::start("cnr")?;
    let router_mac = "0a:58:00:00:00:fe";
    let net = NetList::single(
        "fs-cnr",
        "1.1.0",
        node.rt.ferroswitch_conf(
            node.rt.host_local("10.247.11.0/24", "10.247.11.1"),
            json!({ "mode": "routed", "routerMac": router_mac }),
        ),
    );
    let (ns_a, ns_b) = (node.netns("a")?, node.netns("b")?);
    let a = Pod::add(&node, &net, Attachment::pod("a", &ns_a, "eth0"))?;
    let b = Pod::add(&node, &net, Attachment::pod("b", &ns_b, "eth0"))?;
    assert_eq!(ns_a.mtu("eth0")?, 1500, "routed mode's default MTU");
    let (ip_a, ip_b) = (a.ip()?, b.ip()?);
    wait_reachable(&ns_a, &ip_b, Duration::from_secs(5))?;
    let r = ping(Some(&ns_a), &ip_b, 3)?;
    assert_eq!((r.transmitted, r.received), (3, 3), "{}", r.output);
    assert_eq!(r.ttl, Some(63), "one routed hop: {}", r.output);
    let r = ping(Some(&ns_b), &ip_a, 3)?;
    assert_eq!((r.received, r.ttl), (3, Some(63)), "{}", r.output);
    // Proxy ARP: the pod resolves its neighbour (same subnet) to the router.
    let n = ns_a.ip(&["neigh", "show", &ip_b, "dev", "eth0"])?;
    assert!(
        n.contains(router_mac),
        "{ip_b} resolved to the router MAC: {n}"
    );
    for p in [&a, &b] {
        net.check(&node.rt, &p.att, p.result()?)?.ok_empty()?;
        net.del(&node.rt, &p.att, p.result.as_ref())?;
        assert_pod_gone(&node, p, &host_ifaces(p.result()?))?;
    }
    assert_eq!(node.rt.reservations("fs-cnr")?, vec![]);
    Ok(())
}

/// `"xdpOffload": true`: the plugin turns GRO on in the pod (so a frame
/// redirected into its veth is delivered) and adds the port with
/// `xdp-offload=true`; pod-to-pod traffic is then forwarded by switchd's XDP
/// program, not the polling thread, and still arrives.
#[test]
fn xdp_offload_pods_are_forwarded_by_the_xdp_program() -> Result<()> {
    if !runnable()? {
        return Ok(());
    }
    let _s = serial();
    let node = Node::start("cnx")?;
    let net = NetList::single(
        "fs-cnx",
        "1.1.0",
        node.rt.ferroswitch_conf(
            node.rt.host_local("10.247.12.0/24", "10.247.12.1"),
            json!({ "xdpOffload": true }),
        ),
    );
    let (ns_a, ns_b) = (node.netns("a")?, node.netns("b")?);
    let a = Pod::add(&node, &net, Attachment::pod("a", &ns_a, "eth0"))?;
    let b = Pod::add(&node, &net, Attachment::pod("b", &ns_b, "eth0"))?;
    for ns in [&ns_a, &ns_b] {
        let k = ns.run(&["ethtool", "-k", "eth0"])?;
        assert!(
            k.lines().any(|l| l.trim() == "generic-receive-offload: on"),
            "GRO on in the pod: {k}"
        );
    }
    let (ip_a, ip_b) = (a.ip()?, b.ip()?);
    wait_reachable(&ns_a, &ip_b, Duration::from_secs(5))?;
    // The first packets go up to switchd, whose control thread installs the
    // offload entries a tick later; then the XDP program forwards.
    let hits = |node: &Node| -> Result<u64> {
        let out = node.sd.flowctl_ok(&["--json", "offload-show", "br0"])?;
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| err(format!("offload-show --json: {e}: {out}")))?;
        Ok(v["ok"]["programs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["hit"].as_u64().unwrap_or(0))
            .sum())
    };
    let r = ping(Some(&ns_a), &ip_b, 3)?;
    assert_eq!(r.received, 3, "{}", r.output);
    std::thread::sleep(Duration::from_millis(500));
    let before = hits(&node)?;
    let r = ping(Some(&ns_b), &ip_a, 5)?;
    assert_eq!(r.received, 5, "{}", r.output);
    let after = hits(&node)?;
    assert!(
        after >= before + 10,
        "requests and replies forwarded by the XDP program ({before} -> {after}):\n{}",
        node.sd.flowctl_ok(&["offload-show", "br0"])?
    );
    for p in [&a, &b] {
        net.del(&node.rt, &p.att, p.result.as_ref())?;
        assert_pod_gone(&node, p, &host_ifaces(p.result()?))?;
    }
    Ok(())
}
