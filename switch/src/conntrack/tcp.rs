//! The TCP connection state machine of the connection tracker.
//!
//! Data enters as the current [`TcpState`] of a connection, the direction of
//! a segment (original or reply) and its flags; it leaves as the next state,
//! or a verdict that the segment is invalid (the connection is then left
//! unchanged and the packet gets `+inv`), or a request to start the
//! connection over (a SYN from the originator after the connection closed).
//! Pure functions: no clock, no table, never a panic.
//!
//! What is checked (after Linux `nf_conntrack_proto_tcp.c`'s state table and
//! `tcp_valid_flags`, and OVS `conntrack-tcp.c`'s state names):
//! - flag combinations: only the combinations a real stack sends are valid
//!   (SYN, SYN+ACK, RST, RST+ACK, FIN+ACK, ACK, each optionally with PSH and
//!   URG; ECE/CWR are ignored). SYN+FIN, SYN+RST, FIN without ACK and a
//!   segment with none of SYN/ACK/RST ("null") are invalid;
//! - a connection starts only with a SYN without ACK (an ACK, FIN or
//!   SYN+ACK with no connection is invalid: like Linux with
//!   `nf_conntrack_tcp_loose=0`, stricter than OVS, which picks up
//!   established connections mid-stream);
//! - the handshake: SYN (orig) → SYN+ACK (reply) → ACK (orig); data before
//!   the handshake completes, a SYN+ACK from the originator, or a SYN in an
//!   established connection is invalid;
//! - closing: FIN from one side (FIN_WAIT), the other side's ACK
//!   (CLOSE_WAIT), the other side's FIN (LAST_ACK), the first closer's
//!   last ACK (TIME_WAIT); RST in any state closes (CLOSE);
//! - a SYN from the originator in TIME_WAIT or CLOSE reopens the connection
//!   (a new connection with the same tuple, as Linux does).
//!
//! Not checked yet: sequence and acknowledgement numbers against the
//! windows (Linux `tcp_in_window`, OVS `tcp_conn_update`'s window
//! tracking), window scaling and SACK. A segment with valid flags but an
//! out-of-window sequence number is accepted.

/// TCP flag bits as in the TCP header (RFC 9293 §3.1) and `FlowKey::tcp_flags`.
pub mod flags {
    /// No more data from sender.
    pub const FIN: u16 = 0x001;
    /// Synchronise sequence numbers.
    pub const SYN: u16 = 0x002;
    /// Reset the connection.
    pub const RST: u16 = 0x004;
    /// Push function.
    pub const PSH: u16 = 0x008;
    /// Acknowledgement field significant.
    pub const ACK: u16 = 0x010;
    /// Urgent pointer field significant.
    pub const URG: u16 = 0x020;
}

use flags::{ACK, FIN, PSH, RST, SYN, URG};

/// State of a tracked TCP connection (Linux `tcp_conntrack`, OVS
/// `ct_dpif_tcp_state` names as `ct-show` prints them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    /// SYN seen from the originator.
    SynSent,
    /// SYN+ACK seen from the responder.
    SynRecv,
    /// Handshake completed.
    Established,
    /// One side sent FIN.
    FinWait,
    /// The other side acknowledged the first FIN.
    CloseWait,
    /// Both sides sent FIN; waiting for the last ACK.
    LastAck,
    /// Both FINs acknowledged.
    TimeWait,
    /// Reset.
    Close,
}

impl TcpState {
    /// The name `ct-show` prints (`protoinfo=(state=...)`).
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }
}

/// A TCP connection's tracking state: the state, and which side closed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConn {
    /// The state.
    pub state: TcpState,
    /// The direction that sent the first FIN (true: reply), once one did.
    pub first_fin_reply: Option<bool>,
}

/// What a segment does to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpVerdict {
    /// Valid: the connection moves to (or stays in) this state.
    Next(TcpConn),
    /// Invalid for the connection's state: the packet is `+inv`, the
    /// connection is unchanged.
    Invalid,
    /// A SYN from the originator of a closed connection: forget it and
    /// treat the segment as the start of a new one.
    Reopen,
}

/// True when the flag combination is one a real TCP stack sends
/// (Linux `tcp_valid_flags`, ECE/CWR masked off).
pub fn valid_flags(f: u16) -> bool {
    let f = f & (FIN | SYN | RST | PSH | ACK | URG);
    let core = f & !(PSH | URG);
    matches!(core, x if x == SYN || x == SYN | ACK || x == RST || x == RST | ACK
        || x == FIN | ACK || x == ACK)
}

