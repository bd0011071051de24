"""service package."""

__all__: list[str] = []
