/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Differential-test harness: filters.gen.h (written by the test) defines
 * one translated filter per expression and NCEBPF_TEST_FILTERS(F), which
 * applies F to each filter's name. Each gets an XDP and a TC program whose
 * return value is the verdict, for BPF_PROG_TEST_RUN.
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
		return name(data, data_end, data_end - data) ? XDP_PASS : XDP_DROP;     \
	}                                                                               \
	int name##_tc(struct __sk_buff *skb)                                            \
	{                                                                               \
		void *data = (void *)(long)skb->data;                                   \
		void *data_end = (void *)(long)skb->data_end;                           \
                                                                                        \
		return name(data, data_end, skb->len) ? TC_ACT_OK : TC_ACT_SHOT;        \
	}

NCEBPF_TEST_FILTERS(VERDICT_PROGRAMS)
