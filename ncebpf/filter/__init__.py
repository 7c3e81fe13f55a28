"""tcpdump filters in the kernel: libpcap compiles to classic BPF, we translate to C."""
