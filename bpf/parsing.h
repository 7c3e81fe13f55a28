/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Kernel-only header parsing for ncebpf's XDP and TC programs, mirrored in
 * ncebpf/packet.py: Ethernet, up to NCEBPF_MAX_TAGS VLAN tags (802.1Q,
 * 802.1ad, the old QinQ 0x9100), then IPv4 (with options) or IPv6, directly,
 * in a PPPoE session (PPP protocol 0x0021 / 0x0057) or under a stack of up
 * to NCEBPF_MAX_TAGS MPLS labels (the payload's version nibble after the
 * bottom of stack). Built with -DNCEBPF_RAW_IP for links without a MAC
 * header (tun, WireGuard, PPP, ipip, GRE): the frame starts at the IP header.
 * Every helper bounds-checks against data_end before it reads. parse_l3
 * returns 0 with the addresses, PARSE_NOT_IP for frames that carry no IP
 * (ARP, LLDP, PPPoE discovery, PPP control), or PARSE_UNATTRIBUTED for IP
 * the parser cannot attribute (truncated or bad IP header, more tags or
 * labels than it walks, an MPLS payload that is neither IPv4 nor IPv6).
 */
#ifndef NCEBPF_PARSING_H
#define NCEBPF_PARSING_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

#include "byteorder.h"
#include "ncebpf_kern_user.h"

/* VLAN tags, and separately MPLS labels, walked per frame: a bounded, unrolled loop. */
#define NCEBPF_MAX_TAGS 8

#define PARSE_NOT_IP -1
#define PARSE_UNATTRIBUTED -2

#define NCEBPF_ETH_P_QINQ1 0x9100 /* pre-802.1ad QinQ, still common on access switches */
#define NCEBPF_ETH_P_PPP_SES 0x8864
#define NCEBPF_ETH_P_MPLS_UC 0x8847
#define NCEBPF_ETH_P_MPLS_MC 0x8848
#define NCEBPF_PPP_IP 0x0021
#define NCEBPF_PPP_IPV6 0x0057
#define NCEBPF_PPPOE_HLEN 8 /* 6-byte PPPoE header, 2-byte PPP protocol */
#define NCEBPF_MPLS_BOS 0x00000100 /* bottom-of-stack bit of a label entry, host order */

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

/* A key is five 32-bit words: family and pad, then the address. */
static __always_inline void v4_mapped(struct peer_key *key, __be32 addr)
{
	__u32 *words = (__u32 *)key;

	words[0] = 0;
	key->family = NCEBPF_FAMILY_IPV4;
	words[1] = 0;
	words[2] = 0;
	words[3] = ncebpf_be32(0x0000ffff);
	words[4] = addr;
}

static __always_inline __u32 local_slot_of(const struct peer_key *key)
{
	const __u32 *words = (const __u32 *)key;
	__u32 fold = words[0] ^ words[1] ^ words[2] ^ words[3] ^ words[4];

	fold ^= fold >> 16;
	fold ^= fold >> 8;
	return fold & (NCEBPF_LOCAL_SLOTS - 1);
}

static __always_inline int same_address(const struct peer_key *a, const struct peer_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4];
}

static __always_inline int parse_ipv4(void *data, void *data_end, __u32 off, struct l3_info *l3)
{
	struct iphdr *iph = data + off;

	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
		return PARSE_UNATTRIBUTED;
	v4_mapped(&l3->src, iph->saddr);
	v4_mapped(&l3->dst, iph->daddr);
	l3->l4_off = off + iph->ihl * 4;
	l3->l4_proto = iph->protocol;
	return 0;
}

static __always_inline int parse_ipv6(void *data, void *data_end, __u32 off, struct l3_info *l3)
{
	struct ipv6hdr *ip6h = data + off;

	if ((void *)(ip6h + 1) > data_end || ip6h->version != 6)
		return PARSE_UNATTRIBUTED;
	*(__u32 *)&l3->src = 0;
	l3->src.family = NCEBPF_FAMILY_IPV6;
	*(__u32 *)&l3->dst = *(__u32 *)&l3->src;
	__builtin_memcpy(l3->src.addr, &ip6h->saddr, sizeof(l3->src.addr));
	__builtin_memcpy(l3->dst.addr, &ip6h->daddr, sizeof(l3->dst.addr));
	l3->l4_off = off + sizeof(*ip6h);
	l3->l4_proto = ip6h->nexthdr;
	return 0;
}

