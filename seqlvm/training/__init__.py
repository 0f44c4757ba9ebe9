"""Training: the run specification (`spec`), the request and its checks before Ray starts (`request`), the driver
(`driver`) and the Ray Train worker loop (`worker`) with its optimisation step (`step`), a run's MLflow run from its
start to its end, shared by `seqlvm train` and a sweep's trials (`tracked_run`), the training data's
materialisation (`data`), checkpoint evaluation (`evaluate`) and a plain single-process loop (`local`). Sweeps and
reproductions use the names below."""
from seqlvm.training.driver import build_trainer, run_training
from seqlvm.training.evaluate import evaluate_checkpoint
from seqlvm.training.local import train_locally
from seqlvm.training.request import TrainRequest, TrainResult, prepare_run, try_one_step
from seqlvm.training.spec import RunSpec, TrainConfig, keys_set_by, load_config_file
from seqlvm.training.tracked_run import TrackedRun
from seqlvm.training.worker import WorkerTask

__all__ = ["RunSpec", "TrackedRun", "TrainConfig", "TrainRequest", "TrainResult", "WorkerTask", "build_trainer",
           "evaluate_checkpoint", "keys_set_by", "load_config_file", "prepare_run", "run_training", "train_locally",
           "try_one_step"]
