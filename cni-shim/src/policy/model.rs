//! The input of the compiler: Kubernetes NetworkPolicy objects
//! (networking.k8s.io/v1) and the node agent's inventory of pods and
//! namespaces, read from YAML or JSON.
//!
//! Text enters through [`load_policies`], [`load_inventory`] and
//! [`super::masq::MasqConfig::load`]; typed values leave. Unknown keys are
//! ignored (a NetworkPolicy from `kubectl get -o yaml` carries `status`,
//! `managedFields`...), but a known key with a wrong type or a value the API
//! server would reject is an error naming the object, never a panic.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;
use serde_json::Value;

use super::PolicyError;

/// A label selector (meta/v1 LabelSelector): the AND of `matchLabels` and
/// `matchExpressions`; an empty selector selects everything.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// `key: value` pairs that must all be present.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values (non-empty for In/NotIn, empty for Exists/DoesNotExist).
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Check the operators and value lists as the API server does
    /// (apimachinery ValidateLabelSelectorRequirement).
    pub fn validate(&self) -> Result<(), String> {
        for r in &self.match_expressions {
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions key {:?}: operator {} needs values",
                        r.key, r.operator
                    ))
                }
                "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions key {:?}: operator {} takes no values",
                        r.key, r.operator
                    ))
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(format!(
                        "matchExpressions key {:?}: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)",
                        r.key
                    ))
                }
            }
        }
        Ok(())
    }

    /// Whether the labels satisfy every term (labels.Selector.Matches).
    /// `NotIn` and `DoesNotExist` hold for a label that is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let have = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => have.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => !have.is_some_and(|v| r.values.contains(v)),
                    "Exists" => have.is_some(),
                    "DoesNotExist" => have.is_none(),
                    _ => false, // rejected by validate()
                }
            })
    }
}

/// Object metadata (the parts we use).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Namespace (`default` when absent, as kubectl applies it).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A NetworkPolicy (networking.k8s.io/v1).
#[derive(Clone, Debug, Deserialize)]
pub struct NetworkPolicy {
    /// name, namespace.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The policy.
    pub spec: NetworkPolicySpec,
}

impl NetworkPolicy {
    /// The policy's namespace.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace(), self.metadata.name)
    }

    /// The effective policyTypes: as given, or the API server's default
    /// (networking/v1 SetDefaults_NetworkPolicySpec): Ingress always, Egress
    /// when the policy has at least one egress rule (`egress: []` does not
    /// count).
    pub fn affects(&self) -> (bool, bool) {
        match &self.spec.policy_types {
            Some(t) if !t.is_empty() => (
                t.iter().any(|t| t == "Ingress"),
                t.iter().any(|t| t == "Egress"),
            ),
            _ => (
                true,
                self.spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
            ),
        }
    }
}

/// NetworkPolicySpec.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Pods of the policy's namespace it applies to (`{}`: all).
    pub pod_selector: LabelSelector,
    /// `Ingress`, `Egress` (defaulted when absent, see [`NetworkPolicy::affects`]).
    #[serde(default)]
    pub policy_types: Option<Vec<String>>,
    /// Allowed incoming traffic (each rule ORed).
    #[serde(default)]
    pub ingress: Option<Vec<IngressRule>>,
    /// Allowed outgoing traffic (each rule ORed).
    #[serde(default)]
    pub egress: Option<Vec<EgressRule>>,
}

/// NetworkPolicyIngressRule: traffic from any of `from` to any of `ports`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct IngressRule {
    /// Sources; empty or absent: every source.
    #[serde(default)]
    pub from: Option<Vec<Peer>>,
    /// Destination ports; empty or absent: every port and protocol.
    #[serde(default)]
    pub ports: Option<Vec<PolicyPort>>,
}

/// NetworkPolicyEgressRule: traffic to any of `to` on any of `ports`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EgressRule {
    /// Destinations; empty or absent: every destination.
    #[serde(default)]
    pub to: Option<Vec<Peer>>,
    /// Destination ports; empty or absent: every port and protocol.
    #[serde(default)]
    pub ports: Option<Vec<PolicyPort>>,
}

/// NetworkPolicyPeer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Pods (of the policy's namespace, or of the namespaces
    /// `namespaceSelector` selects).
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces whose pods are peers.
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    /// Addresses.
    #[serde(default)]
    pub ip_block: Option<IpBlock>,
}

/// IPBlock: `cidr` minus every `except`.
#[derive(Clone, Debug, Deserialize)]
pub struct IpBlock {
    /// e.g. `172.17.0.0/16`.
    pub cidr: String,
    /// Sub-ranges of `cidr` that are not included.
    #[serde(default)]
    pub except: Vec<String>,
}

/// NetworkPolicyPort.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// A number or a named container port; absent: every port.
    #[serde(default)]
    pub port: Option<IntOrString>,
    /// Last port of a range starting at `port` (numeric `port` only).
    #[serde(default)]
    pub end_port: Option<i64>,
}

