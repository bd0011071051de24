"""rules package."""

__all__: list[str] = []