/* An IP header whose version only its first nibble tells (raw IP links, MPLS payloads). */
static __always_inline int parse_ip_by_version(void *data, void *data_end, __u32 off,
					       struct l3_info *l3)
{
	__u8 *first = data + off;

	if ((void *)(first + 1) > data_end)
		return PARSE_UNATTRIBUTED;
	if (*first >> 4 == 4)
		return parse_ipv4(data, data_end, off, l3);
	if (*first >> 4 == 6)
		return parse_ipv6(data, data_end, off, l3);
	return PARSE_UNATTRIBUTED;
}

static __always_inline int is_vlan_tpid(__be16 proto)
{
	return proto == ncebpf_be16(ETH_P_8021Q) || proto == ncebpf_be16(ETH_P_8021AD) ||
	       proto == ncebpf_be16(NCEBPF_ETH_P_QINQ1);
}

static __always_inline int parse_mpls(void *data, void *data_end, __u32 off, struct l3_info *l3)
{
#pragma unroll
	for (int i = 0; i < NCEBPF_MAX_TAGS; i++) {
		__be32 *entry = data + off;

		if ((void *)(entry + 1) > data_end)
			return PARSE_UNATTRIBUTED;
		off += sizeof(*entry);
		if (ncebpf_be32(*entry) & NCEBPF_MPLS_BOS)
			return parse_ip_by_version(data, data_end, off, l3);
	}
	return PARSE_UNATTRIBUTED; /* a deeper label stack than we walk */
}

static __always_inline int parse_pppoe(void *data, void *data_end, __u32 off, struct l3_info *l3)
{
	__u8 *session = data + off;
	__be16 ppp_proto;

	if ((void *)(session + NCEBPF_PPPOE_HLEN) > data_end)
		return PARSE_UNATTRIBUTED;
	ppp_proto = *(__be16 *)(session + 6);
	off += NCEBPF_PPPOE_HLEN;
	if (ppp_proto == ncebpf_be16(NCEBPF_PPP_IP))
		return parse_ipv4(data, data_end, off, l3);
	if (ppp_proto == ncebpf_be16(NCEBPF_PPP_IPV6))
		return parse_ipv6(data, data_end, off, l3);
	return PARSE_NOT_IP; /* LCP, IPCP, authentication: the session's control traffic */
}

/* meta_tags: 1 when the kernel keeps the frame's outer VLAN tag in metadata (TC only):
 * that tag counts towards the tags walked, as if it were still in the frame. */
static __always_inline int parse_l3(void *data, void *data_end, struct l3_info *l3,
				    __u32 meta_tags)
{
#ifdef NCEBPF_RAW_IP
	(void)meta_tags;
	return parse_ip_by_version(data, data_end, 0, l3);
#else
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return PARSE_NOT_IP;
	proto = eth->h_proto;
	/* Plain frames first: they are nearly all of them. */
	if (proto == ncebpf_be16(ETH_P_IP))
		return parse_ipv4(data, data_end, off, l3);

#pragma unroll
	for (int i = 0; i < NCEBPF_MAX_TAGS; i++) {
		struct vlan_tag *tag = data + off;

		if (!is_vlan_tpid(proto) || i + meta_tags >= NCEBPF_MAX_TAGS)
			break;
		if ((void *)(tag + 1) > data_end)
			return PARSE_UNATTRIBUTED;
		proto = tag->encapsulated_proto;
		off += sizeof(*tag);
	}

	if (proto == ncebpf_be16(ETH_P_IP))
		return parse_ipv4(data, data_end, off, l3);
	if (proto == ncebpf_be16(ETH_P_IPV6))
		return parse_ipv6(data, data_end, off, l3);
	if (proto == ncebpf_be16(NCEBPF_ETH_P_PPP_SES))
		return parse_pppoe(data, data_end, off, l3);
	if (proto == ncebpf_be16(NCEBPF_ETH_P_MPLS_UC) || proto == ncebpf_be16(NCEBPF_ETH_P_MPLS_MC))
		return parse_mpls(data, data_end, off, l3);
	if (is_vlan_tpid(proto))
		return PARSE_UNATTRIBUTED; /* more tags than we walk */
	return PARSE_NOT_IP;
#endif
}

#endif /* NCEBPF_PARSING_H */
