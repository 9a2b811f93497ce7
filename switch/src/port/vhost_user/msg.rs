//! vhost-user messages on the wire: the 12-byte header, the payloads the
//! back-end handles, and one message's send/receive with its file
//! descriptors (`SCM_RIGHTS`).
//!
//! Input is a connected `AF_UNIX` stream socket; output is a [`Msg`] with the
//! payload bytes and the descriptors that came with it, or an error for a
//! short, oversized or truncated message. Layouts follow the QEMU
//! "Vhost-user Protocol" specification (docs/interop/vhost-user.rst): header
//! `{request: u32, flags: u32, size: u32}` little-endian, flags bits 0-1 the
//! version (1), bit 2 "reply", bit 3 "need reply" (`REPLY_ACK`). Nothing here
//! interprets a message or touches guest memory, and nothing here may panic
//! on what a peer sends.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `VHOST_USER_GET_FEATURES`.
pub const GET_FEATURES: u32 = 1;
/// `VHOST_USER_SET_FEATURES`.
pub const SET_FEATURES: u32 = 2;
/// `VHOST_USER_SET_OWNER`.
pub const SET_OWNER: u32 = 3;
/// `VHOST_USER_RESET_OWNER`.
pub const RESET_OWNER: u32 = 4;
/// `VHOST_USER_SET_MEM_TABLE`.
pub const SET_MEM_TABLE: u32 = 5;
/// `VHOST_USER_SET_VRING_NUM`.
pub const SET_VRING_NUM: u32 = 8;
/// `VHOST_USER_SET_VRING_ADDR`.
pub const SET_VRING_ADDR: u32 = 9;
/// `VHOST_USER_SET_VRING_BASE`.
pub const SET_VRING_BASE: u32 = 10;
/// `VHOST_USER_GET_VRING_BASE`.
pub const GET_VRING_BASE: u32 = 11;
/// `VHOST_USER_SET_VRING_KICK`.
pub const SET_VRING_KICK: u32 = 12;
/// `VHOST_USER_SET_VRING_CALL`.
pub const SET_VRING_CALL: u32 = 13;
/// `VHOST_USER_SET_VRING_ERR`.
pub const SET_VRING_ERR: u32 = 14;
/// `VHOST_USER_GET_PROTOCOL_FEATURES`.
pub const GET_PROTOCOL_FEATURES: u32 = 15;
/// `VHOST_USER_SET_PROTOCOL_FEATURES`.
pub const SET_PROTOCOL_FEATURES: u32 = 16;
/// `VHOST_USER_GET_QUEUE_NUM`.
pub const GET_QUEUE_NUM: u32 = 17;
/// `VHOST_USER_SET_VRING_ENABLE`.
pub const SET_VRING_ENABLE: u32 = 18;
/// `VHOST_USER_SEND_RARP`.
pub const SEND_RARP: u32 = 19;
/// `VHOST_USER_NET_SET_MTU`.
pub const NET_SET_MTU: u32 = 20;
/// `VHOST_USER_GET_STATUS` (only with `PROTOCOL_F_STATUS`, which we do not offer).
pub const GET_STATUS: u32 = 40;

/// Header flag: protocol version 1.
pub const FLAG_VERSION: u32 = 0x1;
/// Header flag: this message is a reply.
pub const FLAG_REPLY: u32 = 0x4;
/// Header flag: the front-end wants a `REPLY_ACK` answer.
pub const FLAG_NEED_REPLY: u32 = 0x8;

/// Largest payload we accept: a memory table with 8 regions is 8 + 8 * 32.
pub const MAX_PAYLOAD: usize = 4096;
/// Most descriptors one message carries (the spec's limit: one per memory region).
pub const MAX_FDS: usize = 8;
/// Header length.
pub const HDR_LEN: usize = 12;

/// One received message.
#[derive(Debug)]
pub struct Msg {
    /// The request code.
    pub request: u32,
    /// Header flags.
    pub flags: u32,
    /// Payload (exactly `size` bytes of the header).
    pub payload: Vec<u8>,
    /// Descriptors passed with the message, in order.
    pub fds: Vec<OwnedFd>,
}

