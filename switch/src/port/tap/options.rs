//! Options of a tap port, as given to `add-port ... type=tap key=value...`.
//!
//! Input is the string map of the port's configuration; output is a checked
//! [`TapOptions`] or a [`TapError`] naming the offending key and value. Nothing
//! here touches the kernel: parsing must never panic and never half-apply.

use std::collections::BTreeMap;

use super::TapError;
use crate::packet::buf::MAX_FRAME;

/// Option keys a tap port accepts.
pub const TAP_OPTION_KEYS: [&str; 3] = ["ifname", "mtu", "mac"];

/// Smallest MTU the kernel accepts on an Ethernet device (RFC 791: every
/// IPv4 host must accept 68-byte datagrams; `ETH_MIN_MTU` in the kernel).
pub const TAP_MIN_MTU: u32 = 68;

/// Largest MTU a tap port accepts: the kernel's largest frame for an MTU is
/// MTU + 14 (Ethernet header) + 4 (one 802.1Q tag, from a VLAN device
/// stacked on the tap), and every frame must fit a [`MAX_FRAME`] buffer.
pub const TAP_MAX_MTU: u32 = (MAX_FRAME - 18) as u32;

/// Longest interface name (`IFNAMSIZ` - 1 for the terminating NUL).
pub const IFNAME_MAX: usize = 15;

/// The checked options of a tap port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// Interface name; `None` means "the port's name".
    pub ifname: Option<String>,
    /// MTU to set on the device; `None` leaves the kernel's (1500 for a new tap).
    pub mtu: Option<u32>,
    /// MAC address to set on the device; `None` leaves the kernel's random one.
    pub mac: Option<[u8; 6]>,
}

impl TapOptions {
    /// Parse `ifname`, `mtu` and `mac` from a port's option map. Unknown keys
    /// and bad values are errors that name the key.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<TapOptions, TapError> {
        let mut o = TapOptions::default();
        for (k, v) in map {
            match k.as_str() {
                "ifname" => {
                    check_ifname(v).map_err(|reason| bad("ifname", v, reason))?;
                    o.ifname = Some(v.clone());
                }
                "mtu" => {
                    let mtu = v
                        .parse::<u32>()
                        .ok()
                        .filter(|m| (TAP_MIN_MTU..=TAP_MAX_MTU).contains(m))
                        .ok_or_else(|| {
                            bad(
                                "mtu",
                                v,
                                format!(
                                    "must be a number {TAP_MIN_MTU}..{TAP_MAX_MTU} \
                                     (a frame must fit a {MAX_FRAME}-byte buffer)"
                                ),
                            )
                        })?;
                    o.mtu = Some(mtu);
                }
                "mac" => o.mac = Some(parse_mac(v).map_err(|reason| bad("mac", v, reason))?),
                _ => return Err(TapError::UnknownOption(k.clone())),
            }
        }
        Ok(o)
    }

    /// The interface name to use for a port called `port_name`: `ifname` when
    /// set, else the port name, which must then be a valid interface name.
    pub fn ifname_for(&self, port_name: &str) -> Result<String, TapError> {
        match &self.ifname {
            Some(n) => Ok(n.clone()),
            None => {
                check_ifname(port_name).map_err(|reason| {
                    bad(
                        "ifname",
                        port_name,
                        format!(
                            "the port name is used as interface name and {reason}; set ifname="
                        ),
                    )
                })?;
                Ok(port_name.to_string())
            }
        }
    }
}

fn bad(key: &'static str, value: &str, reason: impl Into<String>) -> TapError {
    TapError::BadOption {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The kernel's `dev_valid_name`: 1..=15 bytes, not `.` or `..`, no `/`, `:`
/// or whitespace.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > IFNAME_MAX {
        return Err(format!("must be at most {IFNAME_MAX} bytes"));
    }
    if name == "." || name == ".." {
        return Err("must not be . or ..".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("must not contain {c:?}"));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff` (hex, `:` or `-` separated), unicast and not all zero
/// (IEEE 802: the kernel's `is_valid_ether_addr`).
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err("must be six hex bytes like 02:00:00:00:00:01".into());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(format!("{p:?} is not a hex byte"));
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("{p:?} is not a hex byte"))?;
    }
    if mac[0] & 1 != 0 {
        return Err("is a multicast address; a device address must be unicast".into());
    }
    if mac == [0; 6] {
        return Err("must not be all zero".into());
    }
    Ok(mac)
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
    fn parses_all_options() {
        let o = TapOptions::from_map(&map(&[
            ("ifname", "tap-pod1"),
            ("mtu", "1450"),
            ("mac", "02:00:0a:f4:01:02"),
        ]))
        .unwrap();
        assert_eq!(o.ifname.as_deref(), Some("tap-pod1"));
        assert_eq!(o.mtu, Some(1450));
        assert_eq!(o.mac, Some([2, 0, 0x0a, 0xf4, 1, 2]));
        assert_eq!(o.ifname_for("p1").unwrap(), "tap-pod1");
    }

    #[test]
    fn defaults_to_the_port_name() {
        let o = TapOptions::from_map(&BTreeMap::new()).unwrap();
        assert_eq!(o, TapOptions::default());
        assert_eq!(o.ifname_for("host0").unwrap(), "host0");
        let e = o.ifname_for("a-very-long-port-name").unwrap_err();
        assert!(e.to_string().contains("set ifname="), "{e}");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let e = TapOptions::from_map(&map(&[("depth", "4")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tap ports take no option \"depth\" (known: ifname, mtu, mac)"
        );
        for (k, v) in [
            ("mtu", "67"),
            ("mtu", "9000"),
            ("mtu", "-1"),
            ("mtu", ""),
            ("mac", "01:00:5e:00:00:01"),
            ("mac", "00:00:00:00:00:00"),
            ("mac", "02:00:00:00:00"),
            ("mac", "02:00:00:00:00:0g"),
            ("mac", "02:00:00:00:00:001"),
            ("ifname", ""),
            ("ifname", "sixteen-chars-xx"),
            ("ifname", "a/b"),
            ("ifname", "a b"),
            ("ifname", ".."),
        ] {
            let e = TapOptions::from_map(&map(&[(k, v)])).unwrap_err();
            assert!(
                matches!(&e, TapError::BadOption { key, value, .. } if *key == k && value == v),
                "{k}={v}: {e}"
            );
        }
        assert_eq!(
            TapOptions::from_map(&map(&[("mtu", "2030")])).unwrap().mtu,
            Some(2030)
        );
    }
}
