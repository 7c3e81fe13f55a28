"""ncebpf: per-peer traffic accounting in the kernel (XDP ingress, TC egress)."""

__version__ = "0.1.0"
