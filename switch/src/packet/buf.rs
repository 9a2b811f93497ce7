//! `Packet`: an owned frame buffer with headroom, recycled through a
//! per-thread `PacketPool` so the hot path never allocates.
//!
//! Headroom lets `push_vlan` and tunnel encapsulation grow the frame at the
//! front in place. Buffers are allocated once (pool creation) and then only
//! move between the pool, rx batches, tx queues and back.

use crate::datapath::TunnelMeta;

/// Bytes reserved in front of the frame for pushed headers (VLAN tags, VXLAN's 50-byte outer headers).
pub const HEADROOM: usize = 128;
/// Largest frame a buffer holds (an MTU-9000 jumbo frame does not fit; MTU 1500 + tags + encap does).
pub const MAX_FRAME: usize = 2048;
/// Total buffer size.
pub const BUF_CAP: usize = HEADROOM + MAX_FRAME;

/// One frame.
pub struct Packet {
    buf: Box<[u8; BUF_CAP]>,
    head: u16,
    len: u16,
    /// Tunnel metadata (OVS `pkt_metadata.tunnel`): set by a tunnel port on
    /// decapsulation (read into the `FlowKey`), and by the datapath on output
    /// after `SetTunnel` (read by the tunnel port's encapsulation). Cleared
    /// whenever the buffer is refilled or returned to a pool.
    tunnel: Option<TunnelMeta>,
}

impl core::fmt::Debug for Packet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Packet")
            .field("head", &self.head)
            .field("len", &self.len)
            .finish()
    }
}

impl Default for Packet {
    fn default() -> Self {
        Packet::new()
    }
}

impl Clone for Packet {
    fn clone(&self) -> Self {
        let mut p = Packet::new();
        p.buf.copy_from_slice(&self.buf[..]);
        p.head = self.head;
        p.len = self.len;
        p.tunnel = self.tunnel;
        p
    }
}

impl Packet {
    /// An empty buffer (allocates; call at pool creation, not per packet).
    pub fn new() -> Packet {
        Packet {
            buf: Box::new([0u8; BUF_CAP]),
            head: HEADROOM as u16,
            len: 0,
            tunnel: None,
        }
    }

    /// A buffer holding a copy of `frame` (allocates; for tests and the control path).
    /// None when the frame is larger than [`MAX_FRAME`].
    pub fn from_slice(frame: &[u8]) -> Option<Packet> {
        let mut p = Packet::new();
        p.set_data(frame).then_some(p)
    }

    /// Replace the contents with a copy of `frame`, resetting the headroom.
    /// False (and unchanged) when the frame does not fit.
    pub fn set_data(&mut self, frame: &[u8]) -> bool {
        if frame.len() > MAX_FRAME {
            return false;
        }
        self.head = HEADROOM as u16;
        self.len = frame.len() as u16;
        self.tunnel = None;
        self.buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        true
    }

    /// Reset the headroom and expose the whole frame area ([`MAX_FRAME`] bytes,
    /// stale contents) for a backend that gathers a frame from several
    /// segments; it then calls [`Packet::truncate`] with the length it wrote.
    #[inline(always)]
    pub fn frame_area_mut(&mut self) -> &mut [u8; MAX_FRAME] {
        self.head = HEADROOM as u16;
        self.len = MAX_FRAME as u16;
        let area = &mut self.buf[HEADROOM..HEADROOM + MAX_FRAME];
        // The slice is exactly MAX_FRAME long (BUF_CAP = HEADROOM + MAX_FRAME).
        match area.try_into() {
            Ok(a) => a,
            Err(_) => unreachable!("BUF_CAP = HEADROOM + MAX_FRAME"),
        }
    }

    /// Copy another packet's frame into this buffer (keeps this buffer's allocation).
    pub fn copy_from(&mut self, other: &Packet) {
        self.head = other.head;
        self.len = other.len;
        self.tunnel = other.tunnel;
        let r = usize::from(other.head)..usize::from(other.head) + usize::from(other.len);
        self.buf[r.clone()].copy_from_slice(&other.buf[r]);
    }

    /// The frame.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        &self.buf[usize::from(self.head)..usize::from(self.head) + usize::from(self.len)]
    }

    /// The frame, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[usize::from(self.head)..usize::from(self.head) + usize::from(self.len)]
    }

    /// Frame length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True for a zero-length frame.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in front of the frame.
    #[inline(always)]
    pub fn headroom(&self) -> usize {
        usize::from(self.head)
    }

    /// Grow the frame by `n` bytes at the front; returns the whole new frame,
    /// or None when the headroom is too small.
    #[inline]
    pub fn push_head(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > usize::from(self.head) {
            return None;
        }
        self.head -= n as u16;
        self.len += n as u16;
        Some(self.data_mut())
    }

    /// Remove `n` bytes from the front; false when the frame is shorter.
    #[inline]
    pub fn pull_head(&mut self, n: usize) -> bool {
        if n > usize::from(self.len) {
            return false;
        }
        self.head += n as u16;
        self.len -= n as u16;
        true
    }

    /// Grow the frame at the back by `n` zero bytes; false when it would not fit.
    pub fn push_tail(&mut self, n: usize) -> bool {
        let end = usize::from(self.head) + usize::from(self.len);
        if end + n > BUF_CAP {
            return false;
        }
        self.buf[end..end + n].fill(0);
        self.len += n as u16;
        true
    }

    /// The tunnel metadata (see the field's documentation).
    #[inline(always)]
    pub fn tunnel(&self) -> Option<&TunnelMeta> {
        self.tunnel.as_ref()
    }

    /// Set or clear the tunnel metadata.
    #[inline(always)]
    pub fn set_tunnel(&mut self, t: Option<TunnelMeta>) {
        self.tunnel = t;
    }

    /// Take the tunnel metadata, leaving none.
    #[inline(always)]
    pub fn take_tunnel(&mut self) -> Option<TunnelMeta> {
        self.tunnel.take()
    }

    /// Shorten the frame to `n` bytes (no-op when already shorter).
    pub fn truncate(&mut self, n: usize) {
        if n < usize::from(self.len) {
            self.len = n as u16;
        }
    }
}

/// A free list of packet buffers owned by one thread.
#[derive(Debug, Default)]
pub struct PacketPool {
    free: Vec<Packet>,
}

impl PacketPool {
    /// A pool with `n` buffers allocated up front.
    pub fn with_capacity(n: usize) -> PacketPool {
        PacketPool {
            free: (0..n).map(|_| Packet::new()).collect(),
        }
    }

    /// Take a buffer (its contents are stale). None when the pool is empty:
    /// the caller counts a drop, it never allocates on the hot path.
    #[inline]
    pub fn get(&mut self) -> Option<Packet> {
        let mut p = self.free.pop()?;
        p.tunnel = None;
        Some(p)
    }

    /// Return a buffer (its tunnel metadata is cleared, so a reused buffer
    /// never carries a previous packet's tunnel).
    #[inline]
    pub fn put(&mut self, mut p: Packet) {
        p.tunnel = None;
        self.free.push(p);
    }

    /// Buffers available.
    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pull_head() {
        let mut p = Packet::from_slice(&[1, 2, 3]).unwrap();
        let d = p.push_head(2).unwrap();
        d[0] = 9;
        d[1] = 8;
        assert_eq!(p.data(), &[9, 8, 1, 2, 3]);
        assert!(p.pull_head(2));
        assert_eq!(p.data(), &[1, 2, 3]);
        assert!(p.push_head(HEADROOM + 1).is_none());
        assert!(Packet::from_slice(&[0; MAX_FRAME + 1]).is_none());
    }
}