impl Msg {
    /// The `u64` at `off` in the payload, or None when the payload is shorter.
    pub fn u64_at(&self, off: usize) -> Option<u64> {
        let b = self.payload.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// The `u32` at `off` in the payload, or None when the payload is shorter.
    pub fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.payload.get(off..off.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    /// True when the front-end asked for a `REPLY_ACK`.
    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MsgError {
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// A socket error.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// A header announcing a payload larger than any message we handle.
    #[error("message {request} announces {size} payload bytes (at most {MAX_PAYLOAD})")]
    TooLarge {
        /// The request code.
        request: u32,
        /// The announced size.
        size: u32,
    },
    /// The header or payload ended early, or control data was truncated.
    #[error("truncated message")]
    Truncated,
}

fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, MsgError> {
    // Room for MAX_FDS descriptors: CMSG_SPACE(8 * 4) is 48 on 64-bit Linux; 256 is ample.
    let mut cbuf = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is a valid empty header; its pointers are set below
    // to live buffers (iov, cbuf) that outlive the recvmsg call.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = loop {
        // SAFETY: mh points at valid, writable buffers of the lengths it states.
        let n = unsafe { libc::recvmsg(fd, &mut mh, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        break n as usize;
    };
    // Take ownership of every descriptor first, so none leaks on an error below.
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled,
    // bounded by msg_controllen; SCM_RIGHTS data is an array of ints.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if mh.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(MsgError::Truncated);
    }
    Ok(n)
}

fn recv_exact(fd: RawFd, buf: &mut [u8]) -> Result<(), MsgError> {
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: rest is a valid writable buffer of rest.len() bytes.
        let n = unsafe { libc::recv(fd, rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            return Err(MsgError::Truncated);
        }
        got += n as usize;
    }
    Ok(())
}

/// Read one message from `sock` (blocking).
pub fn recv_msg(sock: &impl AsRawFd) -> Result<Msg, MsgError> {
    let fd = sock.as_raw_fd();
    let mut hdr = [0u8; HDR_LEN];
    let mut fds = Vec::new();
    let n = recv_with_fds(fd, &mut hdr, &mut fds)?;
    if n == 0 {
        return Err(MsgError::Closed);
    }
    if n < HDR_LEN {
        recv_exact(fd, &mut hdr[n..])?;
    }
    let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
    let (request, flags, size) = (word(0), word(4), word(8));
    if size as usize > MAX_PAYLOAD {
        return Err(MsgError::TooLarge { request, size });
    }
    let mut payload = vec![0u8; size as usize];
    if !payload.is_empty() {
        // Descriptors may also ride on the payload's first segment.
        let n = recv_with_fds(fd, &mut payload, &mut fds)?;
        if n == 0 {
            return Err(MsgError::Truncated);
        }
        recv_exact(fd, &mut payload[n..])?;
    }
    if fds.len() > MAX_FDS {
        return Err(MsgError::Truncated);
    }
    Ok(Msg {
        request,
        flags,
        payload,
        fds,
    })
}

/// Send one message with optional descriptors (blocking). Used for replies
/// and by front-ends in tests.
pub fn send_msg(
    sock: &impl AsRawFd,
    request: u32,
    flags: u32,
    payload: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many fds"));
    }
    let mut buf = Vec::with_capacity(HDR_LEN + payload.len());
    buf.extend_from_slice(&request.to_le_bytes());
    buf.extend_from_slice(&flags.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    let mut cbuf = [0u64; 32];
    // SAFETY: zeroed msghdr is valid; pointers set below to buffers outliving the call.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = space;
        // SAFETY: the control buffer (256 bytes) holds CMSG_SPACE(8 fds); the
        // header and data written stay inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), bytes);
        }
    }
    let mut sent = 0usize;
    while sent < buf.len() {
        let mut iov = libc::iovec {
            iov_base: buf[sent..].as_mut_ptr().cast(),
            iov_len: buf.len() - sent,
        };
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        // SAFETY: mh points at live buffers of the stated lengths.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
        // The descriptors went with the first bytes.
        mh.msg_control = std::ptr::null_mut();
        mh.msg_controllen = 0;
    }
    Ok(())
}

/// Send a reply to `request` carrying `payload`.
pub fn reply(sock: &impl AsRawFd, request: u32, payload: &[u8]) -> io::Result<()> {
    send_msg(sock, request, FLAG_VERSION | FLAG_REPLY, payload, &[])
}

/// Send a `u64` reply (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, REPLY_ACK).
pub fn reply_u64(sock: &impl AsRawFd, request: u32, v: u64) -> io::Result<()> {
    reply(sock, request, &v.to_le_bytes())
}
