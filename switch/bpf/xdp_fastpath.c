// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
//
// switchd's XDP program for AF_XDP ports (switch/src/port/afxdp/fastpath.rs
// loads it, one copy per interface, in place of libxdp's default program).
//
// Per frame:
//  1. Parse Ethernet (untagged) / IPv4 without options or fragmentation /
//     TCP | UDP | SCTP ports, ICMP | IGMP type and code, into `struct fp_key`
//     (the same values switch/src/packet/extract.rs puts in a FlowKey).
//  2. Look the key up in `fp_flows`, the offload table switchd fills from
//     megaflows it decided to offload (switch/src/port/afxdp/offload.rs):
//     like the userspace megaflow cache, a tuple space search (Srinivasan et
//     al., SIGCOMM '99; OVS's dpcls): for each mask in use (`fp_masks`, at
//     most FP_MAX_MASKS), the key ANDed with the mask, tagged with the mask's
//     slot, is looked up in one hash map; the first hit wins (megaflows that
//     overlap give the same answer for the packets they share).
//     A hit applies the entry's actions (set eth src/dst, set IPv4 TTL with
//     an incremental checksum update, RFC 1624 eqn. 3), adds the frame to the
//     entry's packets/bytes, and redirects it to the output interface
//     through the `fp_ports` DEVMAP.
//  3. Anything else (a miss, a frame the parser does not handle, a TTL that
//     would expire, an output interface not in `fp_ports`) is redirected to
//     the AF_XDP socket of its rx queue, or passed to the kernel stack when
//     that queue has no socket: exactly libxdp's default program
//     (xsk_def_xdp_prog.c: bpf_redirect_map(&xsks_map, rx_queue_index,
//     XDP_PASS)). With an empty `fp_flows` the program behaves as libxdp's.
//
// It never drops a frame itself and never sends a frame it did not find in
// `fp_flows` anywhere but to userspace or the stack.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Keep in sync with FpKey / FpAction in fastpath.rs (layout asserted there).
// As a mask (`fp_masks`): pad[1] = 1 marks the slot in use. As a lookup key:
// pad[0] = the slot of the mask it was ANDed with.
struct fp_key {
	__u32 ifindex;     // ingress interface
	__u8 dl_dst[6];
	__u8 dl_src[6];
	__be16 dl_type;    // network order
	__u8 nw_proto;
	__u8 nw_tos;
	__u8 nw_ttl;
	__u8 pad[3];
	__be32 nw_src;     // network order
	__be32 nw_dst;
	__be16 tp_src;     // network order; ICMP: type in the low byte (see below)
	__be16 tp_dst;
};

#define FP_SET_ETH_SRC 1
#define FP_SET_ETH_DST 2
#define FP_SET_TTL 4

struct fp_action {
	__u32 out_ifindex;
	__u8 flags;
	__u8 ttl;
	__u8 eth_src[6];
	__u8 eth_dst[6];
	__u8 pad[6];
	__u64 packets;     // added to atomically by this program
	__u64 bytes;
};

// Program counters (per CPU), read by switchd for dump-ports.
enum {
	FP_HIT = 0,        // offloaded: redirected to the output interface
	FP_MISS = 1,       // parsed, no entry: to userspace
	FP_UNPARSED = 2,   // not a frame the key covers: to userspace
	FP_TTL = 3,        // entry found but TTL <= 1: to userspace (ICMP error there)
	FP_NO_PORT = 4,    // entry's output not in fp_ports: to userspace
	FP_REDIRECT_FAIL = 5, // bpf_redirect_map to the output refused
	FP_NSTATS = 8,
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192); // set by the loader (xdp-offload-entries)
	__type(key, struct fp_key);
	__type(value, struct fp_action);
} fp_flows SEC(".maps");

#define FP_MAX_MASKS 8
#define FP_KEY_WORDS (sizeof(struct fp_key) / 4)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FP_MAX_MASKS);
	__type(key, __u32);
	__type(value, struct fp_key);
} fp_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} fp_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FP_NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} fp_stats SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&fp_stats, &what);
	if (c)
		*c += 1;
}

