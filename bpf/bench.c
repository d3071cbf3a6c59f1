/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The benchmark's own XDP programs (test/bench): a traffic generator, a sink
 * and the two ceilings natwall is measured against. None of them is part of
 * the product.
 *
 * The generator runs under BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: the
 * kernel recycles the frame's page without restoring it, so the program
 * writes every field it varies on every run instead of updating in place. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/csum.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* How the generator spreads packets over flows. A flow is a number; in
 * established mode it cycles through [0, flows), in new-flow mode every
 * packet gets the next one, so every packet opens a flow. */
struct nwb_gen_config {
	__u32 flows;       /* established mode: distinct flows; 0: new-flow mode */
	__u32 src_base;    /* host order */
	__u32 src_count;
	__u32 dst_base;    /* host order */
	__u32 dst_count;
	__u16 sport_base;
	__u16 sport_count;
	__u16 dport_base;
	__u16 dport_count;
};

volatile const struct nwb_gen_config nwb_traffic;

/* Read by the control program between runs; only one thread generates. */
__u64 nwb_generated;

struct frame {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
};

/* Finds the headers of a generator frame: IPv4 without options, UDP. */
static __always_inline int frame_of(struct xdp_md *ctx, struct frame *f)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	f->eth = data;
	f->ip = data + sizeof(struct ethhdr);
	f->udp = (void *)(f->ip + 1);
	return (void *)(f->udp + 1) <= end && f->eth->h_proto == bpf_htons(ETH_P_IP) &&
	       f->ip->ihl == 5 && f->ip->protocol == IPPROTO_UDP;
}

static __always_inline __u16 ipv4_header_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		if (i != 5)
			sum += w[i];
	return csum_fold(sum);
}

SEC("xdp")
int nwb_gen(struct xdp_md *ctx)
{
	__u64 n = __sync_fetch_and_add(&nwb_generated, 1);
	__u64 flow = n;
	__u32 sports, srcs, dsts, dports;
	struct frame f;

	if (!frame_of(ctx, &f))
		return XDP_ABORTED;
	/* A zero count would divide by zero; the verifier insists on a guard. */
	sports = nwb_traffic.sport_count ?: 1;
	srcs = nwb_traffic.src_count ?: 1;
	dsts = nwb_traffic.dst_count ?: 1;
	dports = nwb_traffic.dport_count ?: 1;
	if (nwb_traffic.flows)
		flow = n % nwb_traffic.flows;

	/* The source (address, port) pair is unique per flow, so that flows
	 * stay distinct whatever the rules' ports and destinations. */
	f.udp->source = bpf_htons(nwb_traffic.sport_base + flow % sports);
	f.ip->saddr = bpf_htonl(nwb_traffic.src_base + (flow / sports) % srcs);
	f.ip->daddr = bpf_htonl(nwb_traffic.dst_base + flow % dsts);
	f.udp->dest = bpf_htons(nwb_traffic.dport_base + flow % dports);
	f.udp->check = 0;
	f.ip->check = ipv4_header_csum(f.ip);
	return XDP_TX;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} nwb_count SEC(".maps");

static __always_inline void count(void)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&nwb_count, &zero);

	if (c)
		*c += 1;
}

/* Set by the control program: while it is non-zero the sink answers every
 * generated packet instead of absorbing it, so that stateful firewalls see
 * both directions and call the flows established. */
__u32 nwb_sink_echo;

SEC("xdp")
int nwb_sink(struct xdp_md *ctx)
{
	unsigned char mac[ETH_ALEN];
	struct frame f;
	__be32 addr;
	__be16 port;

	/* Everything but the generator's UDP, such as the connection-rate
	 * test's TCP, goes to the sink's stack. */
	if (!frame_of(ctx, &f))
		return XDP_PASS;
	count();
	if (!nwb_sink_echo)
		return XDP_DROP;
	/* Swapping fields keeps both checksums valid. */
	__builtin_memcpy(mac, f.eth->h_source, ETH_ALEN);
	__builtin_memcpy(f.eth->h_source, f.eth->h_dest, ETH_ALEN);
	__builtin_memcpy(f.eth->h_dest, mac, ETH_ALEN);
	addr = f.ip->saddr;
	f.ip->saddr = f.ip->daddr;
	f.ip->daddr = addr;
	port = f.udp->source;
	f.udp->source = f.udp->dest;
	f.udp->dest = port;
	return XDP_TX;
}

/* Ceiling B0: what the device under test can take in at all. */
SEC("xdp")
int nwb_drop(struct xdp_md *ctx)
{
	count();
	return XDP_DROP;
}

/* Ceiling B1, the "speed of light" for an XDP forwarder: new MACs and a
 * devmap redirect, with no parsing, lookups or state. */
volatile const unsigned char nwb_fwd_src[ETH_ALEN];
volatile const unsigned char nwb_fwd_dst[ETH_ALEN];

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nwb_egress SEC(".maps");

SEC("xdp")
int nwb_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	/* Byte by byte: a memcpy would let the compiler fold the (zero)
	 * compile-time values of the volatile constants. */
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++) {
		eth->h_source[i] = nwb_fwd_src[i];
		eth->h_dest[i] = nwb_fwd_dst[i];
	}
	return bpf_redirect_map(&nwb_egress, 0, 0);
}

/* On the DUT's outside NIC in the Linux configurations: a veth takes the
 * sink's XDP_TX answers only if it runs XDP itself, and this hands them to
 * the stack unchanged. Only the warm-up's answers come this way; the
 * measured direction leaves through this NIC and never meets it. */
SEC("xdp")
int nwb_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
