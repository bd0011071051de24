"""The hook pipeline: hook definitions, the front door every hook call goes through, data gathering, cards."""

__all__: list[str] = []
