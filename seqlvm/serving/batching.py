"""Requests queued together (by `@serve.batch`) answered with as few model calls as they allow: requests with
identical options share one call on their inputs joined, at most the per-request input limit at a time, and each
gets its own slice of the result. A joined call that is refused is retried request by request, so a bad request
fails alone and the others still get their answers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from seqlvm.operations import RequestError


@dataclass(frozen=True)
class Job:
    inputs: list
    options: tuple[tuple[str, Any], ...]  # sorted (name, value) pairs: requests with equal options share a call

    @classmethod
    def of(cls, inputs: list, **options) -> "Job":
        return cls(inputs, tuple(sorted(options.items())))


def answer_jobs(jobs: list[Job], operation: Callable[..., list | dict], max_inputs: int) -> list:
    """Each job's answer, in order: the operation's result for its inputs (a list with an entry per input, or a
    dict of such columns), or the `RequestError` that refuses it."""
    answers: list = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(job.options, []).append(index)
    for options, members in groups.items():
        for chunk in _chunks(members, jobs, max_inputs):
            _answer_chunk(chunk, jobs, dict(options), operation, answers)
    return answers


def _chunks(members: list[int], jobs: list[Job], max_inputs: int) -> list[list[int]]:
    """Consecutive jobs whose inputs together stay within `max_inputs` (a job over it alone, to be refused)."""
    chunks, size = [[]], 0
    for index in members:
        count = len(jobs[index].inputs)
        if chunks[-1] and size + count > max_inputs:
            chunks.append([])
            size = 0
        chunks[-1].append(index)
        size += count
    return chunks


def _answer_chunk(chunk: list[int], jobs: list[Job], options: dict, operation, answers: list) -> None:
    # An empty request joined with others would vanish instead of being refused: it goes alone.
    if len(chunk) > 1 and all(jobs[index].inputs for index in chunk):
        try:
            result = operation([x for index in chunk for x in jobs[index].inputs], **options)
        except RequestError:
            pass  # one of them is refused: answer each alone, so that only that one fails
        else:
            start = 0
            for index in chunk:
                end = start + len(jobs[index].inputs)
                answers[index] = _rows(result, start, end)
                start = end
            return
    for index in chunk:
        try:
            answers[index] = operation(jobs[index].inputs, **options)
        except RequestError as exc:
            answers[index] = exc


def _rows(result: list | dict, start: int, end: int) -> list | dict:
    if isinstance(result, dict):
        return {name: column[start:end] for name, column in result.items()}
    return result[start:end]
