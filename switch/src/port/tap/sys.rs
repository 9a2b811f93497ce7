//! The kernel interface of a tap port: `/dev/net/tun` and the interface
//! ioctls (Linux `Documentation/networking/tuntap.rst`, `netdevice(7)`).
//!
//! Everything here runs on the control path, when a port is created. The
//! data path uses only `readv`/`write` on the descriptor returned by
//! [`open_tap`]. Every `unsafe` block is one system call on memory we own.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// The clone device of the TUN/TAP driver.
const TUN_CLONE_DEV: &str = "/dev/net/tun";

/// An `ifreq` whose name is `ifname` and whose union is zero.
fn ifreq(ifname: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct (a name array and a union of
    // integers, sockaddrs and a pointer); all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name was checked to be at most IFNAMSIZ - 1 bytes, so the array
    // keeps its terminating NUL; `take` guards it regardless.
    for (d, s) in ifr
        .ifr_name
        .iter_mut()
        .zip(ifname.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    ifr
}

/// Open the clone device and attach it to the tap `ifname` (creating it
/// when it does not exist): `TUNSETIFF` with `IFF_TAP | IFF_NO_PI`, so each
/// read or write is exactly one Ethernet frame with no packet-info prefix.
/// The descriptor is non-blocking and close-on-exec (a child process must
/// never keep a device alive). Returns the descriptor and whether the device
/// is persistent (`IFF_PERSIST`: it existed before and outlives us).
pub(super) fn open_tap(ifname: &str) -> io::Result<(OwnedFd, bool)> {
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_CLONE_DEV)?;
    let fd = OwnedFd::from(file);
    let mut ifr = ifreq(ifname);
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: `fd` is an open descriptor of the tun clone device and `ifr` a
    // valid, initialised `ifreq` that outlives the call; TUNSETIFF reads and
    // writes only that struct.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut got = ifreq(ifname);
    // SAFETY: as above; TUNGETIFF writes the device's name and flags into `got`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut got) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNGETIFF filled `ifru_flags`, the union member read here.
    let flags = unsafe { got.ifr_ifru.ifru_flags };
    Ok((fd, i32::from(flags) & libc::IFF_PERSIST != 0))
}

/// A datagram socket, the handle the interface ioctls (`SIOCSIF*`) need.
fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` is a descriptor socket(2) just returned; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(s) })
}

/// One interface ioctl on `ifr`.
fn if_ioctl(req: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<()> {
    let s = ctl_socket()?;
    // SAFETY: `s` is an open socket and `ifr` a valid `ifreq` that outlives
    // the call; the SIOC[GS]IF* requests read and write only that struct.
    if unsafe { libc::ioctl(s.as_raw_fd(), req, ifr as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set the interface's MTU (`SIOCSIFMTU`).
pub(super) fn set_mtu(ifname: &str, mtu: u32) -> io::Result<()> {
    let mut ifr = ifreq(ifname);
    ifr.ifr_ifru.ifru_mtu =
        libc::c_int::try_from(mtu).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if_ioctl(libc::SIOCSIFMTU, &mut ifr)
}

/// Set the interface's Ethernet address (`SIOCSIFHWADDR`, family `ARPHRD_ETHER`).
pub(super) fn set_mac(ifname: &str, mac: [u8; 6]) -> io::Result<()> {
    let mut ifr = ifreq(ifname);
    // SAFETY: writing plain integer fields of the zeroed `sockaddr` member
    // of the union, the member SIOCSIFHWADDR reads.
    unsafe {
        ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
    }
    if_ioctl(libc::SIOCSIFHWADDR, &mut ifr)
}

/// Set `IFF_UP` on the interface, keeping its other flags
/// (`SIOCGIFFLAGS` then `SIOCSIFFLAGS`).
pub(super) fn bring_up(ifname: &str) -> io::Result<()> {
    let mut ifr = ifreq(ifname);
    if_ioctl(libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled `ifru_flags`, the member read and written here.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    if_ioctl(libc::SIOCSIFFLAGS, &mut ifr)
}

/// The interface's index, or None when no interface has that name
/// (in the calling thread's network namespace).
pub(super) fn ifindex(ifname: &str) -> Option<u32> {
    let c = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
