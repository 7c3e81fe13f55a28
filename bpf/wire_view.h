/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The frame as it was on the wire when the kernel keeps its outer VLAN tag
 * in metadata: byte n of that frame is data[n] for n < 12, the tag (vtag =
 * TPID << 16 | TCI) for 12..15, and data[n - 4] from 16 on. Included by the
 * filters ncebpf/filter/translate.py generates; needs byteorder.h.
 */
#ifndef NCEBPF_WIRE_VIEW_H
#define NCEBPF_WIRE_VIEW_H
/* Keeps the compiler from folding `- 4` into the packet pointer's constant
 * offset, where the verifier refuses a negative one. */
#define NCEBPF_OPAQUE(x) asm volatile("" : "+r"(x))

/* Shifts byte `at` of the wire view into *value; 0 when it is beyond the frame. */
static __always_inline int ncebpf_wire_byte(const __u8 *data, const __u8 *data_end,
					    __u32 vtag, __u64 at, __u32 *value)
{
	const __u8 *p;
	__u64 index;

	if (at >= 12 && at < 16) {
		*value = *value << 8 | ((vtag >> (8 * (15 - at))) & 0xff);
		return 1;
	}
	index = at < 12 ? at : at - 4;
	NCEBPF_OPAQUE(index);
	p = data + index;
	if (p + 1 > data_end)
		return 0;
	*value = *value << 8 | *p;
	return 1;
}

static __always_inline int ncebpf_tagged_load(const __u8 *data, const __u8 *data_end,
					      __u32 vtag, __u64 off, __u32 width, __u32 *out)
{
	const __u8 *p;
	__u32 value = 0;
	__u64 index;

	if (off >= 16) {
		index = off - 4;
		NCEBPF_OPAQUE(index);
		p = data + index;
		if (p + width > data_end)
			return 0;
		*out = width == 1 ? *p : width == 2 ? ncebpf_be16(*(const __u16 *)p)
						    : ncebpf_be32(*(const __u32 *)p);
		return 1;
	}
	if (!ncebpf_wire_byte(data, data_end, vtag, off, &value))
		return 0;
	if (width >= 2 && !ncebpf_wire_byte(data, data_end, vtag, off + 1, &value))
		return 0;
	if (width == 4 && (!ncebpf_wire_byte(data, data_end, vtag, off + 2, &value) ||
			   !ncebpf_wire_byte(data, data_end, vtag, off + 3, &value)))
		return 0;
	*out = value;
	return 1;
}
#endif /* NCEBPF_WIRE_VIEW_H */
