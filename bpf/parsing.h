/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Kernel-only header parsing for ncebpf's XDP and TC programs: Ethernet,
 * up to two VLAN tags (802.1Q, 802.1ad/QinQ), IPv4 (with options) and IPv6.
 * Every helper bounds-checks against data_end before it reads, and returns
 * 0 on success or -1 when the frame is not IP or its headers are truncated.
 */
#ifndef NCEBPF_PARSING_H
#define NCEBPF_PARSING_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

#include "byteorder.h"
#include "ncebpf_kern_user.h"

#define NCEBPF_MAX_VLAN_TAGS 2

/* struct vlan_hdr is kernel-internal, not uapi. */
struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct l3_info {
	struct peer_key src;
	struct peer_key dst;
	__u32 l4_off; /* from the start of the frame; IPv6 extension headers not walked */
	__u8 l4_proto;
};

static __always_inline void v4_mapped(struct peer_key *key, __be32 addr)
{
	__u32 *words = (__u32 *)key->addr;

	words[0] = 0;
	words[1] = 0;
	words[2] = ncebpf_be32(0x0000ffff);
	words[3] = addr;
}

static __always_inline __u32 local_slot_of(const struct peer_key *key)
{
	const __u32 *words = (const __u32 *)key->addr;
	__u32 fold = words[0] ^ words[1] ^ words[2] ^ words[3];

	fold ^= fold >> 16;
	fold ^= fold >> 8;
	return fold & (NCEBPF_LOCAL_SLOTS - 1);
}

static __always_inline int same_address(const struct peer_key *a, const struct peer_key *b)
{
	const __u32 *x = (const __u32 *)a->addr, *y = (const __u32 *)b->addr;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline int parse_l3(void *data, void *data_end, struct l3_info *l3)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return -1;
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < NCEBPF_MAX_VLAN_TAGS; i++) {
		struct vlan_tag *tag = data + off;

		if (proto != ncebpf_be16(ETH_P_8021Q) && proto != ncebpf_be16(ETH_P_8021AD))
			break;
		if ((void *)(tag + 1) > data_end)
			return -1;
		proto = tag->encapsulated_proto;
		off += sizeof(*tag);
	}

	if (proto == ncebpf_be16(ETH_P_IP)) {
		struct iphdr *iph = data + off;

		if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
			return -1;
		v4_mapped(&l3->src, iph->saddr);
		v4_mapped(&l3->dst, iph->daddr);
		l3->l4_off = off + iph->ihl * 4;
		l3->l4_proto = iph->protocol;
		return 0;
	}
	if (proto == ncebpf_be16(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = data + off;

		if ((void *)(ip6h + 1) > data_end || ip6h->version != 6)
			return -1;
		__builtin_memcpy(l3->src.addr, &ip6h->saddr, sizeof(l3->src.addr));
		__builtin_memcpy(l3->dst.addr, &ip6h->daddr, sizeof(l3->dst.addr));
		l3->l4_off = off + sizeof(*ip6h);
		l3->l4_proto = ip6h->nexthdr;
		return 0;
	}
	return -1;
}

#endif /* NCEBPF_PARSING_H */
