//! Tap ports: the switch's "local" port to the host's own network stack,
//! like Open vSwitch's internal port.
//!
//! A [`TapPort`] owns a TAP device (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`):
//! every frame the host stack sends out of the interface is one `read` on
//! the port's descriptor and enters the switch through [`Port::rx_batch`];
//! every frame the switch sends with [`Port::tx_batch`] is one `write`, and
//! the host stack receives it as if it arrived on the interface.
//!
//! The tap driver moves one frame per system call: `readv`/`writev` take one
//! frame's scatter list, and `recvmmsg`/`sendmmsg` do not apply because a tap
//! descriptor is a character device, not a socket. What this port can do is
//! batch at the switch's level: `rx_batch` drains up to `max` frames in one
//! call and stops at the first `EAGAIN` (so an idle port costs one syscall per
//! poll), `tx_batch` writes a whole batch back to back. No allocation and no
//! lock per frame; the syscalls are the tap's inherent price, which is why a
//! tap is the host's port and not a pod's fast path (that is AF_XDP or
//! vhost-user).
//!
//! Never a panic and never a silent loss: a frame larger than
//! [`MAX_FRAME`] is a counted `oversize` drop, a full kernel queue
//! (`EAGAIN` on write) a `tx_ring_full` drop, a frame sent while the
//! interface is administratively down (`EIO`) a `port_down` drop, and when
//! the interface is deleted underneath the switch the port marks itself down
//! ([`TapPort::link_up`]) and counts every later frame as `port_down`.
//!
//! A device the port created is removed when the port is dropped (a
//! non-persistent tap dies with its last descriptor); a device that existed
//! before (a persistent tap made with `ip tuntap add`) is left in place.

mod options;
mod sys;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use options::{check_ifname, parse_mac, TapOptions, TAP_MAX_MTU, TAP_MIN_MTU, TAP_OPTION_KEYS};

use super::{DropReason, Port, PortCounters};
use crate::packet::buf::MAX_FRAME;
use crate::packet::{Packet, PacketPool};

/// Buffers a polling thread keeps at most: a transmitted buffer that came
/// from another thread's allocation (an injected frame) is freed beyond this.
const POOL_HIGH_WATER: usize = 8192;

/// Shortest frame the tap driver accepts on write (an Ethernet header;
/// `tun_get_user` rejects shorter writes with `EINVAL`).
const ETH_HLEN: usize = 14;

/// Why a tap port could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// An option key tap ports do not know.
    #[error("tap ports take no option {0:?} (known: ifname, mtu, mac)")]
    UnknownOption(String),
    /// An option value that does not parse or is out of range.
    #[error("tap option {key}={value:?}: {reason}")]
    BadOption {
        /// The option's key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An interface of that name exists and is not a tap device.
    #[error("interface {0:?} exists and is not a tap device")]
    NotTap(String),
    /// The tap device is attached to another process.
    #[error("tap device {0:?} is in use by another process")]
    Busy(String),
    /// The caller lacks CAP_NET_ADMIN.
    #[error("creating tap device {0:?} needs CAP_NET_ADMIN (run switchd as root)")]
    Permission(String),
    /// A system call failed.
    #[error("{op} on tap {ifname:?}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The interface.
        ifname: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

/// A port to the host stack through a TAP device. Owned by one polling thread.
#[derive(Debug)]
pub struct TapPort {
    fd: OwnedFd,
    ifname: String,
    persistent: bool,
    link_up: Arc<AtomicBool>,
    counters: Arc<PortCounters>,
    /// Catches the bytes of a frame longer than a packet buffer, so such a
    /// frame is recognised (and counted) instead of silently truncated.
    overflow: [u8; 64],
}

impl TapPort {
    /// Create the tap device (or attach to an existing persistent one) for
    /// the switch port `port_name`, apply `opts` (MAC, then MTU) and bring
    /// the interface up. The interface is `opts.ifname`, else `port_name`.
    /// The device is created in the calling thread's network namespace.
    pub fn open(port_name: &str, opts: &TapOptions) -> Result<TapPort, TapError> {
        let ifname = opts.ifname_for(port_name)?;
        let existed = sys::ifindex(&ifname).is_some();
        let (fd, persistent) = sys::open_tap(&ifname).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) if existed => TapError::NotTap(ifname.clone()),
            Some(libc::EBUSY) => TapError::Busy(ifname.clone()),
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission(ifname.clone()),
            _ => os("TUNSETIFF", &ifname, e),
        })?;
        // On any error below, `fd` drops and a device we created goes with it.
        if let Some(mac) = opts.mac {
            sys::set_mac(&ifname, mac).map_err(|e| os("SIOCSIFHWADDR", &ifname, e))?;
        }
        if let Some(mtu) = opts.mtu {
            sys::set_mtu(&ifname, mtu).map_err(|e| os("SIOCSIFMTU", &ifname, e))?;
        }
        sys::bring_up(&ifname).map_err(|e| os("SIOCSIFFLAGS", &ifname, e))?;
        Ok(TapPort {
            fd,
            ifname,
            persistent,
            link_up: Arc::new(AtomicBool::new(true)),
            counters: Arc::new(PortCounters::default()),
            overflow: [0; 64],
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// True when the device is persistent: it existed before this port and
    /// stays when the port is dropped. False when the port created it and
    /// dropping the port removes it.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// The link state, shared with the control thread: true while the
    /// device exists; false for good once it was deleted underneath the port
    /// (re-add the port to recreate it).
    pub fn link_up(&self) -> &Arc<AtomicBool> {
        &self.link_up
    }

    /// Record that the device is gone.
    fn mark_down(&self) {
        self.link_up.store(false, Ordering::Relaxed);
    }

    /// Receive one frame into `p`. Ok(Some(len)) for a frame of `len` bytes
    /// (which may exceed [`MAX_FRAME`]: then only its head is in `p`),
    /// Ok(None) when no frame is waiting.
    fn read_frame(&mut self, p: &mut Packet) -> io::Result<Option<usize>> {
        // Open the buffer to its full size: set_data resets the headroom,
        // push_tail makes the whole MAX_FRAME writable.
        p.set_data(&[]);
        p.push_tail(MAX_FRAME);
        let data = p.data_mut();
        let iov = [
            libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            },
            libc::iovec {
                iov_base: self.overflow.as_mut_ptr().cast(),
                iov_len: self.overflow.len(),
            },
        ];
        // SAFETY: both iovecs point into buffers we hold exclusively (the
        // packet's frame area and `self.overflow`) with their exact lengths,
        // alive for the duration of the call; `fd` is our open tap descriptor.
        let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        // r >= 0 was checked above.
        Ok(Some(r as usize))
    }
}

