"""Migration revisions, oldest first by their ``revision`` ids (``0001``, ``0002``, …)."""

__all__: list[str] = []
