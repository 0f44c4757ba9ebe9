"""Training: the run specification (`spec`), the request and its checks before Ray starts (`request`), the driver
(`driver`) and the Ray Train worker loop (`worker`) with its optimisation step (`step`), the training data's
materialisation (`data`), the delivery of a run's last metrics (`delivery`), checkpoint evaluation (`evaluate`)
and a plain single-process loop (`local`). Sweeps use the names below."""
from seqlvm.training.driver import build_trainer, open_run, run_training
from seqlvm.training.evaluate import evaluate_checkpoint
from seqlvm.training.request import TrainRequest, TrainResult, prepare_run, try_one_step
from seqlvm.training.spec import RunSpec, TrainConfig, load_config_file

__all__ = ["RunSpec", "TrainConfig", "TrainRequest", "TrainResult", "build_trainer", "evaluate_checkpoint",
           "load_config_file", "open_run", "prepare_run", "run_training", "try_one_step"]
