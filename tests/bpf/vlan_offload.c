/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * TC egress on the sending side of a test: tags every frame with VLAN_ID in
 * skb metadata, as a VLAN device or an offloading driver keeps it, so that
 * the receiver gets the tag beside the frame rather than in its bytes.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/pkt_cls.h>

#include "byteorder.h"

int vlan_offload(struct __sk_buff *skb)
{
	bpf_skb_vlan_push(skb, ncebpf_be16(ETH_P_8021Q), VLAN_ID);
	return TC_ACT_OK;
}
