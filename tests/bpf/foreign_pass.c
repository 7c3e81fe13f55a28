/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Another tool's XDP program, for tests: ncebpf must not remove it without --force. */
#include <uapi/linux/bpf.h>

int foreign_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