/// True when a segment with flags `f` may start a new connection: valid and
/// a SYN without ACK.
pub fn valid_new(f: u16) -> bool {
    valid_flags(f) && f & SYN != 0 && f & ACK == 0
}

/// The state of a connection just created by `first` (a [`valid_new`] SYN).
pub fn initial() -> TcpConn {
    TcpConn {
        state: TcpState::SynSent,
        first_fin_reply: None,
    }
}

/// The next state of `c` after a segment with flags `f` travelling in the
/// reply direction (`reply`) or the original one.
pub fn update(c: TcpConn, reply: bool, f: u16) -> TcpVerdict {
    use TcpState::*;
    if !valid_flags(f) {
        return TcpVerdict::Invalid;
    }
    let next = |state| {
        TcpVerdict::Next(TcpConn {
            state,
            first_fin_reply: c.first_fin_reply,
        })
    };
    if f & RST != 0 {
        return next(Close);
    }
    let syn = f & SYN != 0;
    let ack = f & ACK != 0;
    let fin = f & FIN != 0;
    match c.state {
        SynSent => match (reply, syn, ack) {
            // Retransmitted SYN.
            (false, true, false) => next(SynSent),
            // The responder's SYN+ACK.
            (true, true, true) => next(SynRecv),
            // Simultaneous open: the responder's own SYN.
            (true, true, false) => next(SynRecv),
            _ => TcpVerdict::Invalid,
        },
        SynRecv => match (reply, syn, ack, fin) {
            // Retransmitted SYN+ACK, or SYN retransmitted by the originator.
            (true, true, true, _) | (false, true, false, _) => next(SynRecv),
            // The originator's ACK completes the handshake.
            (false, false, true, false) => next(Established),
            // The originator closes right after the handshake.
            (false, false, true, true) => first_fin(reply),
            _ => TcpVerdict::Invalid,
        },
        Established => {
            if syn {
                return TcpVerdict::Invalid;
            }
            if fin {
                return first_fin(reply);
            }
            next(Established)
        }
        FinWait | CloseWait => {
            if syn {
                return TcpVerdict::Invalid;
            }
            let closer_reply = c.first_fin_reply.unwrap_or(false);
            let from_closer = reply == closer_reply;
            if fin && !from_closer {
                next(LastAck)
            } else if !from_closer && c.state == FinWait {
                // The other side acknowledges the first FIN.
                next(CloseWait)
            } else {
                next(c.state)
            }
        }
        LastAck => {
            if syn {
                return TcpVerdict::Invalid;
            }
            let closer_reply = c.first_fin_reply.unwrap_or(false);
            if reply == closer_reply && !fin {
                // The first closer acknowledges the second FIN.
                next(TimeWait)
            } else {
                next(LastAck)
            }
        }
        TimeWait | Close => {
            if syn && !ack && !reply {
                TcpVerdict::Reopen
            } else if syn {
                TcpVerdict::Invalid
            } else {
                next(c.state)
            }
        }
    }
}

