//! A UMEM that several AF_XDP ports of one polling thread can share.
//!
//! One memory region of 4 KiB frames is registered with the kernel once
//! (`XDP_UMEM_REG`, kernel af_xdp.rst "UMEM"). Each port opened on it takes a
//! disjoint set of frames at open time and gives them back when it is
//! dropped (after its socket is gone, so the kernel holds none of them). The
//! free-frame list is behind a mutex touched only at open and close; on the
//! hot path every port works on its own frames, lock-free.
//!
//! Sockets on different interfaces or queues sharing a UMEM each get their
//! own fill and completion rings (af_xdp.rst "XDP_SHARED_UMEM bind flag":
//! since Linux 5.10 a UMEM may be shared across queue ids and netdevs, one
//! fill/completion ring pair per unique (netdev, queue) pair); libxdp's
//! `xsk_socket__create_shared` sets that up and xsk-rs's `Socket::new`
//! returns the new pair.
//!
//! What sharing buys today: one registration and one mapping per thread
//! instead of one per port. What it does not buy yet: zero-copy forwarding
//! between two AF_XDP ports. Frames are copied into `Packet` buffers at rx and
//! out of them at tx (see the `afxdp` module documentation).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use xsk_rs::config::{FrameSize, QueueSize, UmemConfig};
use xsk_rs::umem::frame::FrameDesc;
use xsk_rs::umem::Umem;

use super::AfxdpError;

/// Size of one UMEM frame: a page, so a 1500-byte MTU frame plus XDP's
/// 256-byte headroom fits with room to spare, and so is any
/// [`crate::packet::buf::MAX_FRAME`] frame.
pub const FRAME_SIZE: u32 = 4096;

/// A UMEM shared by the AF_XDP ports of one polling thread (cheap to clone).
#[derive(Clone, Debug)]
pub struct AfxdpUmem {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    umem: Umem,
    free: Mutex<Vec<FrameDesc>>,
    frames: u32,
    fill_descs: u32,
    comp_descs: u32,
}

impl AfxdpUmem {
    /// A UMEM of `frames` frames whose sockets get fill rings of `fill_descs`
    /// and completion rings of `comp_descs` entries (powers of two).
    pub fn new(frames: u32, fill_descs: u32, comp_descs: u32) -> Result<AfxdpUmem, AfxdpError> {
        let bad = |what: String| AfxdpError::Umem(what);
        let n =
            NonZeroU32::new(frames).ok_or_else(|| bad("a UMEM needs at least one frame".into()))?;
        let fq = QueueSize::new(fill_descs).map_err(|e| bad(format!("fill ring: {e}")))?;
        let cq = QueueSize::new(comp_descs).map_err(|e| bad(format!("completion ring: {e}")))?;
        let fs = FrameSize::new(FRAME_SIZE).map_err(|e| bad(format!("frame size: {e}")))?;
        let config = UmemConfig::builder()
            .frame_size(fs)
            .fill_queue_size(fq)
            .comp_queue_size(cq)
            .build()
            .map_err(|e| bad(format!("UMEM config: {e}")))?;
        let (umem, descs) = Umem::new(config, n, false).map_err(|e| {
            bad(format!(
                "creating a UMEM of {frames} frames: {e}{}",
                source_text(&e)
            ))
        })?;
        Ok(AfxdpUmem {
            inner: Arc::new(Shared {
                umem,
                free: Mutex::new(descs),
                frames,
                fill_descs,
                comp_descs,
            }),
        })
    }

    /// Frames not taken by any port.
    pub fn free_frames(&self) -> usize {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Frames in the UMEM.
    pub fn frames(&self) -> u32 {
        self.inner.frames
    }

    /// Entries of each socket's fill ring.
    pub fn fill_descs(&self) -> u32 {
        self.inner.fill_descs
    }

    /// Entries of each socket's completion ring.
    pub fn comp_descs(&self) -> u32 {
        self.inner.comp_descs
    }

    /// The xsk-rs UMEM (socket creation and frame access).
    pub(super) fn umem(&self) -> &Umem {
        &self.inner.umem
    }

    /// Take `n` frames for a port, or None when fewer are free.
    pub(super) fn take(&self, n: usize) -> Option<Vec<FrameDesc>> {
        let mut f = self
            .inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if f.len() < n {
            return None;
        }
        let at = f.len() - n;
        Some(f.split_off(at))
    }

    /// Give frames back (their port's socket must be deleted already).
    pub(super) fn give_back(&self, frames: Vec<FrameDesc>) {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(frames);
    }
}

/// The io::Error behind an xsk-rs error, as text (xsk-rs's Display omits it).
pub(super) fn source_text(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(s) => format!(": {s}"),
        None => String::new(),
    }
}
