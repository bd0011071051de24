"""cds_hooks package."""

__all__: list[str] = []
