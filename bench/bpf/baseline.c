/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Reference points for bench/run.py: the BPF_PROG_TEST_RUN harness alone,
 * and the least a per-peer counter can cost here — one per-CPU hash update
 * with ncebpf's 16-byte key and 32-byte value, no parsing, no peer rule.
 */
#include <uapi/linux/bpf.h>

#include "ncebpf_kern_user.h"

BPF_TABLE("percpu_hash", struct peer_key, struct peer_counters, floor_peers, 1024);

int baseline_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

int baseline_percpu_update(struct xdp_md *ctx)
{
	struct peer_key key = {.addr = {[10] = 0xff, [11] = 0xff, 10, 77, 0, 2}};
	struct peer_counters *c = floor_peers.lookup(&key);

	if (c) {
		c->in_packets++;
		c->in_bytes += 60;
	} else {
		struct peer_counters fresh = {.in_packets = 1, .in_bytes = 60};

		floor_peers.update(&key, &fresh);
	}
	return XDP_PASS;
}
