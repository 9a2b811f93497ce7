//! The CNI result: one version-neutral model, decoded from any supported
//! version (an IPAM plugin's answer, a prevResult) and encoded in the
//! configuration's version.
//!
//! Formats (CNI SPEC.md "Success", and the 0.3.x/0.4.0 SPEC): 0.3.0-0.4.0 ips
//! carry `"version": "4"|"6"`; 1.0.0 dropped it; 1.1.0 added `interfaces[].mtu`,
//! `socketPath`, `pciID` and route `mtu`/`advmss`/`priority`/`table`/`scope`,
//! which older encodings leave out (a runtime still speaking 1.0.0 rejects
//! fields it does not know only in strict decoders, but we write exactly its
//! format). Decoding never panics: a malformed result is a [`CniError`].

use serde_json::{json, Map, Value};

use crate::config::version_cmp;
use crate::error::*;

/// One interface.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC.
    pub mac: Option<String>,
    /// MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Netns path, for interfaces inside the sandbox.
    pub sandbox: Option<String>,
    /// vhost-user socket path (1.1.0).
    pub socket_path: Option<String>,
}

/// One IP configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IpConfig {
    /// Address in CIDR notation.
    pub address: String,
    /// Gateway.
    pub gateway: Option<String>,
    /// Index into interfaces.
    pub interface: Option<usize>,
}

/// One route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop.
    pub gw: Option<String>,
    /// 1.1.0 route attributes (mtu, advmss, priority, table, scope), kept as given.
    pub extra: Map<String, Value>,
}

/// A result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CniResultBody {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// IPs.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS, as given by IPAM (passed through).
    pub dns: Value,
}

fn bad(msg: impl Into<String>) -> CniError {
    CniError::new(DECODE_FAILURE, msg)
}

fn str_field(o: &Value, k: &str, what: &str) -> CniResult<Option<String>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(format!("{what}: {k:?} must be a string, got {v}"))),
    }
}

