/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TCP sequence windows and checksums for the state machine (ct.h).
 *
 * A segment may change a flow's state only from inside the window each
 * side has opened, in the spirit of Linux's tcp_in_window and RFC 5961: a
 * blind RST or FIN with a guessed sequence number is dropped and counted,
 * and the flow lives on. Segments that may create or change state (SYN,
 * FIN, RST, the handshake) must carry valid IPv4 header and TCP checksums:
 * else a corrupt or forged segment the endpoint would discard could still
 * end the flow here. Established data is never checksummed: the endpoints
 * check it, and the fast path stays as it was. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "parse.h"
#include "csum.h"
#include "ct.h"

/* The ack window for a side whose window is still small, as in Linux. */
#define NW_TCP_MIN_ACK_WINDOW 66000
/* RFC 7323 2.3: larger shifts are treated as 14. */
#define NW_TCP_MAX_WSCALE 14
#define NW_TCP_OPT_EOL 0
#define NW_TCP_OPT_NOP 1
#define NW_TCP_OPT_WSCALE 3

/* Sequence-space comparisons, modulo 2^32 (RFC 793 3.3). */
static __always_inline int seq_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline int seq_after(__u32 a, __u32 b)
{
	return (__s32)(b - a) < 0;
}

static __always_inline __u32 csum_add32(__u32 sum, __u32 v)
{
	__u64 s = (__u64)sum + v;

	return (__u32)((s & 0xffffffff) + (s >> 32));
}

#define NW_CSUM_CHUNK 512
#define NW_CSUM_MAX_CHUNKS 32 /* 16 KiB: more than any frame XDP sees in one buffer */

/* Sums len bytes at off into sum, which the caller folds. off is even, as
 * a checksummed region always starts on a 16-bit boundary. Returns 0 if
 * the bytes are not all in the frame. */
static __always_inline int csum_sum_bytes(struct xdp_md *ctx, __u32 off, __u32 len, __u32 *sum)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 s = *sum;
	__u8 *p;

	for (int i = 0; i < NW_CSUM_MAX_CHUNKS; i++) {
		if (len < NW_CSUM_CHUNK)
			break;
		off &= 0x7fff;
		p = data + off;
		if ((void *)(p + NW_CSUM_CHUNK) > data_end)
			return 0;
		s = bpf_csum_diff(NULL, 0, (void *)p, NW_CSUM_CHUNK, s);
		off += NW_CSUM_CHUNK;
		len -= NW_CSUM_CHUNK;
	}
	if (len >= NW_CSUM_CHUNK)
		return 0;
	off &= 0x7fff;
#define NW_CSUM_STEP(n)                                                        \
	if (len & (n)) {                                                       \
		p = data + off;                                                \
		if ((void *)(p + (n)) > data_end)                              \
			return 0;                                              \
		s = bpf_csum_diff(NULL, 0, (void *)p, (n), s);                 \
		off = (off + (n)) & 0x7fff;                                    \
	}
	NW_CSUM_STEP(256)
	NW_CSUM_STEP(128)
	NW_CSUM_STEP(64)
	NW_CSUM_STEP(32)
	NW_CSUM_STEP(16)
	NW_CSUM_STEP(8)
	NW_CSUM_STEP(4)
#undef NW_CSUM_STEP
	if (len & 2) {
		p = data + off;
		if ((void *)(p + 2) > data_end)
			return 0;
		s = csum_add32(s, *(__u16 *)p);
		off = (off + 2) & 0x7fff;
	}
	if (len & 1) {
		__u16 last = 0;

		p = data + off;
		if ((void *)(p + 1) > data_end)
			return 0;
		/* The odd byte is the first of a word padded with zero. */
		*(__u8 *)&last = *p;
		s = csum_add32(s, last);
	}
	*sum = s;
	return 1;
}

/* Whether a TCP segment's checksums are valid: the IPv4 header's, and the
 * TCP checksum over the pseudo-header and the whole segment. A fragment's
 * checksum covers bytes natwall does not have: not valid. Global, so the
 * verifier checks it once for all its callers. */
