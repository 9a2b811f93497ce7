//! The datapath and the vxlan port together, without privileges: a memory
//! underlay stands in for the AF_XDP uplink.
//!
//! Checked: a decapsulated frame enters the pipeline with `tun_id`,
//! `tun_src` and `tun_dst` in its key (flows match on them; another VNI
//! does not match); `set_field:...->tun_id/tun_dst` reaches the port's
//! encapsulation through the packet (VNI and outer destination on the
//! wire); a frame output to a plain port never carries tunnel metadata.

use std::sync::Arc;

use switch::datapath::{Datapath, DatapathConfig, Snapshot, TxBatches};
use switch::flow::parse::{parse_flow, ParseMode};
use switch::packet::{FrameBuilder, Packet, PacketPool};
use switch::pipeline::Pipeline;
use switch::port::memory::MemoryPort;
use switch::port::Port;
use switch::tunnel::encap::{classify, encap, Outer, Underlay};
use switch::tunnel::{NeighConfig, VxlanOptions, VxlanPort};

const LOCAL: u32 = 0xc0a8_0a01;
const REMOTE: u32 = 0xc0a8_0a02;
const MAC_L: [u8; 6] = [2, 0, 0, 0, 0x10, 1];
const MAC_R: [u8; 6] = [2, 0, 0, 0, 0x10, 2];
const POD: u32 = 1;
const VX: u32 = 2;

fn pipeline(flows: &[&str]) -> Pipeline {
    let mut p = Pipeline::new();
    for f in flows {
        p.add_flow(parse_flow(f, ParseMode::Add).expect(f).to_flow());
    }
    p
}

fn inner(dst_port: u16) -> Vec<u8> {
    FrameBuilder::new()
        .eth([2, 0, 0, 0, 2, 2], [2, 0, 0, 0, 1, 2])
        .ipv4([10, 244, 2, 2], [10, 244, 1, 2])
        .udp(5000, dst_port)
        .payload(&[9u8; 20])
        .build()
}

fn vxlan_frame(vni: u32, inner: &[u8]) -> Packet {
    let mut p = Packet::from_slice(inner).unwrap();
    let o = Outer {
        src_mac: MAC_R,
        dst_mac: MAC_L,
        src_ip: REMOTE,
        dst_ip: LOCAL,
        vni,
        dst_port: 4789,
        ttl: 64,
        tos: 0,
        df: true,
    };
    encap(&mut p, &o, 1500, 0).unwrap();
    p
}

fn vx_port() -> (VxlanPort, switch::port::memory::MemoryPortHandle) {
    let m = [
        ("local_ip", "192.168.10.1"),
        ("remote_ip", "flow"),
        ("key", "flow"),
        ("underlay", "u0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (u, h) = MemoryPort::new(256);
    let p = VxlanPort::with_underlay(
        VxlanOptions::from_map(&m).unwrap(),
        Box::new(u),
        MAC_L,
        1500,
        NeighConfig::default(),
    );
    (p, h)
}

#[test]
fn decapsulated_frames_match_on_tunnel_fields_and_set_field_drives_encapsulation() {
    let pl = pipeline(&[
        // From the tunnel, VNI 42 from the right VTEP: to the pod.
        "priority=100,in_port=2,tun_id=42,tun_src=192.168.10.2,tun_dst=192.168.10.1,actions=output:1",
        // From the pod: into the tunnel, VNI 7, to 192.168.10.2.
        "priority=100,in_port=1,actions=set_field:7->tun_id,set_field:192.168.10.2->tun_dst,output:2",
    ]);
    let snap = Arc::new(Snapshot {
        generation: 1,
        pipeline: Arc::new(pl),
        ports: vec![POD, VX],
    });
    let mut dp = Datapath::new(snap, DatapathConfig::default());
    let mut pool = PacketPool::with_capacity(256);
    let mut tx = TxBatches::new(2, 64);
    let (mut vx, h) = vx_port();

    // The remote VTEP asks for us first (so our reply teaches us its MAC).
    let mut arp = [0u8; 60];
    arp[0..6].fill(0xff);
    arp[6..12].copy_from_slice(&MAC_R);
    arp[12..14].copy_from_slice(&[8, 6]);
    arp[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&MAC_R);
    arp[28..32].copy_from_slice(&REMOTE.to_be_bytes());
    arp[38..42].copy_from_slice(&LOCAL.to_be_bytes());
    h.inject(Packet::from_slice(&arp).unwrap()).unwrap();
    // VNI 42 (matches), VNI 43 (no flow).
    h.inject(vxlan_frame(42, &inner(80))).unwrap();
    h.inject(vxlan_frame(43, &inner(81))).unwrap();

    let mut rx = Vec::new();
    assert_eq!(vx.rx_batch(&mut pool, &mut rx, 32), 2);
    dp.process_batch(VX, &mut rx, &mut tx, &mut pool);
    let to_pod: Vec<Packet> = tx.drain(0).collect();
    assert_eq!(to_pod.len(), 1, "only VNI 42 reaches the pod");
    assert_eq!(to_pod[0].data(), &inner(80)[..]);
    assert!(
        to_pod[0].tunnel().is_none(),
        "no tunnel metadata on a plain port's frame"
    );
    assert_eq!(dp.stats().drops(switch::datapath::DropReason::NoFlow), 1);
    // The ARP reply went out on the underlay.
    let reply = h.capture().expect("ARP reply");
    assert_eq!(&reply.data()[0..6], &MAC_R);

    // Pod -> tunnel.
    let mut b = vec![Packet::from_slice(&inner(90)).unwrap()];
    dp.process_batch(POD, &mut b, &mut tx, &mut pool);
    let mut out: Vec<Packet> = tx.drain(1).collect();
    assert_eq!(out.len(), 1);
    let m = out[0]
        .tunnel()
        .copied()
        .expect("SetTunnel metadata on the frame");
    assert_eq!((m.tun_id, m.dst), (7, REMOTE));
    assert_eq!(vx.tx_batch(&mut out, &mut pool), 1);
    let f = h.capture().expect("encapsulated frame");
    assert_eq!(&f.data()[0..6], &MAC_R);
    match classify(f.data(), REMOTE, 4789) {
        Underlay::Vxlan {
            vni,
            src,
            header_len,
            ..
        } => {
            assert_eq!((vni, src), (7, LOCAL));
            assert_eq!(&f.data()[header_len..], &inner(90)[..]);
        }
        other => panic!("{other:?}"),
    }
}
