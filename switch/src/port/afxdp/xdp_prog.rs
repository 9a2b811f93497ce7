//! The XDP program on an interface: find it, remove stale ones, and keep a
//! per-process count of our sockets per interface so that the program is
//! removed when the last one closes.
//!
//! The program is switchd's own (`fastpath.rs`): loaded and attached by the
//! first socket of this process on an interface ([`program_for`], from the
//! port's bind), kept in a per-process registry by interface index, and
//! detached when the last socket there closes. What this module adds:
//! - before the first socket of this process binds an interface, any XDP
//!   program already there (left by a killed switchd, or by OVS: see
//!   BENCH.md "AF_XDP on veth") is detached in both driver and generic mode,
//!   so a stale program is replaced rather than making the attach fail;
//! - when the last socket of this process on an interface closes, whatever
//!   program is left there is detached, so switchd leaves the interface as it
//!   found it.
//!
//! Everything here runs on the control path (open / drop of a port), never
//! per packet. It must never detach a program while another socket of this
//! process still uses the interface (several queues = several sockets).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use super::fastpath::Fastpath;
use super::XdpMode;

use super::fastpath::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};

/// Sockets of this process per ifindex, and which (ifindex, queue) pairs are bound.
#[derive(Debug, Default)]
struct Users {
    per_if: BTreeMap<u32, usize>,
    bound: BTreeMap<(u32, u32), ()>,
    /// The program this process attached, per ifindex.
    progs: BTreeMap<u32, Arc<Fastpath>>,
}

static USERS: Mutex<Users> = Mutex::new(Users {
    per_if: BTreeMap::new(),
    bound: BTreeMap::new(),
    progs: BTreeMap::new(),
});

/// The program of this process on `ifindex`; when there is none yet, load
/// switchd's program with an offload table of `entries` entries and attach
/// it in `mode` (`Native` or `Generic`). Control path (bind).
pub fn program_for(ifindex: u32, mode: XdpMode, entries: u32) -> io::Result<Arc<Fastpath>> {
    let mut u = USERS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = u.progs.get(&ifindex) {
        return Ok(p.clone());
    }
    let p = Arc::new(Fastpath::load(ifindex, mode, entries)?);
    u.progs.insert(ifindex, p.clone());
    Ok(p)
}

/// The program this process attached to `ifindex`, if any (the offload
/// manager's handle on its maps).
pub fn fastpath(ifindex: u32) -> Option<Arc<Fastpath>> {
    let u = USERS.lock().unwrap_or_else(PoisonError::into_inner);
    u.progs.get(&ifindex).cloned()
}

/// Forget the program on `ifindex` (after the only socket there failed to
/// bind); it is detached when the last handle goes.
pub fn unload(ifindex: u32) {
    let p = {
        let mut u = USERS.lock().unwrap_or_else(PoisonError::into_inner);
        u.progs.remove(&ifindex)
    };
    drop(p);
}

/// The interface index of `ifname`, or None when there is no such interface
/// (in this network namespace).
pub fn ifindex(ifname: &str) -> Option<u32> {
    let c = CString::new(ifname).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// True when an interface with index `ifindex` exists.
pub fn ifindex_exists(ifindex: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let r = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    !r.is_null()
}

/// Ids of the XDP programs attached to `ifname`: `(driver mode, generic mode)`,
/// 0 meaning none. For operators ("which program is on this interface?") and tests.
pub fn xdp_program_ids(ifname: &str) -> io::Result<(u32, u32)> {
    let idx = ifindex(ifname).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {ifname}"),
        )
    })?;
    Ok((
        query(idx, XDP_FLAGS_DRV_MODE)?,
        query(idx, XDP_FLAGS_SKB_MODE)?,
    ))
}

fn query(ifindex: u32, mode: u32) -> io::Result<u32> {
    let Ok(i) = libc::c_int::try_from(ifindex) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let mut id = 0u32;
    // SAFETY: libbpf's bpf_xdp_query_id writes one u32 through the valid pointer.
    let r = unsafe { libxdp_sys::bpf_xdp_query_id(i, mode as _, &mut id) };
    if r < 0 {
        return Err(io::Error::from_raw_os_error(-r));
    }
    Ok(id)
}

/// Detach every XDP program from `ifindex`: first through libxdp (which also
/// unpins a multi-program dispatcher from bpffs), then whatever is left in
/// driver and generic mode through libbpf's netlink call.
pub fn detach_all(ifindex: u32) -> io::Result<()> {
    let Ok(i) = libc::c_int::try_from(ifindex) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: libxdp returns either a valid multiprog pointer, NULL, or an
    // error encoded in the pointer (checked with libxdp_get_error before
    // any use); a valid one is closed exactly once below.
    unsafe {
        let mp = libxdp_sys::xdp_multiprog__get_from_ifindex(i);
        if !mp.is_null() && libxdp_sys::libxdp_get_error(mp as *const _) == 0 {
            // Errors here are not final: the netlink detach below is.
            let _ = libxdp_sys::xdp_multiprog__detach(mp);
            libxdp_sys::xdp_multiprog__close(mp);
        }
    }
    for mode in [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE] {
        if query(ifindex, mode)? == 0 {
            continue;
        }
        // SAFETY: a NULL opts pointer is libbpf's documented default.
        let r = unsafe { libxdp_sys::bpf_xdp_detach(i, mode as _, std::ptr::null()) };
        if r < 0 {
            return Err(io::Error::from_raw_os_error(-r));
        }
    }
    Ok(())
}

/// One socket's claim on an interface queue. Creating the first claim on an
/// interface clears stale XDP programs from it; dropping the last one removes
/// the program this process attached.
#[derive(Debug)]
pub struct Claim {
    ifindex: u32,
    queue: u32,
    first: bool,
}

/// Why a claim was refused.
#[derive(Debug)]
pub enum ClaimError {
    /// This process already has a socket on that queue.
    Busy,
    /// A stale program could not be detached.
    Detach(io::Error),
}

impl Claim {
    /// Claim `(ifindex, queue)` for a new socket.
    pub fn new(ifindex: u32, queue: u32) -> Result<Claim, ClaimError> {
        let mut u = USERS.lock().unwrap_or_else(PoisonError::into_inner);
        if u.bound.contains_key(&(ifindex, queue)) {
            return Err(ClaimError::Busy);
        }
        let n = u.per_if.get(&ifindex).copied().unwrap_or(0);
        if n == 0 {
            detach_all(ifindex).map_err(ClaimError::Detach)?;
        }
        u.per_if.insert(ifindex, n + 1);
        u.bound.insert((ifindex, queue), ());
        Ok(Claim {
            ifindex,
            queue,
            first: n == 0,
        })
    }

    /// True when no other socket of this process was on the interface when
    /// this claim was made (so its program may be cleared after a failed attach).
    pub fn first(&self) -> bool {
        self.first
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut u = USERS.lock().unwrap_or_else(PoisonError::into_inner);
        u.bound.remove(&(self.ifindex, self.queue));
        let n = u.per_if.get(&self.ifindex).copied().unwrap_or(1) - 1;
        if n == 0 {
            u.per_if.remove(&self.ifindex);
            // Our program goes with the last socket (Fastpath's Drop detaches
            // it once no offload handle holds it); detach_all also catches
            // whatever a failed attach left. A vanished interface took its
            // program with it.
            let prog = u.progs.remove(&self.ifindex);
            drop(prog);
            if ifindex_exists(self.ifindex) {
                let _ = detach_all(self.ifindex);
            }
        } else {
            u.per_if.insert(self.ifindex, n);
        }
    }
}
