"""Thin trainers, networks and data for the UDA methods served by uda_ops (they use only its public API)."""