__noinline int tcp_csum_valid(struct xdp_md *ctx, const struct nw_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 sum = 0, l3_off, l4_off, l4_len;

	if (!pkt || (pkt->flags & NW_PKT_FRAGMENT))
		return 0;
	l3_off = pkt->l3_off;
	l4_off = pkt->l4_off;
	if (l3_off > 64 || l4_off > NW_MAX_HDR_OFF || l4_off < l3_off)
		return 0;
	l4_len = l3_off + pkt->l3_len - l4_off;
	if (l4_len > 0xffff)
		return 0;

	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *ip = data + l3_off;
		__u32 hdr_sum = 0;

		if ((void *)(ip + 1) > data_end)
			return 0;
		if (!csum_sum_bytes(ctx, l3_off, ip->ihl * 4, &hdr_sum) || csum_fold(hdr_sum))
			return 0;
		sum = csum_add32(sum, ip->saddr);
		sum = csum_add32(sum, ip->daddr);
		sum = csum_add32(sum, bpf_htonl((__u32)IPPROTO_TCP << 16 | l4_len));
	} else {
		struct ipv6hdr *ip6 = data + l3_off;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		sum = bpf_csum_diff(NULL, 0, (void *)&ip6->saddr, 32, 0);
		sum = csum_add32(sum, bpf_htonl(l4_len));
		sum = csum_add32(sum, bpf_htonl(IPPROTO_TCP));
	}
	if (!csum_sum_bytes(ctx, l4_off, l4_len, &sum))
		return 0;
	return csum_fold(sum) == 0;
}

/* The window scale a SYN's options offer, or -1 for none (or options that
 * run past the header, which the endpoint would not honour either). */
__noinline int tcp_syn_wscale(struct xdp_md *ctx, __u32 opt_off, __u32 opt_len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 pos = 0;

	if (opt_off > NW_MAX_HDR_OFF + 20 || opt_len > 40)
		return -1;
	for (int i = 0; i < 40; i++) {
		__u8 *opt;
		__u32 len = 1;

		if (pos >= opt_len)
			break;
		opt = data + opt_off + pos;
		if ((void *)(opt + 1) > data_end)
			return -1;
		if (opt[0] == NW_TCP_OPT_EOL)
			break;
		if (opt[0] != NW_TCP_OPT_NOP) {
			if (pos + 2 > opt_len || (void *)(opt + 2) > data_end)
				return -1;
			len = opt[1];
			if (len < 2 || pos + len > opt_len)
				return -1;
			if (opt[0] == NW_TCP_OPT_WSCALE && len == 3) {
				if ((void *)(opt + 3) > data_end)
					return -1;
				return opt[2] > NW_TCP_MAX_WSCALE ? NW_TCP_MAX_WSCALE : opt[2];
			}
		}
		pos = (pos + len) & 63;
	}
	return -1;
}

/* What ct_tcp_check needs of a segment. */
struct nw_tcp_seg {
	__u32 seq;
	__u32 ack;
	__u32 end;  /* seq + payload, + 1 for SYN, + 1 for FIN */
	__u32 win;  /* as sent: not yet scaled */
	__u32 opt_off;
	__u32 opt_len;
};

static __always_inline int tcp_seg_read(struct xdp_md *ctx, const struct nw_pkt *pkt,
					struct nw_tcp_seg *seg)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 off = pkt->l4_off, hlen;
	struct tcphdr *tcp;

	if (off > NW_MAX_HDR_OFF)
		return 0;
	tcp = data + off;
	if ((void *)(tcp + 1) > data_end)
		return 0;
	hlen = tcp->doff * 4;
	seg->seq = bpf_ntohl(tcp->seq);
	seg->ack = bpf_ntohl(tcp->ack_seq);
	seg->win = bpf_ntohs(tcp->window);
	/* parse_l4 checked that the header lies within the datagram. */
	seg->end = seg->seq + (pkt->l3_off + pkt->l3_len - off - hlen) +
		   !!(pkt->tcp_flags & NW_TCP_SYN) + !!(pkt->tcp_flags & NW_TCP_FIN);
	seg->opt_off = off + sizeof(*tcp);
	seg->opt_len = hlen - sizeof(*tcp);
	return 1;
}

/* A side's first segment, its SYN or SYN-ACK: where its sequence space
 * starts, and the window scale it offers. */
static __always_inline void tcp_side_start(struct xdp_md *ctx, struct nw_tcp_side *side,
					   const struct nw_tcp_seg *seg)
{
	int wscale = tcp_syn_wscale(ctx, seg->opt_off, seg->opt_len);

	side->end = seg->end;
	side->maxend = seg->end;
	side->maxwin = seg->win ? seg->win : 1;
	side->maxack = 0;
	side->flags = 0;
	side->wscale = 0;
	if (wscale >= 0) {
		side->wscale = wscale;
		side->flags |= NW_TCP_SIDE_WSCALE;
	}
}

