/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Network-to-host byte order for packet loads, for the parsers and for the
 * generated filter (ncebpf_filter.h). No kernel headers, so the generated C
 * also compiles as plain C in the unprivileged tests.
 */
#ifndef NCEBPF_BYTEORDER_H
#define NCEBPF_BYTEORDER_H

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ncebpf_be16(x) __builtin_bswap16(x)
#define ncebpf_be32(x) __builtin_bswap32(x)
#else
#define ncebpf_be16(x) (x)
#define ncebpf_be32(x) (x)
#endif

#endif /* NCEBPF_BYTEORDER_H */
