//! Guest memory as the back-end sees it: the regions of one
//! `VHOST_USER_SET_MEM_TABLE`, each mapped from the descriptor the front-end
//! sent, and the two address translations the rings need.
//!
//! Input is the memory-table payload and its descriptors; output is a
//! [`GuestMemory`] that maps guest-physical addresses (descriptors,
//! virtio 1.1 §2.6.5) and front-end virtual addresses (ring addresses in
//! `SET_VRING_ADDR`, vhost-user spec) to host pointers, with a bounds check
//! over the whole `[addr, addr + len)` range. Regions are mapped with
//! `mmap_offset` honoured (DPDK and QEMU map `mmap_offset + size` from file
//! offset 0, rounded to the file's page size, and add the offset) and
//! unmapped when the last reference drops, which is only after every polling
//! thread has moved to a newer device view (see `mod.rs`). Nothing here may
//! hand out a pointer outside a mapping.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::msg::Msg;

/// The most regions a table may hold (vhost-user `VHOST_MEMORY_BASELINE_NREGIONS`).
pub const MAX_REGIONS: usize = 8;

/// One mapped region.
#[derive(Debug)]
struct Region {
    gpa: u64,
    size: u64,
    uaddr: u64,
    /// Host address of guest-physical `gpa`.
    host: *mut u8,
    map_base: *mut libc::c_void,
    map_len: usize,
}

/// A mapped memory table.
#[derive(Debug)]
pub struct GuestMemory {
    regions: Vec<Region>,
}

// SAFETY: the mappings are plain shared memory owned by this value; the raw
// pointers are only dereferenced through the bounds-checked accessors, from
// whichever single thread holds the device view at a time.
unsafe impl Send for GuestMemory {}
// SAFETY: as above; no interior mutability in GuestMemory itself.
unsafe impl Sync for GuestMemory {}

/// Why a memory table was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// The payload is shorter than its region count says.
    #[error("memory table payload too short")]
    Short,
    /// More regions than the protocol allows, or fewer descriptors than regions.
    #[error("memory table: {regions} regions with {fds} descriptors (at most {MAX_REGIONS})")]
    Count {
        /// Regions announced.
        regions: usize,
        /// Descriptors received.
        fds: usize,
    },
    /// A region whose size is zero or whose end overflows.
    #[error("memory region {0}: bad size or address range")]
    Range(usize),
    /// mmap failed.
    #[error("mapping memory region {0}: {1}")]
    Map(usize, io::Error),
}

impl GuestMemory {
    /// Map the regions of a `SET_MEM_TABLE` message (payload `{nregions: u32,
    /// padding: u32, regions[nregions]: {gpa, size, uaddr, mmap_offset}: u64}`).
    pub fn from_msg(msg: &Msg) -> Result<GuestMemory, MemError> {
        let n = msg.u32_at(0).ok_or(MemError::Short)? as usize;
        if n == 0 || n > MAX_REGIONS || msg.fds.len() != n {
            return Err(MemError::Count {
                regions: n,
                fds: msg.fds.len(),
            });
        }
        let mut mem = GuestMemory {
            regions: Vec::with_capacity(n),
        };
        for i in 0..n {
            let off = 8 + i * 32;
            let f = |k: usize| msg.u64_at(off + k * 8).ok_or(MemError::Short);
            let (gpa, size, uaddr, mmap_offset) = (f(0)?, f(1)?, f(2)?, f(3)?);
            if size == 0
                || gpa.checked_add(size).is_none()
                || uaddr.checked_add(size).is_none()
                || size > isize::MAX as u64 / 2
                || mmap_offset > isize::MAX as u64 / 2
            {
                return Err(MemError::Range(i));
            }
            let (base, len) =
                map(&msg.fds[i], size, mmap_offset).map_err(|e| MemError::Map(i, e))?;
            mem.regions.push(Region {
                gpa,
                size,
                uaddr,
                // SAFETY: base maps at least mmap_offset + size bytes.
                host: unsafe { base.cast::<u8>().add(mmap_offset as usize) },
                map_base: base,
                map_len: len,
            });
        }
        Ok(mem)
    }

    /// Map anonymous-file memory for tests and the in-process front-end: the
    /// same shape as a received table, from descriptors we hold.
    pub fn from_regions(
        regions: &[(u64, u64, u64, u64, &OwnedFd)],
    ) -> Result<GuestMemory, MemError> {
        let mut mem = GuestMemory {
            regions: Vec::new(),
        };
        for (i, &(gpa, size, uaddr, off, fd)) in regions.iter().enumerate() {
            if size == 0 || gpa.checked_add(size).is_none() {
                return Err(MemError::Range(i));
            }
            let (base, len) = map(fd, size, off).map_err(|e| MemError::Map(i, e))?;
            mem.regions.push(Region {
                gpa,
                size,
                uaddr,
                // SAFETY: base maps at least off + size bytes.
                host: unsafe { base.cast::<u8>().add(off as usize) },
                map_base: base,
                map_len: len,
            });
        }
        Ok(mem)
    }

    /// Host pointer of guest-physical `[gpa, gpa + len)`, or None when the
    /// range is not inside one region. `len` 0 is refused.
    #[inline(always)]
    pub fn gpa(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            let rel = gpa.wrapping_sub(r.gpa);
            // rel < size and len <= size - rel: the range is inside, no overflow.
            if rel < r.size && len != 0 && len <= r.size - rel {
                // SAFETY: rel + len <= size, inside the mapping.
                return Some(unsafe { r.host.add(rel as usize) });
            }
        }
        None
    }

    /// Host pointer of front-end virtual `[ua, ua + len)` (ring addresses).
    pub fn uaddr(&self, ua: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            let rel = ua.wrapping_sub(r.uaddr);
            if rel < r.size && len != 0 && len <= r.size - rel {
                // SAFETY: rel + len <= size, inside the mapping.
                return Some(unsafe { r.host.add(rel as usize) });
            }
        }
        None
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// True with no regions.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
}

fn map(fd: &OwnedFd, size: u64, offset: u64) -> io::Result<(*mut libc::c_void, usize)> {
    // Hugetlbfs mappings must be a multiple of the huge page size, which the
    // file reports as its block size (DPDK's vhost library aligns the same way).
    // SAFETY: fstat writes into a zeroed stat struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid open descriptor; st is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let page = (st.st_blksize as u64).clamp(4096, 1 << 30);
    let want = offset
        .checked_add(size)
        .and_then(|l| l.checked_add(page - 1))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?
        & !(page - 1);
    let len = usize::try_from(want)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
    // SAFETY: a fresh shared mapping of a descriptor; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok((p, len))
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        for r in &self.regions {
            // SAFETY: map_base/map_len is a mapping this value created and nobody
            // else references (the last device view holding it is gone).
            unsafe {
                libc::munmap(r.map_base, r.map_len);
            }
        }
    }
}
