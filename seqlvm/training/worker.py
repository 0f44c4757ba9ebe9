"""The per-worker training loop run by Ray Train: take this worker's batches of each epoch's plan, step the model,
evaluate on the validation shard, report metrics and checkpoints. Only rank 0 logs to MLflow and writes
checkpoints; every worker calls `ray.train.report`, as Train requires."""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from pipelines.dataset import PreparedDataset
from pipelines.description import DataDescription
from pipelines.epoch_reading import PlannedBatch, epoch_batches, filler_batch
from pipelines.epochs import EpochPosition
from pipelines.stream import ray_batches
from seqlvm.checkpoint import read_checkpoint, save_checkpoint
from seqlvm.evaluation import TOTAL_KEYS, CollapseGuard, LatentPosteriors, add_totals, decode_sample, summarize
from seqlvm.run_log import duration, progress
from seqlvm.tracking import WORKER_HTTP_SETTINGS, MetricOutbox
from seqlvm.training.data import epoch_planner, window_source
from seqlvm.training.spec import RunSpec, TrainConfig
from seqlvm.training.step import all_weights_finite, make_optimizer, schedule_weight, take_step
from seqlvm.training.tracked_run import TrackedRun

MAX_CONSECUTIVE_NONFINITE = 20  # skipped steps in a row that end a run
# Validation sentences decoded from their posterior mean per worker and evaluation: enough to tell a decoder that
# ignores z (a few distinct decodes) from one that uses it (most distinct), in well under a second.
VALIDATION_DECODES = 200


@dataclass
class WorkerTask:
    """What each Ray Train worker of a run is given: the run spec, and where its data and MLflow run are."""
    spec: RunSpec
    data: DataDescription  # kept in every checkpoint
    tracking_uri: str
    mlflow_run_id: str
    batch_log: str | None = None  # the file each worker appends its batches' rows to (train.batch_log)

    @classmethod
    def of(cls, spec: RunSpec, dataset: PreparedDataset, run: TrackedRun, batch_log: str | None = None
           ) -> "WorkerTask":
        return cls(spec, DataDescription.of_dataset(dataset), run.tracking_uri, run.run_id, batch_log)


def all_reduce_sum(values: dict[str, float], device) -> dict[str, float]:
    """Sum a dict of floats over workers (a no-op with one worker)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


@torch.no_grad()
def validate(model, shard, cfg: TrainConfig, device, layout) -> dict[str, float]:
    """The validation metrics (unprefixed), in full precision so the reported ELBO is the true one; with a global
    latent, its mutual information and active units, and for a sentence latent its posterior decodes' metrics (on
    each worker's shard, averaged over workers)."""
    model.eval()
    totals = {k: 0.0 for k in TOTAL_KEYS}
    posteriors = LatentPosteriors(model)
    sample = decode_sample(model, VALIDATION_DECODES)
    for i, batch in enumerate(ray_batches(shard, cfg.batch_size, cfg.bucket_factor, layout=layout)):
        if cfg.eval_batches is not None and i >= cfg.eval_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        add_totals(totals, model(batch).totals)
        mu = posteriors.add(batch)
        if sample is not None:
            sample.offer(mu, batch["targets"])
    latent_use = {**posteriors.metrics(), **(sample.decode(model).metrics() if sample is not None else {})}
    model.train()
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    latent_use = {k: v / world for k, v in all_reduce_sum(latent_use, device).items()}
    return {**summarize(all_reduce_sum(totals, device)), **latent_use}


