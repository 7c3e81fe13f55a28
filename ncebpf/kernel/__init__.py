"""Everything that touches BPF: headers, build, attach, maps. The only privileged code."""
