"""Client authentication: JWT verification, issuer keys (JWK Sets), the replay check, the development issuer."""

__all__: list[str] = []