class Trainer:
    """State of one worker's run; `run()` is the loop."""

    def __init__(self, task: WorkerTask):
        import ray.train
        import ray.train.torch

        self.task = task
        self.cfg = task.spec.train
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        torch.manual_seed(self.cfg.seed * 1000 + self.rank)
        self.device = ray.train.torch.get_device()
        self.net = task.spec.build_model(task.data.input_size)
        self.layout = task.data.layout
        self.optimizer = make_optimizer(self.net, self.cfg)
        self.step, self.epoch, self.skipped, self.consecutive_nonfinite = 0, 0, 0, 0
        self.epoch_step = 0  # steps taken in this epoch: where its plan continues
        dataset = PreparedDataset.open(task.data.location)
        self.planner = epoch_planner(dataset, self.cfg, self.world)
        self.windows = window_source(dataset, self.planner)
        self.stop_reason: str | None = None
        progress(f"worker rank {self.rank} of {self.world}: pid {os.getpid()} on {ray.util.get_node_ip_address()}",
                 echo=False)
        pending = self._restore(ray.train.get_checkpoint())
        self.outbox = None
        if self.rank == 0:
            for key, value in WORKER_HTTP_SETTINGS.items():
                os.environ.setdefault(key, value)
            # Workers restarted after a failure run the steps after their checkpoint (or all steps) again.
            self.outbox = MetricOutbox(task.tracking_uri, task.mlflow_run_id, pending,
                                       replay_after=self.step)
            if self.step:
                self.outbox.add({"train/resumed_from_step": self.step}, self.step)
                self._deliver()
        self.model = ray.train.torch.prepare_model(self.net)
        self.scaler = torch.amp.GradScaler("cuda") if (self.device.type == "cuda"
                                                       and self.cfg.mixed_precision == "fp16") else None

    def _restore(self, checkpoint) -> list:
        """Continue from a checkpoint: after a user's resume, or after Ray Train restarted the workers because one
        died. Returns the metrics the checkpoint holds undelivered, to send again (harmless if they had arrived)."""
        if checkpoint is None:
            return []
        with checkpoint.as_directory() as folder:
            payload = read_checkpoint(Path(folder) / "model.pt")
        self.net.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step, self.skipped = payload["step"], payload.get("skipped_steps", 0)
        # Checkpoints written before epoch plans hold no position in their epoch: it restarts.
        saved = EpochPosition(**payload.get("position", {"epoch": payload["epoch"], "steps": 0, "world": self.world}))
        position = saved.resumed_by(self.world)
        self.epoch, self.epoch_step = position.epoch, position.steps
        if self.rank == 0:
            progress(f"resuming from step {self.step} (epoch {self.epoch}, step {self.epoch_step} of it)")
            if position != saved:
                progress(f"the checkpoint was written by {saved.world} workers, this run has {self.world}: epoch "
                         f"{self.epoch} starts again from its beginning (its batches were dealt to "
                         f"{saved.world} workers)")
        return payload.get("pending_metrics", [])

    def _max_steps(self) -> float:
        return self.cfg.max_steps if self.cfg.max_steps is not None else float("inf")

    def _finished(self) -> bool:
        return self.step >= self._max_steps() or self.epoch >= self.cfg.epochs or self.stop_reason is not None

    def _all_agree(self, *checks: bool) -> list[bool]:
        """Whether each check passed on every worker: all must skip or stop a step together, or DDP would
        deadlock."""
        if self.world == 1:
            return list(checks)
        flags = torch.tensor([float(ok) for ok in checks], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        return [bool(flag) for flag in flags.tolist()]

    def _first_failure(self, own: str | None) -> str | None:
        """The cause of a failed step on the first worker that had one, so every worker (rank 0 reports it) stops
        with the real reason; only ever called when a step failed."""
        if self.world == 1:
            return own
        causes: list[str | None] = [None] * self.world
        dist.all_gather_object(causes, own)
        return next((cause for cause in causes if cause), None)

    def train_step(self, batch: dict, loss_scale: float = 1.0) -> dict[str, torch.Tensor] | None:
        """One optimiser step; None when it was skipped because the loss or the gradient was NaN/inf, or when it
        raised an error a retry cannot fix (here or on another worker), which ends the run."""
        self.step += 1
        self.epoch_step += 1
        result = take_step(self.model, self.optimizer, batch, schedule_weight(self.step, self.cfg), self.cfg,
                           self.device, self.scaler, agree=self._all_agree, explain=self._first_failure,
                           loss_scale=loss_scale)
        if result.failure is not None:  # every worker stops here together
            self.stop_reason = (f"step {self.step}: {result.failure} (an error in the model, its data or its "
                                "configuration: not retried)")
            return None
        if result.totals is not None:
            self.consecutive_nonfinite = 0
            return result.totals
        self.skipped += 1
        self.consecutive_nonfinite += 1
        if self.consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
            self.stop_reason = (f"loss or gradient was NaN/inf for {MAX_CONSECUTIVE_NONFINITE} consecutive steps "
                                f"(last at step {self.step}); lower train.lr or check the data")
        return None

    def _deliver(self, retry: bool = True) -> None:
        """Send the metrics waiting in the outbox; while MLflow is down, say so once, train on, and try again only
        at checkpoints (`retry`), so a server that hangs slows training once per checkpoint at most."""
        was_failing = self.outbox.last_error is not None
        if was_failing and not retry:
            return
        if self.outbox.flush():
            if was_failing:
                progress(f"MLflow is reachable again: metrics delivered up to step {self.step}")
        elif not was_failing:
            progress(f"MLflow unreachable ({self.outbox.last_error}): training goes on, {len(self.outbox.pending)} "
                     "metrics wait in the checkpoints and are sent when it is back")

    def _checkpoint_and_report(self, metrics: dict[str, float]) -> None:
        import ray.train

        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        if not all_weights_finite(self.net):  # unreachable while steps with NaN/inf gradients are skipped
            raise FloatingPointError(f"weights are not finite at step {self.step}; not checkpointing them")
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(Path(folder), self.net, optimizer=self.optimizer.state_dict(), step=self.step,
                            epoch=self.epoch, skipped_steps=self.skipped, config=self.task.spec.to_dict(),
                            position=dataclasses.asdict(EpochPosition(self.epoch, self.epoch_step, self.world)),
                            data=self.task.data.to_dict(), mlflow_run_id=self.task.mlflow_run_id,
                            pending_metrics=self.outbox.pending)
            # Before reporting: a sweep's scheduler may end this trial as soon as it sees the report.
            self._deliver()
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=f"checkpoint_{self.step:08d}")

    def run(self) -> None:
        import ray.train

        cfg = self.cfg
        valid_shard = ray.train.get_dataset_shard("valid")
        window: dict[str, float] = {k: 0.0 for k in TOTAL_KEYS}
        # Throughput counts the time spent waiting for batches and stepping, not evaluations and checkpoints.
        window_seconds, clock = 0.0, time.time()
        last_reported = None
        while not self._finished():
            plan = self.planner.plan(self.epoch)
            mine = plan.batch_counts[self.rank]
            batches = epoch_batches(self.planner, plan, self.rank, self.epoch_step, self.windows, self.layout)
            filler: PlannedBatch | None = None
            while self.epoch_step < plan.steps:
                # A worker out of batches still takes the step (DDP's collectives need every worker), with weight
                # 0; the others' losses are scaled so the averaged gradient is the mean over the real batches.
                real = self.epoch_step < mine
                if real:
                    planned = filler = next(batches)
                    loss_scale = self.world / plan.real_workers(self.epoch_step)
                else:
                    filler = filler or filler_batch(self.planner, plan, self.rank, self.windows, self.layout)
                    planned, loss_scale = filler, 0.0
                totals = self.train_step(planned.tensors, loss_scale)
                self._log_batch(planned if real else None)
                if totals is not None and real:
                    add_totals(window, totals)
                window_seconds += time.time() - clock
                if self.step % cfg.log_every == 0:
                    self._log_train(window, window_seconds)
                    window, window_seconds = {k: 0.0 for k in TOTAL_KEYS}, 0.0
                if self.stop_reason is not None:
                    break
                if self.step % cfg.eval_every == 0 or self.step >= self._max_steps():
                    self._evaluate_and_report(valid_shard)
                    last_reported = self.step
                clock = time.time()
                if self.step >= self._max_steps():
                    break
            else:
                self.epoch, self.epoch_step = self.epoch + 1, 0
        if self.stop_reason is not None:
            self._stop()
        elif last_reported != self.step:
            self._evaluate_and_report(valid_shard)
        if self.rank == 0 and cfg.max_steps is not None and self.step < cfg.max_steps and not self.stop_reason:
            progress(f"stopped at step {self.step}: train.epochs={cfg.epochs} came before "
                     f"train.max_steps={cfg.max_steps}")

    def _log_batch(self, planned: PlannedBatch | None) -> None:
        """With train.batch_log: this step's batch as (shard, row) ids, none for a step of weight 0; one line
        written with one call on a file opened for appending, so the workers' lines do not interleave."""
        if self.task.batch_log is None:
            return
        rows = [] if planned is None else [[planned.shard, int(row)] for row in planned.rows]
        line = json.dumps({"epoch": self.epoch, "step": self.step, "epoch_step": self.epoch_step,
                           "rank": self.rank, "pid": os.getpid(), "rows": rows}) + "\n"
        Path(self.task.batch_log).parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.task.batch_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode())
        finally:
            os.close(descriptor)

    def _stop(self) -> None:
        """End the run early. The last checkpoint (of weights no skipped step has touched) carries the reason to
        the driver; raising instead would make Ray Train restart the workers from a checkpoint, only to fail
        again."""
        if self.rank == 0:
            progress(f"stopping: {self.stop_reason}")
            self.outbox.add({"train/skipped_steps": self.skipped}, self.step)
        self._checkpoint_and_report({"step": self.step, "skipped_steps": self.skipped,
                                     "stop_reason": self.stop_reason})

    def _log_train(self, window: dict[str, float], seconds: float) -> None:
        totals = all_reduce_sum(window, self.device)
        if self.rank != 0:
            return
        metrics = summarize(totals, prefix="train/") if totals["sequences"] else {}
        metrics.update({"train/kl_weight": schedule_weight(self.step, self.cfg),
                        "train/tokens_per_sec": totals["steps"] / max(seconds, 1e-9),
                        "train/skipped_steps": self.skipped, "epoch": self.epoch})
        self.outbox.add(metrics, self.step)
        self._deliver(retry=False)
        bound = metrics.get("train/nll_bound", float("nan"))
        remaining = self._max_steps() - self.step
        eta = f" | ETA {duration(remaining * seconds / self.cfg.log_every)}" if remaining < float("inf") else ""
        progress(f"step {self.step:>6} | epoch {self.epoch} | nll bound {bound:8.2f} | "
                 f"kl {metrics.get('train/kl', 0.0):6.2f} | kl weight {metrics['train/kl_weight']:.3f} | "
                 f"{metrics['train/tokens_per_sec']:8.0f} {'tok' if self.task.data.is_text else 'steps'}/s"
                 f"{eta}")

    def _evaluate_and_report(self, valid_shard) -> None:
        # The unwrapped model: no DDP collectives.
        validation = validate(self.net, valid_shard, self.cfg, self.device, self.layout)
        guard = CollapseGuard.of(self.cfg)
        metrics = {f"valid/{k}": v for k, v in validation.items()}
        metrics.update(step=self.step, epoch=self.epoch, skipped_steps=self.skipped,
                       objective=guard.objective(validation["nll_bound"], validation),
                       collapsed=float(guard.collapse(validation) is not None))
        if self.rank == 0:
            self.outbox.add({k: v for k, v in metrics.items() if k.startswith("valid/")}, self.step)
            quality = (f"ppl {metrics['valid/ppl_bound']:8.1f}" if self.task.data.is_text
                       else f"elbo/step {metrics['valid/elbo_per_step']:8.3f}")
            latent = (f" | MI {validation['mutual_info']:5.2f} | active units {validation['active_units']:.0f}"
                      if "mutual_info" in validation else "")
            progress(f"step {self.step:>6} | valid nll bound {metrics['valid/nll_bound']:8.2f} | "
                     f"kl {metrics['valid/kl']:6.2f} | {quality}{latent}")
        self._checkpoint_and_report(metrics)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point; its config holds the run's `WorkerTask` under "task"."""
    Trainer(config["task"]).run()
