"""Operations: metrics, logging, log privacy, worker-process tuning."""
