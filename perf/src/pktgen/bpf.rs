//! The few bpf(2) commands the generator needs, through `libc::syscall`:
//! create an array map, load an XDP program, attach it to an interface with
//! a BPF link, read a map, and run a program with `BPF_PROG_TEST_RUN` in
//! live-frames mode (kernel >= 5.18, Documentation/bpf/bpf_prog_run.rst:
//! "Running XDP programs in 'live frame mode'").
//!
//! Every kernel object is held by an [`Fd`] that closes it on drop; an XDP
//! program attached through a link is detached when the link's fd closes,
//! so a generator that exits or is killed never leaves a program behind
//! (no `ip link set dev X xdp off` needed). `union bpf_attr` layouts are
//! written out per command as `#[repr(C)]` structs matching
//! include/uapi/linux/bpf.h; the kernel accepts a shorter attr than its own
//! as long as the missing tail would be zero.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::insn::Insn;

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_LINK_CREATE: libc::c_int = 28;

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// `BPF_PROG_TEST_RUN` flag: send the frames for real (XDP_TX/REDIRECT transmit).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `XDP_FLAGS_SKB_MODE` (generic XDP).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE` (native XDP).
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// An owned kernel object (map, program or link).
pub type Fd = OwnedFd;

fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] struct laid out
    // as the prefix of `union bpf_attr` for `cmd`; the kernel reads (and for
    // some commands writes) at most size_of::<T>() bytes of it. Pointers inside
    // it point to buffers the caller keeps alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: libc::c_long) -> io::Result<Fd> {
    let raw = RawFd::try_from(r).map_err(|_| io::Error::other("bpf(2) returned a bad fd"))?;
    // SAFETY: a successful bpf(2) object-creating command returns a new file
    // descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// A map of `entries` u64 counters, one set per CPU when `percpu`.
pub fn counter_map(entries: u32, percpu: bool) -> io::Result<Fd> {
    let mut a = MapCreateAttr {
        map_type: if percpu {
            BPF_MAP_TYPE_PERCPU_ARRAY
        } else {
            BPF_MAP_TYPE_ARRAY
        },
        key_size: 4,
        value_size: 8,
        max_entries: entries,
        map_flags: 0,
    };
    fd_from(sys_bpf(BPF_MAP_CREATE, &mut a)?)
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Number of possible CPUs (the kernel's per-CPU value count), from
/// /sys/devices/system/cpu/possible (`0-N` or a list).
pub fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in s.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.parse().map_err(|_| io::Error::other("bad cpu list"))?;
        let b: usize = b.parse().map_err(|_| io::Error::other("bad cpu list"))?;
        n = n.max(b + 1).max(a + 1);
    }
    Ok(n)
}

/// Read counter `key` of a map made by [`counter_map`]: the value, or the
/// sum over CPUs for a per-CPU map (`ncpus` = [`possible_cpus`]; 1 otherwise).
pub fn read_counter(map: &Fd, key: u32, ncpus: usize) -> io::Result<u64> {
    let mut vals = vec![0u64; ncpus.max(1)];
    let mut a = MapElemAttr {
        map_fd: fd_u32(map)?,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: vals.as_mut_ptr() as u64,
        flags: 0,
    };
    sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut a)?;
    Ok(vals.iter().sum())
}

fn fd_u32(fd: &Fd) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("negative fd"))
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// Load an XDP program. On a verifier rejection the error carries the
/// verifier's log.
pub fn load_xdp(name: &str, insns: &[Insn]) -> io::Result<Fd> {
    let license = CString::new("GPL").map_err(io::Error::other)?;
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let load = |log: &mut [u8], level: u32| {
        let mut a = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: level,
            log_size: u32::try_from(log.len()).unwrap_or(0),
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name,
        };
        sys_bpf(BPF_PROG_LOAD, &mut a)
    };
    match load(&mut [], 0) {
        Ok(r) => fd_from(r),
        Err(e) => {
            let mut log = vec![0u8; 64 * 1024];
            let _ = load(&mut log, 1);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(io::Error::new(
                e.kind(),
                format!(
                    "loading XDP program {name}: {e}; verifier log:\n{}",
                    String::from_utf8_lossy(&log[..end])
                ),
            ))
        }
    }
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Attach an XDP program to `ifindex` (in the calling thread's network
/// namespace) with `flags` ([`XDP_FLAGS_DRV_MODE`] or [`XDP_FLAGS_SKB_MODE`]).
/// Detached when the returned link is dropped.
pub fn attach_xdp(prog: &Fd, ifindex: u32, flags: u32) -> io::Result<Fd> {
    let mut a = LinkCreateAttr {
        prog_fd: fd_u32(prog)?,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    fd_from(sys_bpf(BPF_LINK_CREATE, &mut a)?)
}

#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct xdp_md` as the test run's input context.
#[repr(C)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Run `prog` on `frame` `repeat` times in live-frames mode as if received
/// on `ifindex`, queue 0: XDP_TX really transmits out of that interface.
/// `batch` frames are processed between flushes (kernel default 64, max 256).
/// Returns when all were run, or with `ErrorKind::Interrupted` when a signal
/// arrived (the kernel checks between batches).
pub fn run_live(prog: &Fd, frame: &[u8], ifindex: u32, repeat: u32, batch: u32) -> io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(io::Error::other)?;
    let mut ctx = XdpMd {
        data: 0,
        data_end: len,
        data_meta: 0,
        ingress_ifindex: ifindex,
        rx_queue_index: 0,
        egress_ifindex: 0,
    };
    let mut a = TestRunAttr {
        prog_fd: fd_u32(prog)?,
        retval: 0,
        data_size_in: len,
        data_size_out: 0,
        data_in: frame.as_ptr() as u64,
        data_out: 0,
        repeat,
        duration: 0,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_size_out: 0,
        ctx_in: &mut ctx as *mut XdpMd as u64,
        ctx_out: 0,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        cpu: 0,
        batch_size: batch,
        _pad: 0,
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut a).map(drop)
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name:?} in this network namespace"),
        ))
    } else {
        Ok(i)
    }
}

/// Move the calling thread into network namespace `name` (a file in
/// /run/netns, as `ip netns add` makes) or `path` when it contains a '/'.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let path = if name.contains('/') {
        name.to_string()
    } else {
        format!("/run/netns/{name}")
    };
    let f = std::fs::File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {path}: {e}")))?;
    // SAFETY: `f` is an open namespace file; setns only reads the fd.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns {path}: {e}")));
    }
    Ok(())
}
