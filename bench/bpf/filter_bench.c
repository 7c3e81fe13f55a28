/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The translated filter for `udp port 53 and dst host 10.77.0.1` (generated
 * into ncebpf_filter.h by bench/run.py) next to the same check written by
 * hand, each as an XDP program whose return value is the verdict.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

#include "byteorder.h"
#include "ncebpf_filter.h"

#define DNS_SERVER 0x0a4d0001 /* 10.77.0.1 */

int translated_verdict(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return ncebpf_filter(data, data_end, data_end - data, 0) ? XDP_PASS : XDP_DROP;
}

int handwritten_verdict(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	struct udphdr *udp;

	if ((void *)(iph + 1) > data_end || eth->h_proto != ncebpf_be16(ETH_P_IP))
		return XDP_DROP;
	if (iph->protocol != IPPROTO_UDP || iph->frag_off & ncebpf_be16(0x1fff))
		return XDP_DROP;
	udp = (void *)iph + iph->ihl * 4;
	if ((void *)(udp + 1) > data_end)
		return XDP_DROP;
	if (udp->source != ncebpf_be16(53) && udp->dest != ncebpf_be16(53))
		return XDP_DROP;
	return iph->daddr == ncebpf_be32(DNS_SERVER) ? XDP_PASS : XDP_DROP;
}
