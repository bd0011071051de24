"""Operations: metrics, logging, log privacy, worker-process tuning."""

__all__: list[str] = []