impl CniResultBody {
    /// Decode a result of any supported version.
    pub fn decode(v: &Value, what: &str) -> CniResult<CniResultBody> {
        if !v.is_object() {
            return Err(bad(format!("{what} is not a JSON object")));
        }
        let arr = |k: &str| -> CniResult<Vec<Value>> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(o) => Err(bad(format!("{what}: {k:?} must be an array, got {o}"))),
            }
        };
        let mut r = CniResultBody {
            dns: v.get("dns").cloned().unwrap_or(Value::Null),
            ..Default::default()
        };
        for i in arr("interfaces")? {
            r.interfaces.push(Interface {
                name: str_field(&i, "name", what)?
                    .ok_or_else(|| bad(format!("{what}: an interface has no name")))?,
                mac: str_field(&i, "mac", what)?,
                mtu: i.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
                sandbox: str_field(&i, "sandbox", what)?,
                socket_path: str_field(&i, "socketPath", what)?,
            });
        }
        for ip in arr("ips")? {
            let interface = match ip.get("interface") {
                None | Some(Value::Null) => None,
                Some(x) => Some(x.as_u64().ok_or_else(|| {
                    bad(format!("{what}: ips[].interface must be an index, got {x}"))
                })? as usize),
            };
            r.ips.push(IpConfig {
                address: str_field(&ip, "address", what)?
                    .ok_or_else(|| bad(format!("{what}: an ips entry has no address")))?,
                gateway: str_field(&ip, "gateway", what)?,
                interface,
            });
        }
        for rt in arr("routes")? {
            let mut extra = Map::new();
            if let Some(o) = rt.as_object() {
                for (k, val) in o {
                    if k != "dst" && k != "gw" {
                        extra.insert(k.clone(), val.clone());
                    }
                }
            }
            r.routes.push(Route {
                dst: str_field(&rt, "dst", what)?
                    .ok_or_else(|| bad(format!("{what}: a route has no dst")))?,
                gw: str_field(&rt, "gw", what)?,
                extra,
            });
        }
        Ok(r)
    }

    /// Encode in `version`.
    pub fn encode(&self, version: &str) -> Value {
        let v11 = version_cmp(version, "1.1.0").is_ge();
        let pre1 = version_cmp(version, "1.0.0").is_lt();
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = json!({ "name": i.name });
                if let Some(m) = &i.mac {
                    o["mac"] = json!(m);
                }
                if v11 {
                    if let Some(m) = i.mtu {
                        o["mtu"] = json!(m);
                    }
                }
                if let Some(s) = &i.sandbox {
                    o["sandbox"] = json!(s);
                }
                if v11 {
                    if let Some(s) = &i.socket_path {
                        o["socketPath"] = json!(s);
                    }
                }
                o
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = json!({ "address": ip.address });
                if pre1 {
                    let fam = if ip.address.contains(':') { "6" } else { "4" };
                    o["version"] = json!(fam);
                }
                if let Some(g) = &ip.gateway {
                    o["gateway"] = json!(g);
                }
                if let Some(i) = ip.interface {
                    o["interface"] = json!(i);
                }
                o
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = json!({ "dst": r.dst });
                if let Some(g) = &r.gw {
                    o["gw"] = json!(g);
                }
                if v11 {
                    for (k, val) in &r.extra {
                        o[k.as_str()] = val.clone();
                    }
                }
                o
            })
            .collect();
        let mut out = json!({ "cniVersion": version });
        if !interfaces.is_empty() {
            out["interfaces"] = Value::Array(interfaces);
        }
        out["ips"] = Value::Array(ips);
        if !routes.is_empty() {
            out["routes"] = Value::Array(routes);
        }
        out["dns"] = if self.dns.is_object() {
            self.dns.clone()
        } else {
            json!({})
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResultBody {
        CniResultBody {
            interfaces: vec![
                Interface {
                    name: "fs0123456789ab".into(),
                    mac: Some("be:ef:00:00:00:01".into()),
                    mtu: Some(1450),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:f4:01:07".into()),
                    mtu: Some(1450),
                    sandbox: Some("/var/run/netns/p1".into()),
                    socket_path: None,
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.7/24".into(),
                gateway: Some("10.244.1.1".into()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.244.1.1".into()),
                extra: [("mtu".to_string(), json!(1400))].into_iter().collect(),
            }],
            dns: json!({"nameservers": ["10.96.0.10"]}),
        }
    }

    #[test]
    fn encodes_each_version_in_its_own_format() {
        let r = sample();
        let v04 = r.encode("0.4.0");
        assert_eq!(v04["cniVersion"], "0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert!(v04["interfaces"][1].get("mtu").is_none());
        assert!(v04["routes"][0].get("mtu").is_none());
        let v10 = r.encode("1.0.0");
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10["interfaces"][1].get("mtu").is_none());
        assert_eq!(v10["ips"][0]["interface"], 1);
        assert_eq!(v10["interfaces"][1]["sandbox"], "/var/run/netns/p1");
        let v11 = r.encode("1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1450);
        assert_eq!(v11["routes"][0]["mtu"], 1400);
        assert_eq!(v11["dns"]["nameservers"][0], "10.96.0.10");
    }

    #[test]
    fn socket_path_only_in_1_1() {
        let mut r = sample();
        r.interfaces[1].socket_path = Some("/run/x/fs1.sock".into());
        assert_eq!(
            r.encode("1.1.0")["interfaces"][1]["socketPath"],
            "/run/x/fs1.sock"
        );
        assert!(r.encode("1.0.0")["interfaces"][1]
            .get("socketPath")
            .is_none());
    }

    #[test]
    fn decode_round_trips_every_version() {
        let r = sample();
        for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let back = CniResultBody::decode(&r.encode(v), "test").unwrap();
            assert_eq!(back.ips, r.ips, "{v}");
            assert_eq!(back.interfaces.len(), 2);
            assert_eq!(back.routes[0].dst, "0.0.0.0/0");
        }
        assert_eq!(CniResultBody::decode(&r.encode("1.1.0"), "t").unwrap(), r);
    }

    #[test]
    fn decodes_host_local_0_4_output() {
        let v = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.2.3/24","gateway":"10.1.2.1"}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{}});
        let r = CniResultBody::decode(&v, "ipam").unwrap();
        assert_eq!(r.ips[0].address, "10.1.2.3/24");
        assert_eq!(r.ips[0].interface, None);
        assert_eq!(r.routes[0].gw, None);
    }

    #[test]
    fn malformed_results_are_decode_errors() {
        for bad in [
            json!([]),
            json!({"ips": 3}),
            json!({"ips": [{"gateway": "1.1.1.1"}]}),
            json!({"ips": [{"address": 5}]}),
            json!({"ips": [{"address": "1.1.1.1/32", "interface": "x"}]}),
            json!({"interfaces": [{"mac": "x"}]}),
            json!({"routes": [{"gw": "1.1.1.1"}]}),
        ] {
            assert_eq!(
                CniResultBody::decode(&bad, "t").unwrap_err().code,
                DECODE_FAILURE,
                "{bad}"
            );
        }
    }
}
