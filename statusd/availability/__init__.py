"""Availability from the transition history: seconds in each state group per workload and group,
availability = up / (up + down), time statusd could not hear left out, and the daily rollup that
keeps the figures once retention has deleted the history."""
