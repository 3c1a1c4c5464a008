"""Classification adaptation: data, networks and trainers for source-only, ADR, DTA and I2I Adapt."""
