"""The deployment: a FastAPI ingress with one POST path per operation and `GET /` (or `/info`) describing the
model, run by Ray Serve in one or more replicas. Each replica holds a `ModelFollower` and answers every request
through `ModelOperations`; model calls run one at a time on a worker thread, so the event loop keeps queueing
requests into the next batch while the model computes."""
# No `from __future__ import annotations`: FastAPI reads the request types of the routes at run time.

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from ray import serve

from seqlvm.operations import ModelOperations, RequestError
from seqlvm.serving import errors, schemas
from seqlvm.serving.batching import Job, answer_jobs
from seqlvm.serving.follower import ModelFollower, ServedModel
from seqlvm.serving.media import rendered_files
from seqlvm.serving.settings import ServeSettings
from seqlvm.serving.source import ModelSource

app = FastAPI(title="seqlvm model service", description="Sample, reconstruct, encode, interpolate and score "
              "sequences with a trained seqlvm model. Refusals: 4xx with {\"detail\": \"one line\"}.")
errors.install(app)


def device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


@serve.deployment
@serve.ingress(app)
class ModelService:
    def __init__(self, settings: ServeSettings):
        source = ModelSource.of(settings.model_uri, settings.tracking_uri)
        place = device()
        self.follower = ModelFollower(source, settings.poll_s,
                                      lambda loaded: ModelOperations(loaded, settings.limits, place))
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="model")
        for batched in (self._reconstruct_batch, self._score_batch):
            batched.set_max_batch_size(settings.max_batch_size)
            batched.set_batch_wait_timeout_s(settings.batch_wait_s)

    def __del__(self):
        self.follower.stop()

    async def _in_pool(self, function, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(function, *args, **kwargs))

    def _reply(self, served: ServedModel, **fields) -> dict:
        return {"model": self.follower.source.name, "model_version": served.version, **fields}

    @app.get("/", response_model=schemas.Info, summary="The model served and what it can do")
    @app.get("/info", response_model=schemas.Info, summary="The model served and what it can do")
    def info(self) -> dict:
        served = self.follower.current
        ops, source = served.operations, self.follower.source
        return self._reply(
            served, uri=source.uri, follows=source.alias, family=ops.model.name, modality=ops.data.modality,
            operations=list(ops.available()), inputs="sentences" if ops.is_text else "frames",
            frame_dim=None if ops.is_text else ops.data.frame_dim,
            vocabulary_size=len(ops.data.words) if ops.is_text else None,
            limits=dict(vars(ops.limits)), loaded_at=served.loaded_at, follow_problem=self.follower.problem)

    @app.post("/sample", response_model=schemas.SampleAnswer, response_model_exclude_unset=True,
              summary="Samples from the prior: sentences, or frames (rendered as files on request)")
    async def sample(self, request: schemas.SampleRequest) -> dict:
        served = self.follower.current
        ops = served.operations
        options = request.options(ops.is_text)
        samples = await self._in_pool(ops.sample, **options)
        if ops.is_text:
            return self._reply(served, sentences=samples)
        answer = self._reply(served, frames=[sequence.tolist() for sequence in samples])
        if request.render:
            answer["files"] = await self._in_pool(rendered_files, samples, ops.data)
        return answer

    @app.post("/reconstruct", response_model=schemas.ReconstructAnswer,
              summary="Each input decoded from its posterior mean (batched)")
    async def reconstruct(self, request: schemas.ReconstructRequest) -> dict:
        job = Job.of(request.inputs(self.follower.current.operations.is_text), max_len=request.max_len,
                     unknown=request.unknown)
        served, decoded = await self._batched(self._reconstruct_batch, job)
        return self._reply(served, sentences=decoded)

    @app.post("/encode", response_model=schemas.EncodeAnswer, summary="Each input's posterior q(z|x)")
    async def encode(self, request: schemas.EncodeRequest) -> dict:
        served = self.follower.current
        ops = served.operations
        mean, variance = await self._in_pool(ops.encode, request.inputs(ops.is_text), unknown=request.unknown)
        return self._reply(served, mean=mean.tolist(), variance=variance.tolist())

    @app.post("/interpolate", response_model=schemas.InterpolateAnswer,
              summary="Decodes along the line between two inputs' posterior means (a homotopy)")
    async def interpolate(self, request: schemas.InterpolateRequest) -> dict:
        served = self.follower.current
        ops = served.operations
        path = await self._in_pool(ops.interpolate, request.first, request.second, steps=request.steps,
                                   max_len=request.max_len, unknown=request.unknown)
        steps = len(path)
        return self._reply(served, sentences=path, t=[i / max(1, steps - 1) for i in range(steps)])

    @app.post("/score", response_model=schemas.ScoreAnswer, response_model_exclude_unset=True,
              summary="Each input's ELBO and importance-weighted log-likelihood (batched)")
    async def score(self, request: schemas.ScoreRequest) -> dict:
        job = Job.of(request.inputs(self.follower.current.operations.is_text), samples=request.samples,
                     seed=request.seed, unknown=request.unknown)
        served, columns = await self._batched(self._score_batch, job)
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        return self._reply(served, scores=rows)

    async def _batched(self, batch, job: Job):
        served, answer = await batch(job)
        if isinstance(answer, RequestError):
            raise answer
        return served, answer

    @serve.batch
    async def _reconstruct_batch(self, jobs: list[Job]) -> list:
        return await self._answer_jobs(jobs, "reconstruct")

    @serve.batch
    async def _score_batch(self, jobs: list[Job]) -> list:
        return await self._answer_jobs(jobs, "score")

    async def _answer_jobs(self, jobs: list[Job], operation: str) -> list:
        """Every job of a batch answered by one version of the model, which each answer names."""
        served = self.follower.current
        ops = served.operations
        answers = await self._in_pool(answer_jobs, jobs, getattr(ops, operation), ops.limits.max_inputs)
        return [(served, answer) for answer in answers]
