/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * ncebpf's kernel side. ncebpf_xdp attaches at XDP (ingress), ncebpf_tc at a
 * clsact egress hook. Both parse the frame, pick the peer (the side that is
 * not a local address) and add the frame to the peer's counters in `peers`;
 * every frame also lands in exactly one slot of `totals`. Neither program
 * ever changes, drops or redirects traffic. Both live in one file so that
 * BCC gives them the same maps.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "ncebpf_kern_user.h"
#include "parsing.h"

#ifdef NCEBPF_PAYLOAD
#include "payload.h"
#endif

#ifdef NCEBPF_FILTER
/* Generated from the user's tcpdump expression by ncebpf/filter/translate.py:
 * __u32 ncebpf_filter(data, data_end, wire_len, vtag), nonzero = match, and
 * NCEBPF_FILTER_PULL_LEN, the linear bytes it may read. */
#include "ncebpf_filter.h"
#endif

/*
 * With -DNCEBPF_PIN_DIR="/sys/fs/bpf/ncebpf/<name>" the maps that hold counts
 * are pinned there (BCC's BPF_TABLE_PINNED: an existing pin is reused, a
 * missing one made and pinned), so that they outlive the process and a new
 * daemon counts on where the last one stopped (issue 13, items 1 and 2).
 * Without it (explain, tests, bench) they live as long as the programs.
 */
