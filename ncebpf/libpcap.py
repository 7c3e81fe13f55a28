"""The system libpcap through ctypes: one binding for the filter compiler and the capture."""

from __future__ import annotations

import ctypes as ct
import ctypes.util
from functools import cache

from ncebpf.errors import NcebpfError

PCAP_ERRBUF_SIZE = 256


class BpfInsn(ct.Structure):
    _fields_ = [("code", ct.c_ushort), ("jt", ct.c_ubyte), ("jf", ct.c_ubyte),
                ("k", ct.c_uint32)]


class BpfProgram(ct.Structure):
    _fields_ = [("bf_len", ct.c_uint), ("bf_insns", ct.POINTER(BpfInsn))]


class PktHdr(ct.Structure):
    _fields_ = [("tv_sec", ct.c_long), ("tv_usec", ct.c_long), ("caplen", ct.c_uint32),
                ("len", ct.c_uint32)]


class Stat(ct.Structure):
    _fields_ = [("ps_recv", ct.c_uint), ("ps_drop", ct.c_uint), ("ps_ifdrop", ct.c_uint)]


# The packet handler takes plain addresses (user, struct pcap_pkthdr *, bytes): building
# ctypes pointer objects for every frame, and checking them again on the way into
# pcap_offline_filter, costs about twice what the filter itself does.
Handler = ct.CFUNCTYPE(None, ct.c_void_p, ct.c_void_p, ct.c_void_p)


@cache
def lib() -> ct.CDLL:
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        pcap = ct.CDLL(name)
    except OSError as exc:
        raise NcebpfError("libpcap is missing: install it with 'apt-get install libpcap0.8'") \
            from exc
    signatures = {
        "pcap_open_dead": ([ct.c_int, ct.c_int], ct.c_void_p),
        "pcap_create": ([ct.c_char_p, ct.c_char_p], ct.c_void_p),
        "pcap_set_snaplen": ([ct.c_void_p, ct.c_int], ct.c_int),
        "pcap_set_promisc": ([ct.c_void_p, ct.c_int], ct.c_int),
        "pcap_set_immediate_mode": ([ct.c_void_p, ct.c_int], ct.c_int),
        "pcap_set_buffer_size": ([ct.c_void_p, ct.c_int], ct.c_int),
        "pcap_activate": ([ct.c_void_p], ct.c_int),
        "pcap_compile": ([ct.c_void_p, ct.POINTER(BpfProgram), ct.c_char_p, ct.c_int,
                          ct.c_uint32], ct.c_int),
        "pcap_datalink": ([ct.c_void_p], ct.c_int),
        "pcap_datalink_val_to_name": ([ct.c_int], ct.c_char_p),
        "pcap_setfilter": ([ct.c_void_p, ct.POINTER(BpfProgram)], ct.c_int),
        "pcap_setnonblock": ([ct.c_void_p, ct.c_int, ct.c_char_p], ct.c_int),
        "pcap_get_selectable_fd": ([ct.c_void_p], ct.c_int),
        "pcap_dispatch": ([ct.c_void_p, ct.c_int, Handler, ct.c_void_p], ct.c_int),
        "pcap_stats": ([ct.c_void_p, ct.POINTER(Stat)], ct.c_int),
        "pcap_geterr": ([ct.c_void_p], ct.c_char_p),
        "pcap_statustostr": ([ct.c_int], ct.c_char_p),
        "pcap_freecode": ([ct.POINTER(BpfProgram)], None),
        "pcap_close": ([ct.c_void_p], None),
        "pcap_offline_filter": ([ct.c_void_p, ct.c_void_p, ct.c_void_p], ct.c_int),
        "bpf_filter": ([ct.POINTER(BpfInsn), ct.c_char_p, ct.c_uint, ct.c_uint], ct.c_uint),
    }
    for function, (argtypes, restype) in signatures.items():
        getattr(pcap, function).argtypes = argtypes
        getattr(pcap, function).restype = restype
    return pcap
