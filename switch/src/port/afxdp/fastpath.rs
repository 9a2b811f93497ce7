//! switchd's own XDP program on an AF_XDP port's interface, and its maps.
//!
//! The program (`switch/bpf/xdp_fastpath.c`, compiled by `build.rs` with
//! `clang -target bpf` and embedded here) replaces libxdp's default AF_XDP
//! redirect program: every frame it does not find in its offload table
//! (`fp_flows`) goes to the AF_XDP socket of its rx queue through the
//! `xsks_map` XSKMAP, or to the kernel stack when that queue has no socket,
//! exactly as libxdp's `xsk_def_prog` does. So with an empty offload table
//! the data path is the one it always was. A frame whose exact key is in
//! `fp_flows` gets that entry's actions (set Ethernet addresses, set the
//! IPv4 TTL) and is redirected in the kernel to the output interface through
//! the `fp_ports` DEVMAP, never reaching userspace (see `offload.rs` for
//! which megaflows are offloaded, and docs/architecture.md "XDP offload").
//!
//! One [`Fastpath`] per interface: loaded and attached (driver or generic
//! mode, `bpf_xdp_attach`) by the first socket this process binds there,
//! detached and closed with the last one (`xdp_prog::Claim`). Sockets are
//! created with `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD` and inserted in
//! `xsks_map` at their queue id; the kernel removes a socket from the map
//! when it closes (net/xdp/xsk.c `xsk_delete_from_maps`).
//!
//! Everything here is control path: map updates and reads are syscalls,
//! made by the control thread, never per packet by a polling thread.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use super::XdpMode;

/// The compiled program (build.rs).
pub static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdp_fastpath.o"));

/// `XDP_FLAGS_UPDATE_IF_NOEXIST` (include/uapi/linux/if_link.h).
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
/// `XDP_FLAGS_SKB_MODE`.
pub(super) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`.
pub(super) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `BPF_ANY` (include/uapi/linux/bpf.h).
const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`.
const BPF_NOEXIST: u64 = 1;

/// Mask slots of the program's tuple space search (`FP_MAX_MASKS`).
pub const MAX_MASKS: u32 = 8;

/// Default size of the offload table (`xdp-offload-entries`).
pub const DEFAULT_OFFLOAD_ENTRIES: u32 = 8192;
/// Largest offload table accepted.
pub const MAX_OFFLOAD_ENTRIES: u32 = 1 << 20;

/// The key of `fp_flows` (`struct fp_key` in xdp_fastpath.c): what the
/// program extracts from an untagged IPv4 frame, ANDed with a mask of
/// `fp_masks` whose slot goes in `pad[0]`. Multi-byte header fields are
/// kept in network byte order, as on the wire. The same struct is a mask.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FpKey {
    /// Ingress interface index.
    pub ifindex: u32,
    /// Ethernet destination.
    pub dl_dst: [u8; 6],
    /// Ethernet source.
    pub dl_src: [u8; 6],
    /// Ethertype (network order).
    pub dl_type: [u8; 2],
    /// IP protocol.
    pub nw_proto: u8,
    /// IPv4 TOS byte (DSCP and ECN, as FlowKey's `nw_tos`).
    pub nw_tos: u8,
    /// IPv4 TTL.
    pub nw_ttl: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// IPv4 source (network order).
    pub nw_src: [u8; 4],
    /// IPv4 destination (network order).
    pub nw_dst: [u8; 4],
    /// TCP/UDP/SCTP source port, or ICMP type (network order).
    pub tp_src: [u8; 2],
    /// TCP/UDP/SCTP destination port, or ICMP code (network order).
    pub tp_dst: [u8; 2],
}

/// `FP_SET_ETH_SRC`.
pub const FP_SET_ETH_SRC: u8 = 1;
/// `FP_SET_ETH_DST`.
pub const FP_SET_ETH_DST: u8 = 2;
/// `FP_SET_TTL`.
pub const FP_SET_TTL: u8 = 4;

/// The value of `fp_flows` (`struct fp_action`): what to do with a hit,
/// and the hits so far (the program adds to them atomically).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpAction {
    /// Output interface (a key of `fp_ports`).
    pub out_ifindex: u32,
    /// `FP_SET_*` bits.
    pub flags: u8,
    /// New TTL when `FP_SET_TTL`.
    pub ttl: u8,
    /// New Ethernet source when `FP_SET_ETH_SRC`.
    pub eth_src: [u8; 6],
    /// New Ethernet destination when `FP_SET_ETH_DST`.
    pub eth_dst: [u8; 6],
    /// Zero.
    pub pad: [u8; 6],
    /// Frames forwarded by this entry.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

