"""Operations: telemetry (log lines and metrics, with the log privacy filter) and worker-process tuning."""

__all__: list[str] = []
