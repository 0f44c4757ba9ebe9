"""MLflow: runs and their metrics (`runs`), a worker's metric outbox (`outbox`), a run's figures (`figures`), and
the model registry (`registry`, with the registered model's code in `pyfunc_model`). Callers use the names below,
or `seqlvm.tracking.registry`."""
from seqlvm.tracking.figures import log_samples, log_training_figures
from seqlvm.tracking.outbox import WORKER_HTTP_SETTINGS, MetricOutbox
from seqlvm.tracking.runs import (
                                  MetricLogger,
                                  check_no_credentials,
                                  check_reachable,
                                  client,
                                  default_tracking_uri,
                                  ensure_experiment,
                                  flatten,
                                  log_params,
                                  metric_history,
                                  redact,
                                  resolve_tracking_uri,
                                  start_or_resume_run,
)

__all__ = ["MetricLogger", "MetricOutbox", "WORKER_HTTP_SETTINGS", "check_no_credentials", "check_reachable",
           "client", "default_tracking_uri", "ensure_experiment", "flatten", "log_params", "log_samples",
           "log_training_figures",
           "metric_history", "redact", "resolve_tracking_uri", "start_or_resume_run"]