/* Starts the originator's side of a new TCP flow from its SYN. */
__noinline int ct_tcp_start(struct xdp_md *ctx, const struct nw_pkt *pkt, struct nw_ct_state *st)
{
	struct nw_tcp_seg seg;

	if (!pkt || !st)
		return NW_DROP_INTERNAL;
	if (!tcp_seg_read(ctx, pkt, &seg))
		return NW_MALFORMED_L4;
	tcp_side_start(ctx, &st->tcp[NW_CT_DIR_ORIGINAL], &seg);
	__builtin_memset(&st->tcp[NW_CT_DIR_REPLY], 0, sizeof(st->tcp[NW_CT_DIR_REPLY]));
	return 0;
}

/* Whether the segment's acknowledgement is one its receiver could send:
 * not of data never sent, nor further back than a window (Linux's
 * MAXACKWINDOW). */
static __always_inline int tcp_ack_in_window(__u32 ack, const struct nw_tcp_side *snd,
					     const struct nw_tcp_side *rcv)
{
	__u32 win = snd->maxwin > NW_TCP_MIN_ACK_WINDOW ? snd->maxwin : NW_TCP_MIN_ACK_WINDOW;

	return !seq_after(ack, rcv->end) && !seq_before(ack, rcv->end - win);
}

static __always_inline int tcp_out_of_window(__u8 flags)
{
	return flags & NW_TCP_RST ? NW_DROP_TCP_RST_OUT_OF_WINDOW : NW_DROP_TCP_OUT_OF_WINDOW;
}

/* Checks a TCP segment of flow st, from side dir, against the windows, and
 * if it fits, follows it: windows, then state. Returns 0 to forward it, or
 * a reason to drop it with the flow untouched. */
