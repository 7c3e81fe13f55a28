/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* The BPF_PROG_TEST_RUN harness alone: what every XDP program pays before its first insn. */
#include <uapi/linux/bpf.h>

int baseline_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
