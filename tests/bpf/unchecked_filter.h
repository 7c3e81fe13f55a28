/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* A filter the verifier must refuse: it reads the packet without a bounds check. */
#define NCEBPF_FILTER_PULL_LEN 64

static __always_inline __u32 ncebpf_filter(const __u8 *data, const __u8 *data_end,
					   __u32 wire_len, __u32 vtag)
{
	(void)data_end;
	(void)wire_len;
	(void)vtag;
	return data[40];
}