#ifdef NCEBPF_PIN_DIR
#define NCEBPF_COUNTING_MAP(type, key, leaf, name, size) \
	BPF_TABLE_PINNED(type, key, leaf, name, size, NCEBPF_PIN_DIR "/" #name)
#else
#define NCEBPF_COUNTING_MAP(type, key, leaf, name, size) BPF_TABLE(type, key, leaf, name, size)
#endif

/* Key: 0. Value: struct dataset_meta. Read and written by user space only. */
NCEBPF_COUNTING_MAP("array", __u32, struct dataset_meta, dataset_meta, 1);

/* Key: peer address and family. Value: that peer's counters, one copy per CPU.
 * Preallocated: inserting a new peer costs about 1 us instead of about
 * 15 us for a per-CPU allocation, which matters under a spoofed-source flood. */
NCEBPF_COUNTING_MAP("percpu_hash", struct peer_key, struct peer_counters, peers, NCEBPF_MAX_PEERS);

/* Key: enum totals_slot. Value: packets and bytes, one copy per CPU. */
NCEBPF_COUNTING_MAP("percpu_array", int, struct total_counters, totals, TOTALS_NR);

/* Key: local_slot_of(address). Value: struct local_slot. Written by user space only. */
BPF_ARRAY(local_slots, struct local_slot, NCEBPF_LOCAL_SLOTS);

/* Key: an address of this host, keyed as peers are. Value: unused.
 * Consulted only for shared slots. */
BPF_HASH(local_addrs, struct peer_key, __u8, NCEBPF_MAX_LOCAL_ADDRS);

static __always_inline int is_local(struct peer_key *addr)
{
	__u32 slot = local_slot_of(addr);
	struct local_slot *s = local_slots.lookup(&slot);

	if (!s || s->count == 0)
		return 0;
	if (s->count == 1)
		return same_address(&s->addr, addr);
	return local_addrs.lookup(addr) != 0;
}

static __always_inline void count_total(__u32 slot, __u64 packets, __u64 bytes)
{
	struct total_counters *t = totals.lookup(&slot);

	/* Per-CPU value and no re-entry on one CPU: plain adds, no atomics. */
	if (t) {
		t->packets += packets;
		t->bytes += bytes;
	}
}

/* The totals slot of a frame parse_l3 did not attribute. */
static __always_inline __u32 unparsed_slot(int parsed)
{
	return parsed == PARSE_NOT_IP ? TOTALS_UNPARSED : TOTALS_UNATTRIBUTED;
}

/* Count the frame under its peer: the destination when the source is local
 * (out), else the source (in). */
static __always_inline void count_peer(struct l3_info *l3, __u64 packets, __u64 bytes)
{
	int out = is_local(&l3->src);
	struct peer_key *peer = out ? &l3->dst : &l3->src;
	struct peer_counters *c = peers.lookup(peer);

	if (!c) {
		struct peer_counters fresh = {};

		if (out) {
			fresh.out_packets = packets;
			fresh.out_bytes = bytes;
		} else {
			fresh.in_packets = packets;
			fresh.in_bytes = bytes;
		}
		if (peers.insert(peer, &fresh) == 0) {
			count_total(out ? TOTALS_MATCHED_OUT : TOTALS_MATCHED_IN, packets, bytes);
			return;
		}
		/* -EEXIST: another CPU created the entry after our lookup; any
		 * other error means the map is full, and the frame must still be
		 * counted, never dropped from the totals. */
		c = peers.lookup(peer);
		if (!c) {
			count_total(TOTALS_OVERFLOW, packets, bytes);
			return;
		}
	}
	if (out) {
		c->out_packets += packets;
		c->out_bytes += bytes;
	} else {
		c->in_packets += packets;
		c->in_bytes += bytes;
	}
	count_total(out ? TOTALS_MATCHED_OUT : TOTALS_MATCHED_IN, packets, bytes);
}

#ifdef NCEBPF_PAYLOAD
/* Key: NCEBPF_NEEDLE_MATCH or _NOMATCH. Value: the needle. Written by user space only. */
BPF_ARRAY(payload_needles, struct payload_needle, 2);

/* Key: 0. Value: this CPU's copy of the current window. */
BPF_PERCPU_ARRAY(payload_scratch, struct payload_scratch, 1);

/* Whether the window in s (wlen bytes, maybe 0) passes match and nomatch. */
static __always_inline int payload_accepts(struct payload_scratch *s, __u32 wlen)
{
	__u32 slot;

	fold_window(s);
#ifdef NCEBPF_MATCH
	slot = NCEBPF_NEEDLE_MATCH;
	if (!window_contains(s, wlen, payload_needles.lookup(&slot)))
		return 0;
#endif
#ifdef NCEBPF_NOMATCH
	slot = NCEBPF_NEEDLE_NOMATCH;
	if (window_contains(s, wlen, payload_needles.lookup(&slot)))
		return 0;
#endif
	(void)slot;
	return 1;
}

static __always_inline int xdp_payload_accepts(struct xdp_md *ctx, __u64 len)
{
	__u32 zero = 0, wlen = window_len(len);
	struct payload_scratch *s = payload_scratch.lookup(&zero);

	if (!s)
		return 0;
	if (wlen && bpf_xdp_load_bytes(ctx, NCEBPF_PAYLOAD_OFF, s->words, load_len(wlen)) < 0)
		wlen = 0;
	return payload_accepts(s, wlen);
}

static __always_inline int tc_payload_accepts(struct __sk_buff *skb)
{
	__u32 zero = 0, wlen = window_len(skb->len);
	struct payload_scratch *s = payload_scratch.lookup(&zero);

	if (!s)
		return 0;
	if (wlen && bpf_skb_load_bytes(skb, NCEBPF_PAYLOAD_OFF, s->words, load_len(wlen)) < 0)
		wlen = 0;
	return payload_accepts(s, wlen);
}
#endif

int ncebpf_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	/* Not frags-aware, so the kernel only hands us linear frames. */
	__u64 len = data_end - data;
	struct l3_info l3;
	int parsed;

#ifdef NCEBPF_FILTER
	/* A tag the driver kept in metadata is not seen here: see the README (VLAN tags). */
	if (!ncebpf_filter(data, data_end, len, 0)) {
		count_total(TOTALS_FILTERED_OUT, 1, len);
		return XDP_PASS;
	}
#endif
#ifdef NCEBPF_PAYLOAD
	if (!xdp_payload_accepts(ctx, len)) {
		count_total(TOTALS_FILTERED_OUT, 1, len);
		return XDP_PASS;
	}
#endif
	parsed = parse_l3(data, data_end, &l3, 0);
	if (parsed == 0)
		count_peer(&l3, 1, len);
	else
		count_total(unparsed_slot(parsed), 1, len);
	return XDP_PASS;
}