fn os(op: &'static str, ifname: &str, source: io::Error) -> TapError {
    TapError::Os {
        op,
        ifname: ifname.to_string(),
        source,
    }
}

/// True for the errors the tap driver returns once the device is gone:
/// `EBADFD` (`tun_chr_read_iter`/`tun_chr_write_iter` on a detached file),
/// and the generic "no device" errors.
fn device_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::ENXIO)
    )
}

impl Port for TapPort {
    fn rx_batch(&mut self, pool: &mut PacketPool, out: &mut Vec<Packet>, max: usize) -> usize {
        if !self.link_up.load(Ordering::Relaxed) {
            return 0;
        }
        let (mut n, mut bytes, mut oversize, mut errors) = (0usize, 0u64, 0u64, 0u64);
        while n < max {
            // No buffer: leave the frames in the kernel's queue (it counts
            // its own drops when that fills); reading them would lose them.
            let Some(mut p) = pool.get() else { break };
            match self.read_frame(&mut p) {
                Ok(Some(len)) if len > MAX_FRAME => {
                    oversize += 1;
                    pool.put(p);
                }
                Ok(Some(len)) => {
                    p.truncate(len);
                    bytes += len as u64;
                    out.push(p);
                    n += 1;
                }
                Ok(None) => {
                    pool.put(p);
                    break;
                }
                Err(e) => {
                    pool.put(p);
                    if device_gone(&e) {
                        self.mark_down();
                    } else {
                        errors += 1;
                    }
                    break;
                }
            }
        }
        if n > 0 {
            self.counters.rx_packets.add(n as u64);
            self.counters.rx_bytes.add(bytes);
        }
        if oversize > 0 {
            self.counters.rx_drop(DropReason::Oversize, oversize);
        }
        if errors > 0 {
            self.counters.rx_errors.add(errors);
        }
        n
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>, pool: &mut PacketPool) -> usize {
        let mut sent = 0u64;
        let mut bytes = 0u64;
        let mut drops = [0u64; DropReason::COUNT];
        let mut errors = 0u64;
        for p in pkts.drain(..) {
            let len = p.len();
            let verdict = if !self.link_up.load(Ordering::Relaxed) {
                Some(DropReason::PortDown)
            } else if len > MAX_FRAME {
                Some(DropReason::Oversize)
            } else if len < ETH_HLEN {
                Some(DropReason::Truncated)
            } else {
                let d = p.data();
                // SAFETY: `d` is the packet's frame, readable for `d.len()`
                // bytes for the duration of the call; `fd` is our tap descriptor.
                let r = unsafe { libc::write(self.fd.as_raw_fd(), d.as_ptr().cast(), d.len()) };
                if r >= 0 {
                    if r as usize == len {
                        sent += 1;
                        bytes += len as u64;
                    } else {
                        // The tap driver takes a frame whole or not at all.
                        errors += 1;
                    }
                    None
                } else {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::ENOBUFS) => Some(DropReason::TxRingFull),
                        // The interface is administratively down
                        // (`ip link set down`): a drop, but not for good.
                        Some(libc::EIO) => Some(DropReason::PortDown),
                        _ if device_gone(&e) => {
                            self.mark_down();
                            Some(DropReason::PortDown)
                        }
                        _ => {
                            errors += 1;
                            None
                        }
                    }
                }
            };
            if let Some(r) = verdict {
                drops[r.index()] += 1;
            }
            if pool.available() < POOL_HIGH_WATER {
                pool.put(p);
            }
        }
        self.counters.tx_packets.add(sent);
        self.counters.tx_bytes.add(bytes);
        if errors > 0 {
            self.counters.tx_errors.add(errors);
        }
        for r in DropReason::ALL {
            if drops[r.index()] > 0 {
                self.counters.tx_drop(r, drops[r.index()]);
            }
        }
        sent as usize
    }

    fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }
}