__noinline int ct_tcp_check(struct xdp_md *ctx, const struct nw_pkt *pkt, struct nw_ct_state *st,
			    __u32 dir)
{
	struct nw_tcp_side *snd, *rcv;
	struct nw_tcp_seg seg;
	__u32 ack, win;
	__u8 flags;

	if (!pkt || !st)
		return NW_DROP_INTERNAL;
	/* A later fragment has no TCP header: it changes nothing. */
	if (!(pkt->flags & NW_PKT_L4))
		return 0;
	dir &= 1;
	flags = pkt->tcp_flags;
	if (((flags & (NW_TCP_SYN | NW_TCP_FIN | NW_TCP_RST)) || st->tcp_state == NW_TCP_SYN_SENT ||
	     st->tcp_state == NW_TCP_SYN_RECV) &&
	    !tcp_csum_valid(ctx, pkt))
		return NW_DROP_TCP_BAD_CHECKSUM;
	/* An entry without windows (not created by this program): the
	 * state machine as it was, unchecked. */
	if (!st->tcp[NW_CT_DIR_ORIGINAL].maxwin) {
		ct_tcp_advance(st, dir, flags);
		return 0;
	}
	if (!tcp_seg_read(ctx, pkt, &seg))
		return NW_MALFORMED_L4;
	snd = &st->tcp[dir];
	rcv = &st->tcp[dir ^ 1];

	if (dir == NW_CT_DIR_ORIGINAL && st->tcp_state == NW_TCP_SYN_SENT &&
	    (flags & (NW_TCP_SYN | NW_TCP_ACK)) == NW_TCP_SYN) {
		/* The SYN again, perhaps with a new initial sequence number. */
		tcp_side_start(ctx, snd, &seg);
		return 0;
	}
	if (dir == NW_CT_DIR_ORIGINAL && st->tcp_state == NW_TCP_SYN_SENT && (flags & NW_TCP_RST) &&
	    (rcv->flags & NW_TCP_SIDE_CHALLENGE) && seg.seq == rcv->maxack) {
		/* The originator's reset of the responder's old connection,
		 * answering its challenge ACK (RFC 793 3.4: the RST takes the
		 * ACK's acknowledgement as its sequence number). It frees the
		 * responder's TIME_WAIT socket for the SYN that follows. */
		rcv->flags &= ~NW_TCP_SIDE_CHALLENGE;
		return 0;
	}
	if (dir == NW_CT_DIR_REPLY && st->tcp_state == NW_TCP_SYN_SENT) {
		/* The responder's answer: its own SYN (simultaneous open),
		 * or a SYN-ACK or RST that acknowledges the SYN (RFC 793
		 * 3.4). Each starts its side afresh, so that a forged answer
		 * cannot lock the real one out. */
		if ((flags & (NW_TCP_SYN | NW_TCP_ACK | NW_TCP_RST)) == NW_TCP_SYN) {
			tcp_side_start(ctx, snd, &seg);
			return 0;
		}
		/* A bare ACK, no data: the challenge ACK of a responder whose socket for
		 * these ports is still in TIME_WAIT and did not take the SYN
		 * (RFC 793 3.9, RFC 5961 4). It goes to the originator, which
		 * answers with the RST above; nothing else changes. */
		if ((flags & (NW_TCP_SYN | NW_TCP_ACK | NW_TCP_RST | NW_TCP_FIN)) == NW_TCP_ACK && seg.end == seg.seq) {
			snd->maxack = seg.ack;
			snd->flags |= NW_TCP_SIDE_CHALLENGE;
			return 0;
		}
		if (!(flags & NW_TCP_ACK) || !(flags & (NW_TCP_SYN | NW_TCP_RST)) ||
		    !tcp_ack_in_window(seg.ack, snd, rcv))
			return tcp_out_of_window(flags);
		if (flags & NW_TCP_RST) {
			ct_tcp_advance(st, dir, flags);
			return 0;
		}
		tcp_side_start(ctx, snd, &seg);
	} else if (!snd->maxwin) {
		/* The responder never spoke, and the SYN was refused. */
		return tcp_out_of_window(flags);
	}

	ack = flags & NW_TCP_ACK ? seg.ack : rcv->end;
	if (seq_after(seg.seq, snd->maxend) || seq_before(seg.end, snd->end - rcv->maxwin))
		return tcp_out_of_window(flags);
	if (rcv->maxwin && !tcp_ack_in_window(ack, snd, rcv))
		return tcp_out_of_window(flags);
	/* RFC 5961 3.2: a reset must fall within what the receiver has not
	 * yet acknowledged, not merely near it. */
	if ((flags & NW_TCP_RST) && (rcv->flags & NW_TCP_SIDE_MAXACK) &&
	    seq_before(seg.seq, rcv->maxack))
		return NW_DROP_TCP_RST_OUT_OF_WINDOW;

	win = seg.win;
	/* Window scaling is on only if both SYNs asked for it (RFC 7323
	 * 2.2), and never applies to a SYN's own window. */
	if (!(flags & NW_TCP_SYN) && (snd->flags & rcv->flags & NW_TCP_SIDE_WSCALE))
		win <<= snd->wscale;
	if (snd->maxwin < win)
		snd->maxwin = win;
	if (seq_after(seg.end, snd->end))
		snd->end = seg.end;
	if ((flags & NW_TCP_ACK) &&
	    (!(snd->flags & NW_TCP_SIDE_MAXACK) || seq_after(ack, snd->maxack))) {
		snd->maxack = ack;
		snd->flags |= NW_TCP_SIDE_MAXACK;
	}
	/* The receiver may send up to what this segment acknowledges plus
	 * its window; one byte more into a zero window, for the probe. */
	if (rcv->maxwin && seq_after(seg.end, snd->maxend))
		rcv->maxwin += seg.end - snd->maxend;
	if (!seq_before(ack + win, rcv->maxend))
		rcv->maxend = ack + win + !win;
	ct_tcp_advance(st, dir, flags);
	return 0;
}

/* Whether a packet is a SYN on a closed or TIME_WAIT flow: a new
 * connection on the same ports, which the rules must judge again (the
 * rule that admitted the old one may since have been removed). Returns
 * 1 if so, 0 if not, or a negative reason for a SYN with a bad checksum,
 * which leaves the old flow be. */
static __always_inline int ct_tcp_reopens(struct xdp_md *ctx, const struct nw_pkt *pkt,
					  const struct nw_ct_state *st)
{
	if (pkt->l4_proto != IPPROTO_TCP || !(pkt->flags & NW_PKT_L4) ||
	    (pkt->tcp_flags & (NW_TCP_SYN | NW_TCP_ACK | NW_TCP_RST | NW_TCP_FIN)) != NW_TCP_SYN)
		return 0;
	if (st->tcp_state != NW_TCP_TIME_WAIT && st->tcp_state != NW_TCP_CLOSE)
		return 0;
	if (!tcp_csum_valid(ctx, pkt))
		return -NW_DROP_TCP_BAD_CHECKSUM;
	return 1;
}

/* A first TCP segment must be sound before it creates a flow. */
static __always_inline int ct_tcp_may_create(struct xdp_md *ctx, const struct nw_pkt *pkt)
{
	if (pkt->l4_proto != IPPROTO_TCP || !(pkt->flags & NW_PKT_L4))
		return 0;
	return tcp_csum_valid(ctx, pkt) ? 0 : NW_DROP_TCP_BAD_CHECKSUM;
}
