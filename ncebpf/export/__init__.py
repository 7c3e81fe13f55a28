"""What leaves the process for other systems after each drain: Prometheus metrics (prometheus).
"""
