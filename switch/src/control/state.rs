//! Persistent state: the bridge's ports (with their OpenFlow numbers) and
//! flows (with cookies and timeouts), saved atomically after every change and
//! restored when switchd starts, so a restart needs no reprogramming.
//!
//! Saving writes `state.json.tmp`, fsyncs it, renames it over `state.json` and
//! fsyncs the directory: a crash at any point leaves either the old or the new
//! state, never a torn file. Flows are stored as ovs-ofctl text (one per
//! flow), the same syntax operators use, so the file is readable and the
//! parse/format round trip that dump-flows relies on is what restores it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Format version of the state file.
pub const STATE_VERSION: u32 = 1;

/// A port as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    /// Name.
    pub name: String,
    /// Backend type.
    #[serde(rename = "type")]
    pub port_type: String,
    /// OpenFlow port number.
    pub ofport: u32,
    /// Backend options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A bridge as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeState {
    /// Ports, in ofport order.
    pub ports: Vec<PortConfig>,
    /// Flows, as `table=..,priority=..,cookie=..,[timeouts,]MATCH,actions=..` text.
    pub flows: Vec<String>,
    /// Bridge settings from `set-bridge` (`mac-aging-time`, `mac-table-size`),
    /// as given; absent from files written before they existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other_config: BTreeMap<String, String>,
    /// OpenFlow groups, in dump-groups syntax (restored before the flows,
    /// which may name them; omitted when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Routes, neighbours and router MACs (omitted when none).
    #[serde(default, skip_serializing_if = "crate::route::RouteState::is_empty")]
    pub routing: crate::route::RouteState,
}

/// The whole state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Bridges by name.
    pub bridges: BTreeMap<String, BridgeState>,
}

/// Where the state lives.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: &Path) -> io::Result<StateStore> {
        fs::create_dir_all(dir)?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The state file path.
    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Load the state; a missing file is an empty state. A corrupt file is an
    /// error (switchd refuses to start rather than silently forget flows).
    pub fn load(&self) -> io::Result<State> {
        let p = self.path();
        match fs::read(&p) {
            Ok(bytes) => {
                let s: State = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
                })?;
                if s.version != STATE_VERSION {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: state version {} is not {STATE_VERSION}",
                            p.display(),
                            s.version
                        ),
                    ));
                }
                Ok(s)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State {
                version: STATE_VERSION,
                bridges: BTreeMap::new(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Save atomically (temp file, fsync, rename, fsync directory).
    pub fn save(&self, state: &State) -> io::Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path())?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_roundtrip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("sub")).unwrap();
        assert!(store.load().unwrap().bridges.is_empty());
        let mut s = State {
            version: STATE_VERSION,
            ..Default::default()
        };
        s.bridges.insert(
            "br0".into(),
            BridgeState {
                ports: vec![PortConfig {
                    name: "p1".into(),
                    port_type: "memory".into(),
                    ofport: 1,
                    options: BTreeMap::new(),
                }],
                flows: vec!["table=0,priority=10,actions=drop".into()],
                other_config: BTreeMap::from([("mac-aging-time".into(), "10".into())]),
                ..Default::default()
            },
        );
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), s);
        assert!(!dir.path().join("sub/state.json.tmp").exists());
        fs::write(store.path(), b"{ torn").unwrap();
        assert!(store.load().is_err());
    }
}