const _: () = assert!(std::mem::size_of::<FpKey>() == 36);
const _: () = assert!(std::mem::size_of::<FpAction>() == 40);
const _: () = assert!(std::mem::offset_of!(FpAction, packets) == 24);
const _: () = assert!(std::mem::offset_of!(FpKey, nw_src) == 24);

/// The program's per-CPU counters (`fp_stats`), summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpCounters {
    /// Frames forwarded in the kernel by an offload entry.
    pub hit: u64,
    /// Parsed frames with no entry (to userspace).
    pub miss: u64,
    /// Frames the key does not describe (to userspace).
    pub unparsed: u64,
    /// Entry found but TTL <= 1 (to userspace, which sends the ICMP error).
    pub ttl: u64,
    /// Entry found but its output not in `fp_ports` (to userspace).
    pub no_port: u64,
    /// `bpf_redirect_map` to the output refused.
    pub redirect_fail: u64,
}

/// The program loaded and attached on one interface.
#[derive(Debug)]
pub struct Fastpath {
    obj: NonNull<libxdp_sys::bpf_object>,
    ifindex: u32,
    mode: XdpMode,
    prog_id: u32,
    xsks: RawFd,
    flows: RawFd,
    ports: RawFd,
    stats: RawFd,
    masks: RawFd,
    entries: u32,
}

// SAFETY: the object pointer is only closed (once, in Drop); the map fds
// are used for bpf(2) map syscalls, which the kernel serialises.
unsafe impl Send for Fastpath {}
// SAFETY: as above: &self methods only make map syscalls on the fds.
unsafe impl Sync for Fastpath {}

