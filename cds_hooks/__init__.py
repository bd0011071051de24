"""cds_hooks package."""
