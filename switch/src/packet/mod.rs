//! Wire formats: zero-copy views and builders per protocol, and extraction of
//! a frame into a `FlowKey`.

pub mod buf;
pub mod builder;
pub mod checksum;
pub mod extract;
pub mod tcp;

pub use buf::{Packet, PacketPool};
pub use extract::{extract, Layout, ParseStatus};
