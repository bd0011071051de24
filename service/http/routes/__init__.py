"""The routes of the HTTP surface, one module per concern."""

__all__: list[str] = []
