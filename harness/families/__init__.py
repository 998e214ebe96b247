"""The vision families the harness runs: one module per family (its FAMILY declaration), the registry
that finds them, and the builder of their tiny models."""
