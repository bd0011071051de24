"""Migration revisions, oldest first by their ``revision`` ids (``0001``, ``0002``, …)."""
