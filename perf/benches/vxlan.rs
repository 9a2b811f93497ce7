//! VXLAN encapsulation and decapsulation per packet (`switch::tunnel::encap`),
//! each beside a same-run baseline: copying the inner frame into a packet
//! buffer (`Packet::set_data`, what every AF_XDP rx already does once), so
//! the ratio says what the tunnel adds on top of one frame copy.
//!
//! - `encap_64B` / `encap_1400B`: outer Ethernet/IPv4/UDP/VXLAN written into
//!   the headroom, IPv4 checksum, inner-flow hash for the UDP source port
//!   (then the head is pulled back so the next iteration starts alike).
//! - `decap_64B` / `decap_1400B`: classify the underlay frame (Ethernet,
//!   IPv4 with header checksum check, UDP port, VXLAN I flag) and pull the
//!   outer headers off (then pushed back).
//! - `copy_64B` / `copy_1400B`: the baseline.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switch::packet::{FrameBuilder, Packet};
use switch::tunnel::encap::{classify, encap, Outer, Underlay, ENCAP_OVERHEAD};

fn outer() -> Outer {
    Outer {
        src_mac: [2, 0, 0, 0, 0x10, 1],
        dst_mac: [2, 0, 0, 0, 0x10, 2],
        src_ip: u32::from_be_bytes([192, 168, 10, 1]),
        dst_ip: u32::from_be_bytes([192, 168, 10, 2]),
        vni: 42,
        dst_port: 4789,
        ttl: 64,
        tos: 0,
        df: true,
    }
}

fn inner(len: usize) -> Vec<u8> {
    FrameBuilder::new()
        .eth([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 2, 2])
        .ipv4([10, 244, 1, 2], [10, 244, 2, 2])
        .udp(40000, 80)
        .payload(&vec![0u8; len - 42])
        .build()
}

fn bench_vxlan(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan");
    g.throughput(Throughput::Elements(1));
    let o = outer();
    let local = o.dst_ip;
    for len in [64usize, 1400] {
        let frame = inner(len);
        g.bench_function(format!("copy_{len}B"), |b| {
            let mut p = Packet::new();
            b.iter(|| {
                p.set_data(black_box(&frame));
                black_box(p.data().as_ptr());
            })
        });
        g.bench_function(format!("encap_{len}B"), |b| {
            let mut p = Packet::from_slice(&frame).expect("fits");
            b.iter(|| {
                let r = encap(&mut p, black_box(&o), 1500, 0);
                black_box(&r);
                p.pull_head(ENCAP_OVERHEAD);
            })
        });
        let mut enc = Packet::from_slice(&frame).expect("fits");
        encap(&mut enc, &o, 1500, 0).expect("encap");
        g.bench_function(format!("decap_{len}B"), |b| {
            let mut p = enc.clone();
            b.iter(|| {
                if let Underlay::Vxlan {
                    header_len, vni, ..
                } = classify(black_box(p.data()), local, 4789)
                {
                    p.pull_head(header_len);
                    black_box((vni, p.data().as_ptr()));
                    p.push_head(header_len);
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_vxlan
}
criterion_main!(benches);