/* Length of the TCP or UDP header that every segment of a GSO packet repeats. */
static __always_inline __u32 l4_header_len(struct __sk_buff *skb, struct l3_info *l3)
{
	__u8 doff;

	if (l3->l4_proto == IPPROTO_UDP)
		return 8;
	if (l3->l4_proto != IPPROTO_TCP)
		return 0;
	/* The TCP header may sit beyond the linear data direct access covers. */
	if (bpf_skb_load_bytes(skb, l3->l4_off + 12, &doff, 1) < 0)
		return 0;
	return (doff >> 4) * 4;
}

static __always_inline __u64 wire_segments(struct __sk_buff *skb)
{
	return skb->gso_segs > 1 ? skb->gso_segs : 1;
}

/*
 * The outer VLAN tag when the kernel keeps it in metadata rather than in the
 * frame (rx-VLAN offload, the stack's untagging before TC ingress, a VLAN
 * device's tx offload), as TPID << 16 | TCI; 0 when there is none. libpcap
 * puts such a tag back into the frame it hands over, so ncebpf counts the
 * tag's 4 bytes and the filter sees the frame with the tag in place.
 */
static __always_inline __u32 metadata_vlan_tag(struct __sk_buff *skb)
{
	if (!skb->vlan_present)
		return 0;
	return (__u32)ncebpf_be16((__u16)skb->vlan_proto) << 16 | (skb->vlan_tci & 0xffff);
}

/* Rejected by the filter or the payload match: count it, let it pass. */
static __always_inline int tc_filtered_out(struct __sk_buff *skb, __u32 vtag)
{
	__u64 packets = wire_segments(skb);

	count_total(TOTALS_FILTERED_OUT, packets, skb->len + (vtag ? 4 * packets : 0));
	return TC_ACT_UNSPEC;
}

int ncebpf_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 vtag = metadata_vlan_tag(skb);
	__u64 packets, bytes;
	struct l3_info l3;
	int parsed;

#ifdef NCEBPF_FILTER
	/* Direct access sees only the linear part of the skb; the filter must
	 * see every byte it reads, as libpcap would on the wire. */
	if (data + NCEBPF_FILTER_PULL_LEN > data_end && skb->len > data_end - data) {
		bpf_skb_pull_data(skb, skb->len < NCEBPF_FILTER_PULL_LEN ? skb->len
									: NCEBPF_FILTER_PULL_LEN);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	if (!ncebpf_filter(data, data_end, skb->len + (vtag ? 4 : 0), vtag))
		return tc_filtered_out(skb, vtag);
#endif
#ifdef NCEBPF_PAYLOAD
	/* Before anything that forks the verifier's state: the search is costly to verify. */
	if (!tc_payload_accepts(skb))
		return tc_filtered_out(skb, vtag);
#endif
	packets = wire_segments(skb);
	/* Each wire segment carries the tag. */
	bytes = skb->len + (vtag ? 4 * packets : 0);
	parsed = parse_l3(data, data_end, &l3, vtag != 0);
	if (parsed != 0) {
		count_total(unparsed_slot(parsed), packets, bytes);
		return TC_ACT_UNSPEC;
	}
	/* A GSO super-packet leaves the host as gso_segs frames, each with its
	 * own copy of the L2-L4 headers. */
	if (packets > 1)
		bytes += (packets - 1) * (l3.l4_off + l4_header_len(skb, &l3));
	count_peer(&l3, packets, bytes);
	/* UNSPEC, not OK: let any filter after ours classify the packet too. */
	return TC_ACT_UNSPEC;
}

#ifdef NCEBPF_FILTER
/* Never attached: test-run by `ncebpf explain` and the tests to read the
 * filter's verdict. XDP_PASS = match, XDP_DROP = no match. */
int ncebpf_filter_verdict(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return ncebpf_filter(data, data_end, data_end - data, 0) ? XDP_PASS : XDP_DROP;
}
#endif

#ifdef NCEBPF_PAYLOAD
/* Never attached: test-run by the tests and bench for the payload search's
 * verdict alone. XDP_PASS = the frame counts, XDP_DROP = it does not. */
int ncebpf_payload_verdict(struct xdp_md *ctx)
{
	return xdp_payload_accepts(ctx, ctx->data_end - ctx->data) ? XDP_PASS : XDP_DROP;
}
#endif
