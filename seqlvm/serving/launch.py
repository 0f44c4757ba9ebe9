"""Deploying the service on Ray Serve, finding its URL, and stopping it. Replicas use a GPU when the cluster has
one: each asks for an equal share of the cluster's GPUs (at most one), so every replica up to the most the
settings allow can be placed."""
from __future__ import annotations

import math

from pipelines.errors import SeqlvmError, root_cause
from seqlvm.serving.settings import ServeSettings


def replica_resources(settings: ServeSettings, cluster: dict[str, float]) -> dict:
    """The `ray_actor_options` of each replica on a cluster with these resources."""
    options: dict = {"num_cpus": settings.replica_cpus}
    gpus = cluster.get("GPU", 0)
    if gpus > 0:
        options["num_gpus"] = min(1.0, math.floor(100 * gpus / settings.max_replicas) / 100) or 0.01
    return options


def application(settings: ServeSettings):
    """The Serve application of one model."""
    import ray

    from seqlvm.serving.service import ModelService
    actor = replica_resources(settings, ray.cluster_resources())
    # A replica takes in several batches' worth of requests, so that the next batch fills while one computes: held
    # back by the router instead, requests wait out its retry backoff (seconds at 32 clients).
    options = dict(ray_actor_options=actor, max_ongoing_requests=max(64, 4 * settings.max_batch_size))
    if settings.autoscale:
        low, high = settings.autoscale
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "initial_replicas": max(1, low),
                                         "target_ongoing_requests": settings.max_batch_size}
    else:
        options["num_replicas"] = settings.replicas
    return ModelService.options(**options).bind(settings)


def deploy(*settings: ServeSettings) -> list[str]:
    """Start Serve (or reuse the cluster's), deploy one application per settings and wait until each answers.
    Returns their URLs. Serve's HTTP address is the first settings' host and port when this starts Serve; on a
    cluster where Serve already runs, it stays what it is."""
    from ray import serve

    first = settings[0]
    serve.start(http_options={"host": first.host, "port": first.port})
    targets = [serve.RunTarget(application(s), name=s.name, route_prefix=s.route_prefix) for s in settings]
    try:
        serve.run_many(targets)
    except Exception as exc:  # Serve reports a replica that failed to start as one of several types
        raise SeqlvmError(f"the service did not start: {why_not_running() or root_cause(exc)}") from None
    return [url(s) for s in settings]


def why_not_running() -> str:
    """The last line of what Serve says about each deployment that failed (a replica's traceback ends with the
    error that stopped it)."""
    from ray import serve

    reasons = []
    for name, app in serve.status().applications.items():
        for deployment in app.deployments.values():
            if deployment.status == "DEPLOY_FAILED" and deployment.message.strip():
                reasons.append(f"{name}: {deployment.message.strip().splitlines()[-1]}")
    return "; ".join(reasons)


def url(settings: ServeSettings) -> str:
    """Where an application answers: Serve's actual HTTP address (on a joined cluster, the one Serve runs with)."""
    from ray.serve.context import _get_global_client

    http = _get_global_client().http_config
    host = http.host if http.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{http.port}{settings.route_prefix.rstrip('/')}"


def stop(name: str) -> None:
    """Delete one application, leaving Serve and any other application running."""
    from ray import serve

    if name not in serve.status().applications:
        raise SeqlvmError(f"no application named {name!r} runs on this cluster (running: "
                          f"{', '.join(serve.status().applications) or 'none'})")
    serve.delete(name)


def shutdown() -> None:
    """Stop every application and Serve itself."""
    from ray import serve
    serve.shutdown()