fn first_fin(reply: bool) -> TcpVerdict {
    TcpVerdict::Next(TcpConn {
        state: TcpState::FinWait,
        first_fin_reply: Some(reply),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIG: bool = false;
    const REPLY: bool = true;

    /// Run segments through the machine, failing on any non-`Next` verdict.
    fn run(steps: &[(bool, u16)]) -> TcpConn {
        let mut c = initial();
        for (i, &(dir, f)) in steps.iter().enumerate() {
            match update(c, dir, f) {
                TcpVerdict::Next(n) => c = n,
                v => panic!("step {i} ({dir}, {f:#x}) gave {v:?} in {:?}", c.state),
            }
        }
        c
    }

    #[test]
    fn three_way_handshake_then_data_is_established() {
        assert!(valid_new(SYN));
        let c = run(&[(REPLY, SYN | ACK)]);
        assert_eq!(c.state, TcpState::SynRecv);
        let c = run(&[(REPLY, SYN | ACK), (ORIG, ACK)]);
        assert_eq!(c.state, TcpState::Established);
        let c = run(&[
            (REPLY, SYN | ACK),
            (ORIG, ACK),
            (ORIG, ACK | PSH),
            (REPLY, ACK),
            (REPLY, ACK | PSH),
        ]);
        assert_eq!(c.state, TcpState::Established);
    }

    #[test]
    fn fin_close_from_originator_walks_to_time_wait() {
        let est = [(REPLY, SYN | ACK), (ORIG, ACK)];
        let mut steps = est.to_vec();
        steps.push((ORIG, FIN | ACK));
        assert_eq!(run(&steps).state, TcpState::FinWait);
        steps.push((REPLY, ACK));
        assert_eq!(run(&steps).state, TcpState::CloseWait);
        steps.push((REPLY, FIN | ACK));
        assert_eq!(run(&steps).state, TcpState::LastAck);
        steps.push((ORIG, ACK));
        assert_eq!(run(&steps).state, TcpState::TimeWait);
    }

    #[test]
    fn fin_close_from_responder_and_combined_fin_ack() {
        // Responder closes first; originator answers FIN+ACK at once.
        let c = run(&[
            (REPLY, SYN | ACK),
            (ORIG, ACK),
            (REPLY, FIN | ACK),
            (ORIG, FIN | ACK),
        ]);
        assert_eq!(c.state, TcpState::LastAck);
        assert_eq!(c.first_fin_reply, Some(true));
        // The closer's ACK of the second FIN ends in TIME_WAIT; an ACK from
        // the other side does not.
        assert_eq!(update(c, ORIG, ACK), TcpVerdict::Next(c));
        let TcpVerdict::Next(tw) = update(c, REPLY, ACK) else {
            panic!("last ack rejected")
        };
        assert_eq!(tw.state, TcpState::TimeWait);
    }

    #[test]
    fn rst_closes_in_any_state() {
        for steps in [
            vec![],
            vec![(REPLY, SYN | ACK)],
            vec![(REPLY, SYN | ACK), (ORIG, ACK)],
            vec![(REPLY, SYN | ACK), (ORIG, ACK), (ORIG, FIN | ACK)],
        ] {
            let c = run(&steps);
            for (dir, f) in [(ORIG, RST), (REPLY, RST | ACK)] {
                let TcpVerdict::Next(n) = update(c, dir, f) else {
                    panic!("rst rejected in {:?}", c.state)
                };
                assert_eq!(n.state, TcpState::Close);
            }
        }
    }

    #[test]
    fn invalid_flag_combinations_are_rejected_everywhere() {
        for f in [SYN | FIN, SYN | RST, FIN, 0, PSH, URG, SYN | FIN | ACK] {
            assert!(!valid_flags(f), "{f:#x} accepted");
            assert!(!valid_new(f), "{f:#x} may start a connection");
            let est = run(&[(REPLY, SYN | ACK), (ORIG, ACK)]);
            assert_eq!(update(est, ORIG, f), TcpVerdict::Invalid, "{f:#x}");
            assert_eq!(update(initial(), REPLY, f), TcpVerdict::Invalid, "{f:#x}");
        }
    }

    #[test]
    fn only_a_bare_syn_starts_a_connection() {
        assert!(valid_new(SYN));
        assert!(valid_new(SYN | PSH));
        for f in [ACK, SYN | ACK, FIN | ACK, RST, ACK | PSH] {
            assert!(!valid_new(f), "{f:#x} may start a connection");
        }
    }

    #[test]
    fn out_of_order_handshake_segments_are_invalid() {
        let c = initial();
        // Data or ACK from the originator before the SYN+ACK.
        assert_eq!(update(c, ORIG, ACK), TcpVerdict::Invalid);
        // A SYN+ACK from the originator.
        assert_eq!(update(c, ORIG, SYN | ACK), TcpVerdict::Invalid);
        // A plain ACK from the responder before its SYN+ACK.
        assert_eq!(update(c, REPLY, ACK), TcpVerdict::Invalid);
        // A SYN inside an established connection.
        let est = run(&[(REPLY, SYN | ACK), (ORIG, ACK)]);
        assert_eq!(update(est, ORIG, SYN), TcpVerdict::Invalid);
        assert_eq!(update(est, REPLY, SYN | ACK), TcpVerdict::Invalid);
    }

    #[test]
    fn syn_after_close_reopens_only_from_the_originator() {
        let tw = run(&[
            (REPLY, SYN | ACK),
            (ORIG, ACK),
            (ORIG, FIN | ACK),
            (REPLY, FIN | ACK),
            (ORIG, ACK),
        ]);
        assert_eq!(tw.state, TcpState::TimeWait);
        assert_eq!(update(tw, ORIG, SYN), TcpVerdict::Reopen);
        assert_eq!(update(tw, REPLY, SYN), TcpVerdict::Invalid);
        let closed = run(&[(ORIG, RST)]);
        assert_eq!(update(closed, ORIG, SYN), TcpVerdict::Reopen);
    }

    #[test]
    fn state_names_match_ovs_dump_conntrack() {
        assert_eq!(TcpState::Established.name(), "ESTABLISHED");
        assert_eq!(TcpState::SynSent.name(), "SYN_SENT");
        assert_eq!(TcpState::TimeWait.name(), "TIME_WAIT");
    }
}