/// intstr.IntOrString.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrString {
    /// A port number.
    Int(i64),
    /// A named port (IANA_SVC_NAME).
    Str(String),
}

/// A namespace and its labels.
#[derive(Clone, Debug, Deserialize)]
pub struct NamespaceInfo {
    /// Name.
    pub name: String,
    /// Labels (`kubernetes.io/metadata.name` is added as the API server does).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A named container port of a pod (for named ports in policies).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// The port's name (`http`).
    #[serde(default)]
    pub name: Option<String>,
    /// Its number.
    pub container_port: u16,
    /// `TCP` (default), `UDP`, `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// One pod of the cluster. Pods of this node carry `ofport` (their switch
/// port); pods elsewhere only matter as peers (their addresses).
#[derive(Clone, Debug, Deserialize)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Addresses (IPv6 ones are ignored: the pod flows are IPv4).
    #[serde(default)]
    pub ips: Vec<String>,
    /// OpenFlow port on this node's switch: present for local pods.
    #[serde(default)]
    pub ofport: Option<u32>,
    /// The switchd port name (cni-shim's `fsXXXXXXXXXXXX`); `apply` resolves
    /// it to `ofport` when `ofport` is absent.
    #[serde(default)]
    pub port: Option<String>,
    /// The pod's MAC on the switch; default cni-shim's `0a:58:` + address.
    #[serde(default)]
    pub mac: Option<String>,
    /// Named container ports.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

impl PodInfo {
    /// The pod's IPv4 addresses.
    pub fn ipv4(&self) -> Result<Vec<Ipv4Addr>, String> {
        let mut out = Vec::new();
        for s in &self.ips {
            match s.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(a)) => out.push(a),
                Ok(std::net::IpAddr::V6(_)) => {}
                Err(_) => return Err(format!("ips: {s:?} is not an IP address")),
            }
        }
        Ok(out)
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The pods and namespaces the policies select from.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Inventory {
    /// Namespaces (a pod's namespace missing here has only the
    /// `kubernetes.io/metadata.name` label).
    #[serde(default)]
    pub namespaces: Vec<NamespaceInfo>,
    /// Every pod a policy may select or name as a peer.
    #[serde(default)]
    pub pods: Vec<PodInfo>,
}

/// Every document of a YAML (or JSON, which is YAML) text, as JSON values.
/// Empty documents (`---` at the end) are skipped.
pub fn documents(text: &str, what: &str) -> Result<Vec<Value>, PolicyError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc)
            .map_err(|e| PolicyError::Input(format!("{what}: document {}: {e}", i + 1)))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The NetworkPolicy objects in a text: one or several documents, each a
/// NetworkPolicy or a List of them (`kind: List`, `NetworkPolicyList`, as
/// `kubectl get networkpolicy -A -o yaml` prints). Other kinds are an error
/// (a misplaced file should not pass silently).
pub fn load_policies(text: &str, what: &str) -> Result<Vec<NetworkPolicy>, PolicyError> {
    let mut out = Vec::new();
    for doc in documents(text, what)? {
        collect_policies(doc, what, &mut out)?;
    }
    Ok(out)
}

fn collect_policies(
    doc: Value,
    what: &str,
    out: &mut Vec<NetworkPolicy>,
) -> Result<(), PolicyError> {
    let kind = doc["kind"].as_str().unwrap_or("").to_string();
    if kind == "List" || kind.ends_with("List") {
        let items = match doc.get("items") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(PolicyError::Input(format!(
                    "{what}: {kind}: items is not a list"
                )))
            }
        };
        for item in items {
            collect_policies(item, what, out)?;
        }
        return Ok(());
    }
    if kind != "NetworkPolicy" {
        return Err(PolicyError::Input(format!(
            "{what}: a document of kind {kind:?}: expected NetworkPolicy or a List of them"
        )));
    }
    let name = format!(
        "{}/{}",
        doc["metadata"]["namespace"].as_str().unwrap_or("default"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    );
    let p: NetworkPolicy = serde_json::from_value(doc)
        .map_err(|e| PolicyError::Input(format!("{what}: NetworkPolicy {name}: {e}")))?;
    if p.metadata.name.is_empty() {
        return Err(PolicyError::Input(format!(
            "{what}: a NetworkPolicy without metadata.name"
        )));
    }
    out.push(p);
    Ok(())
}

/// The inventory in a text (one document; JSON or YAML).
pub fn load_inventory(text: &str, what: &str) -> Result<Inventory, PolicyError> {
    let mut docs = documents(text, what)?;
    if docs.len() != 1 {
        return Err(PolicyError::Input(format!(
            "{what}: expected one inventory document, found {}",
            docs.len()
        )));
    }
    serde_json::from_value(docs.remove(0)).map_err(|e| PolicyError::Input(format!("{what}: {e}")))
}