fn err(what: &str, code: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(code.abs());
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Fastpath {
    /// Load the program with an offload table of `entries` entries and
    /// attach it to `ifindex` in `mode` (`Native`: driver mode; `Generic`:
    /// skb mode). Fails when a program is already attached there.
    pub fn load(ifindex: u32, mode: XdpMode, entries: u32) -> io::Result<Fastpath> {
        let flags = match mode {
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
            _ => XDP_FLAGS_DRV_MODE,
        };
        let idx = libc::c_int::try_from(ifindex).map_err(|_| err("ifindex", libc::EINVAL))?;
        // SAFETY: OBJECT is a valid buffer for its length; a NULL opts
        // pointer is libbpf's default. The result is checked for NULL.
        let raw = unsafe {
            libxdp_sys::bpf_object__open_mem(OBJECT.as_ptr().cast(), OBJECT.len(), std::ptr::null())
        };
        let obj = NonNull::new(raw).ok_or_else(|| {
            let e = io::Error::last_os_error();
            io::Error::new(e.kind(), format!("opening the XDP program object: {e}"))
        })?;
        // From here on `fp` owns the object: an error closes it (Drop).
        let mut fp = Fastpath {
            obj,
            ifindex,
            mode: if flags == XDP_FLAGS_SKB_MODE {
                XdpMode::Generic
            } else {
                XdpMode::Native
            },
            prog_id: 0,
            xsks: -1,
            flows: -1,
            ports: -1,
            stats: -1,
            masks: -1,
            entries,
        };
        // SAFETY: `obj` is a valid open object; names are NUL-terminated.
        unsafe {
            let m = libxdp_sys::bpf_object__find_map_by_name(obj.as_ptr(), c"fp_flows".as_ptr());
            if m.is_null() {
                return Err(err("the XDP object has no fp_flows map", libc::ENOENT));
            }
            let r = libxdp_sys::bpf_map__set_max_entries(m, entries.max(1));
            if r < 0 {
                return Err(err("sizing the offload table", r));
            }
            let r = libxdp_sys::bpf_object__load(obj.as_ptr());
            if r < 0 {
                return Err(err("loading the XDP program (verifier)", r));
            }
        }
        fp.xsks = fp.map_fd(c"xsks_map")?;
        fp.flows = fp.map_fd(c"fp_flows")?;
        fp.ports = fp.map_fd(c"fp_ports")?;
        fp.stats = fp.map_fd(c"fp_stats")?;
        fp.masks = fp.map_fd(c"fp_masks")?;
        // SAFETY: valid object, NUL-terminated name; checked for NULL.
        let prog = unsafe {
            libxdp_sys::bpf_object__find_program_by_name(obj.as_ptr(), c"xdp_fastpath".as_ptr())
        };
        if prog.is_null() {
            return Err(err(
                "the XDP object has no xdp_fastpath program",
                libc::ENOENT,
            ));
        }
        // SAFETY: `prog` belongs to the loaded object.
        let prog_fd = unsafe { libxdp_sys::bpf_program__fd(prog) };
        if prog_fd < 0 {
            return Err(err("the XDP program has no fd", prog_fd));
        }
        // SAFETY: plain netlink attach of a loaded program; NULL opts is the default.
        let r = unsafe {
            libxdp_sys::bpf_xdp_attach(
                idx,
                prog_fd,
                flags | XDP_FLAGS_UPDATE_IF_NOEXIST,
                std::ptr::null(),
            )
        };
        if r < 0 {
            return Err(err(
                &format!("attaching the XDP program in {} mode", fp.mode.name()),
                r,
            ));
        }
        let mut id = 0u32;
        // SAFETY: writes one u32 through a valid pointer.
        let r = unsafe { libxdp_sys::bpf_xdp_query_id(idx, flags as _, &mut id) };
        if r < 0 || id == 0 {
            // Detach what we attached before failing.
            // SAFETY: as above.
            unsafe { libxdp_sys::bpf_xdp_detach(idx, flags, std::ptr::null()) };
            return Err(err("querying the attached XDP program", r.min(-libc::EIO)));
        }
        fp.prog_id = id;
        Ok(fp)
    }

    fn map_fd(&self, name: &CStr) -> io::Result<RawFd> {
        // SAFETY: valid loaded object; NUL-terminated name.
        let fd = unsafe {
            libxdp_sys::bpf_object__find_map_fd_by_name(self.obj.as_ptr(), name.as_ptr())
        };
        if fd < 0 {
            return Err(err(&format!("XDP map {name:?}"), fd));
        }
        Ok(fd)
    }

    /// The mode the program is attached in (`Native` or `Generic`).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The kernel's id of the attached program.
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// The interface.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Size of the offload table.
    pub fn capacity(&self) -> u32 {
        self.entries
    }

    /// Redirect queue `queue`'s frames to AF_XDP socket `fd`
    /// (`xsk_socket__update_xskmap`'s map update).
    pub fn add_socket(&self, queue: u32, fd: RawFd) -> io::Result<()> {
        let v: u32 = u32::try_from(fd).map_err(|_| err("socket fd", libc::EBADF))?;
        self.update(
            self.xsks,
            &queue,
            &v,
            BPF_ANY,
            "inserting the socket in xsks_map",
        )
    }

    /// Put `mask` in mask slot `slot` (< [`MAX_MASKS`]); `None` frees the
    /// slot. Entries of a freed slot must have been removed first.
    pub fn set_mask(&self, slot: u32, mask: Option<&FpKey>) -> io::Result<()> {
        let m = match mask {
            Some(m) => FpKey {
                pad: [0, 1, 0],
                ..*m
            },
            None => FpKey::default(),
        };
        self.update(self.masks, &slot, &m, BPF_ANY, "setting an offload mask")
    }

    /// Make `ifindex` a possible output of offload entries.
    pub fn add_output(&self, ifindex: u32) -> io::Result<()> {
        self.update(
            self.ports,
            &ifindex,
            &ifindex,
            BPF_ANY,
            "adding the output to fp_ports",
        )
    }

    /// Insert an offload entry. `Ok(false)` when the table is full (E2BIG)
    /// or the key is already there.
    pub fn insert(&self, key: &FpKey, act: &FpAction) -> io::Result<bool> {
        match self.update(
            self.flows,
            key,
            act,
            BPF_NOEXIST,
            "inserting an offload entry",
        ) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::E2BIG | libc::EEXIST)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn update<K, V>(&self, fd: RawFd, k: &K, v: &V, flags: u64, what: &str) -> io::Result<()> {
        // SAFETY: key and value point to live values of the map's key and
        // value sizes (the types mirror the C structs, sizes asserted).
        let r = unsafe {
            libxdp_sys::bpf_map_update_elem(
                fd,
                (k as *const K).cast(),
                (v as *const V).cast(),
                flags as _,
            )
        };
        if r < 0 {
            if r == -libc::E2BIG || r == -libc::EEXIST {
                return Err(io::Error::from_raw_os_error(-r));
            }
            return Err(err(what, r));
        }
        Ok(())
    }

    /// Every offload entry with its counters.
    pub fn entries(&self) -> Vec<(FpKey, FpAction)> {
        let mut out = Vec::new();
        let mut prev: Option<FpKey> = None;
        loop {
            let mut next = FpKey::default();
            let pk = prev
                .as_ref()
                .map_or(std::ptr::null(), |k| (k as *const FpKey).cast());
            // SAFETY: `pk` is NULL (first key) or a valid key; `next` has the key size.
            let r = unsafe {
                libxdp_sys::bpf_map_get_next_key(self.flows, pk, (&mut next as *mut FpKey).cast())
            };
            if r < 0 {
                break;
            }
            let mut v = FpAction::default();
            // SAFETY: valid key; `v` has the value size.
            let r = unsafe {
                libxdp_sys::bpf_map_lookup_elem(
                    self.flows,
                    (&next as *const FpKey).cast(),
                    (&mut v as *mut FpAction).cast(),
                )
            };
            if r == 0 {
                out.push((next, v));
            }
            prev = Some(next);
            if out.len() > self.entries as usize + 1 {
                break;
            }
        }
        out
    }

    /// The current counters of one entry (None: not there).
    pub fn entry(&self, key: &FpKey) -> Option<FpAction> {
        let mut v = FpAction::default();
        // SAFETY: valid key; `v` has the value size.
        let r = unsafe {
            libxdp_sys::bpf_map_lookup_elem(
                self.flows,
                (key as *const FpKey).cast(),
                (&mut v as *mut FpAction).cast(),
            )
        };
        (r == 0).then_some(v)
    }

    /// Delete one entry, returning its last counters (None: not there).
    /// Frames the program is forwarding meanwhile may add a few counts after
    /// the read; they are lost (the window is one syscall).
    pub fn remove(&self, key: &FpKey) -> Option<FpAction> {
        let last = self.entry(key)?;
        // SAFETY: valid key pointer of the key size.
        unsafe { libxdp_sys::bpf_map_delete_elem(self.flows, (key as *const FpKey).cast()) };
        Some(last)
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> FpCounters {
        let ncpu = possible_cpus();
        let mut vals = vec![0u64; ncpu];
        let mut sum = [0u64; 6];
        for (i, s) in sum.iter_mut().enumerate() {
            let k = i as u32;
            // SAFETY: a per-CPU array's lookup writes one u64 per possible
            // CPU; `vals` has that many.
            let r = unsafe {
                libxdp_sys::bpf_map_lookup_elem(
                    self.stats,
                    (&k as *const u32).cast(),
                    vals.as_mut_ptr().cast(),
                )
            };
            if r == 0 {
                *s = vals.iter().sum();
            }
        }
        FpCounters {
            hit: sum[0],
            miss: sum[1],
            unparsed: sum[2],
            ttl: sum[3],
            no_port: sum[4],
            redirect_fail: sum[5],
        }
    }
}

impl Drop for Fastpath {
    fn drop(&mut self) {
        if self.prog_id != 0 {
            let flags = match self.mode {
                XdpMode::Generic => XDP_FLAGS_SKB_MODE,
                _ => XDP_FLAGS_DRV_MODE,
            };
            if let Ok(idx) = libc::c_int::try_from(self.ifindex) {
                let mut id = 0u32;
                // SAFETY: writes one u32 through a valid pointer.
                let r = unsafe { libxdp_sys::bpf_xdp_query_id(idx, flags as _, &mut id) };
                // Only ours: never detach a program someone else attached since.
                if r == 0 && id == self.prog_id {
                    // SAFETY: netlink detach; NULL opts is the default.
                    unsafe { libxdp_sys::bpf_xdp_detach(idx, flags, std::ptr::null()) };
                }
            }
        }
        // SAFETY: the object was opened by us and is closed exactly once;
        // it closes the program and map fds.
        unsafe { libxdp_sys::bpf_object__close(self.obj.as_ptr()) };
    }
}

/// Possible CPUs (the per-CPU map value count), from
/// /sys/devices/system/cpu/possible ("0-1", "0,2-3").
fn possible_cpus() -> usize {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut max = 0usize;
    for part in s.trim().split(',') {
        let hi = part.rsplit('-').next().unwrap_or("0");
        if let Ok(n) = hi.trim().parse::<usize>() {
            max = max.max(n);
        }
    }
    max + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn possible_cpus_at_least_one() {
        assert!(possible_cpus() >= 1);
    }

    #[test]
    fn object_is_embedded_bpf_elf() {
        // ELF magic, 64-bit, machine EM_BPF (247).
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(OBJECT[4], 2);
        let machine = u16::from_le_bytes([OBJECT[18], OBJECT[19]]);
        assert_eq!(machine, 247);
    }
}
