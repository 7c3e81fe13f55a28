/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Differential-test harness: filters.gen.h (written by the test) defines
 * one translated filter per expression and NCEBPF_TEST_FILTERS(F), which
 * applies F to each filter's name. Each gets an XDP and a TC program whose
 * return value is the verdict, for BPF_PROG_TEST_RUN, and a third program
 * for the view through a VLAN tag in metadata: it takes a tagged frame, moves
 * the tag out of the bytes as rx-VLAN offload does, and runs the filter on
 * the rest with the tag passed beside it (XDP_ABORTED: not a tagged frame).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "byteorder.h"
#include "filters.gen.h"

#define VERDICT_PROGRAMS(name)                                                          \
	int name##_xdp(struct xdp_md *ctx)                                              \
	{                                                                               \
		void *data = (void *)(long)ctx->data;                                   \
		void *data_end = (void *)(long)ctx->data_end;                           \
                                                                                        \
		return name(data, data_end, data_end - data, 0) ? XDP_PASS : XDP_DROP;  \
	}                                                                               \
	int name##_tc(struct __sk_buff *skb)                                            \
	{                                                                               \
		void *data = (void *)(long)skb->data;                                   \
		void *data_end = (void *)(long)skb->data_end;                           \
                                                                                        \
		return name(data, data_end, skb->len, 0) ? TC_ACT_OK : TC_ACT_SHOT;     \
	}                                                                               \
	int name##_tagged(struct xdp_md *ctx)                                           \
	{                                                                               \
		__u8 *f = (void *)(long)ctx->data;                                      \
		void *data_end = (void *)(long)ctx->data_end;                           \
		__u32 vtag;                                                             \
                                                                                        \
		if ((void *)(f + 16) > data_end)                                        \
			return XDP_ABORTED;                                             \
		vtag = (__u32)f[12] << 24 | (__u32)f[13] << 16 | (__u32)f[14] << 8 | f[15]; \
		_Pragma("unroll") for (int i = 11; i >= 0; i--) f[i + 4] = f[i];       \
		if (bpf_xdp_adjust_head(ctx, 4))                                        \
			return XDP_ABORTED;                                             \
		f = (void *)(long)ctx->data;                                            \
		data_end = (void *)(long)ctx->data_end;                                 \
		return name(f, data_end, (__u8 *)data_end - f + 4, vtag) ? XDP_PASS : XDP_DROP; \
	}

NCEBPF_TEST_FILTERS(VERDICT_PROGRAMS)
