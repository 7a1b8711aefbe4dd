"""A fleet of simulated workload containers on loopback: the demo and the end-to-end harness."""
