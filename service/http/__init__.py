"""The HTTP surface: the app, its routes, dependencies, middleware, error answers and OpenAPI."""

__all__: list[str] = []
