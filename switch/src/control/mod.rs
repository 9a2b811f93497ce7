//! The control plane: the request/reply protocol, the bridge state it
//! manipulates, persistence, and the Unix-socket server.

pub mod bridge;
pub mod proto;
pub mod server;
pub mod state;