static __always_inline int to_userspace(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

// Fill `k` from the frame; 0 when the frame is one the key describes
// completely (same checks as extract.rs: a truncated or malformed header,
// IPv4 options or a fragment are left to userspace).
static __always_inline int parse(struct xdp_md *ctx, struct fp_key *k)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return -1;
	if (ip->version != 4 || ip->ihl != 5)
		return -1;
	if (ip->frag_off & bpf_htons(0x3fff))
		return -1;
	__u16 tot = bpf_ntohs(ip->tot_len);
	if (tot < 20 || (void *)ip + tot > end)
		return -1;
	__builtin_memcpy(k->dl_dst, eth->h_dest, 6);
	__builtin_memcpy(k->dl_src, eth->h_source, 6);
	k->dl_type = eth->h_proto;
	k->nw_proto = ip->protocol;
	k->nw_tos = ip->tos;
	k->nw_ttl = ip->ttl;
	k->nw_src = ip->saddr;
	k->nw_dst = ip->daddr;
	__u8 *l4 = (void *)(ip + 1);
	__u16 l4len = tot - 20;
	switch (ip->protocol) {
	case 6: // TCP (RFC 9293 §3.1): 20-byte header at least
		if ((void *)(l4 + 20) > end || l4len < 20 || (l4[12] >> 4) < 5 ||
		    (__u16)((l4[12] >> 4) * 4) > l4len)
			return -1;
		__builtin_memcpy(&k->tp_src, l4, 2);
		__builtin_memcpy(&k->tp_dst, l4 + 2, 2);
		break;
	case 17: // UDP (RFC 768)
		if ((void *)(l4 + 8) > end || l4len < 8)
			return -1;
		__builtin_memcpy(&k->tp_src, l4, 2);
		__builtin_memcpy(&k->tp_dst, l4 + 2, 2);
		break;
	case 132: // SCTP (RFC 9260 §3.1)
		if ((void *)(l4 + 12) > end || l4len < 12)
			return -1;
		__builtin_memcpy(&k->tp_src, l4, 2);
		__builtin_memcpy(&k->tp_dst, l4 + 2, 2);
		break;
	case 1: // ICMP (RFC 792), IGMP (RFC 2236): type and code as 16-bit
	case 2: // values, stored in network order like the ports
		if ((void *)(l4 + 8) > end || l4len < 8)
			return -1;
		k->tp_src = bpf_htons(l4[0]);
		k->tp_dst = bpf_htons(l4[1]);
		break;
	default:
		break;
	}
	return 0;
}

SEC("xdp")
int xdp_fastpath(struct xdp_md *ctx)
{
	struct fp_key k = {};
	k.ifindex = ctx->ingress_ifindex;
	if (parse(ctx, &k) != 0) {
		count(FP_UNPARSED);
		return to_userspace(ctx);
	}
	struct fp_action *a = 0;
	struct fp_key mk;
#pragma unroll
	for (__u32 i = 0; i < FP_MAX_MASKS; i++) {
		__u32 slot = i;
		struct fp_key *m = bpf_map_lookup_elem(&fp_masks, &slot);
		if (!m || m->pad[1] != 1)
			continue;
		__u32 *kw = (__u32 *)&k, *mw = (__u32 *)m, *ow = (__u32 *)&mk;
#pragma unroll
		for (int w = 0; w < FP_KEY_WORDS; w++)
			ow[w] = kw[w] & mw[w];
		mk.pad[0] = i;
		mk.pad[1] = 0;
		mk.pad[2] = 0;
		a = bpf_map_lookup_elem(&fp_flows, &mk);
		if (a)
			break;
	}
	if (!a) {
		count(FP_MISS);
		return to_userspace(ctx);
	}
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return to_userspace(ctx);
	if ((a->flags & FP_SET_TTL) && ip->ttl <= 1) {
		// dec_ttl would expire: the slow path sends the ICMP error.
		count(FP_TTL);
		return to_userspace(ctx);
	}
	__u32 out = a->out_ifindex;
	if (!bpf_map_lookup_elem(&fp_ports, &out)) {
		count(FP_NO_PORT);
		return to_userspace(ctx);
	}
	if (a->flags & FP_SET_TTL) {
		// RFC 1624 eqn. 3 on the 16-bit word holding TTL and protocol.
		__u16 old = bpf_ntohs(*(__be16 *)&ip->ttl);
		ip->ttl = a->ttl;
		__u16 new = bpf_ntohs(*(__be16 *)&ip->ttl);
		__u32 sum = (__u16)~bpf_ntohs(ip->check);
		sum += (__u16)~old;
		sum += new;
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		ip->check = bpf_htons(~sum & 0xffff);
	}
	if (a->flags & FP_SET_ETH_SRC)
		__builtin_memcpy(eth->h_source, a->eth_src, 6);
	if (a->flags & FP_SET_ETH_DST)
		__builtin_memcpy(eth->h_dest, a->eth_dst, 6);
	__sync_fetch_and_add(&a->packets, 1);
	__sync_fetch_and_add(&a->bytes, (__u64)(end - data));
	int r = bpf_redirect_map(&fp_ports, out, 0);
	if (r != XDP_REDIRECT)
		count(FP_REDIRECT_FAIL);
	else
		count(FP_HIT);
	return r;
}

char _license[] SEC("license") = "Dual MIT/GPL";
