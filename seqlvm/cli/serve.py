"""`seqlvm serve`: a model as an HTTP service on Ray Serve (docs/serving.md).

On a Ray this command starts, the service lives as long as the command: Ctrl-C (or SIGTERM) shuts it down and
stops Ray. On a cluster it joins (`--address` or $RAY_ADDRESS), the service is a detached Serve application that
stays after the command returns, until `seqlvm serve --stop --name NAME --address ADDR`."""
from __future__ import annotations

import os

from pipelines.errors import SeqlvmError
from seqlvm.cli.output import console, out

DEFAULT_LOG_DIR = "runs/serve"


def add_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="serve a model over HTTP with Ray Serve: sample, reconstruct, encode, "
                                         "interpolate, score")
    serve.add_argument("model", nargs="?", metavar="MODEL_URI",
                       help="models:/NAME@ALIAS (followed as the alias moves), models:/NAME/VERSION, runs:/..., or a "
                            "checkpoint or run folder")
    serve.add_argument("--address", help="join this Ray cluster and leave the service running there (default: "
                                         "$RAY_ADDRESS, or a local Ray that stops with the command)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    replicas = serve.add_mutually_exclusive_group()
    replicas.add_argument("--replicas", type=int, default=1, help="replicas of the model (default 1)")
    replicas.add_argument("--autoscale", metavar="MIN:MAX", help="let Serve scale the replicas between MIN and MAX")
    serve.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs each replica reserves (default 1)")
    serve.add_argument("--poll", type=float, default=5.0, metavar="SECONDS",
                       help="how often replicas read the alias they follow (default 5)")
    serve.add_argument("--max-batch-size", type=int, default=16,
                       help="queued reconstruct or score requests answered by one model call (default 16)")
    serve.add_argument("--name", default="seqlvm", help="the Serve application's name (default seqlvm)")
    serve.add_argument("--route-prefix", default="/", help="the path the API answers under (default /)")
    serve.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ (default "
                                              "$MLFLOW_TRACKING_URI or runs/mlflow.db)")
    serve.add_argument("--stop", action="store_true",
                       help="stop the application --name on the cluster at --address, instead of serving")
    serve.add_argument("--verbose", action="store_true",
                       help=f"show Ray's and Serve's output here (default: into {DEFAULT_LOG_DIR}/NAME.log)")


def settings_of(args):
    """The settings the command line asks for, checked, with the tracking URI made absolute."""
    from pathlib import Path

    from seqlvm import tracking
    from seqlvm.serving.settings import ServeSettings, parse_autoscale

    if not args.model:
        raise SeqlvmError("serve what? give a MODEL_URI (or --stop to stop a running service)")
    tracking_uri = args.tracking_uri
    if args.model.startswith(("models:/", "runs:/")):
        tracking_uri = tracking.resolve_tracking_uri(args.tracking_uri, Path("runs").absolute())
    settings = ServeSettings(args.model, tracking_uri, name=args.name, route_prefix=args.route_prefix,
                             host=args.host, port=args.port, replicas=args.replicas,
                             autoscale=parse_autoscale(args.autoscale) if args.autoscale else None,
                             poll_s=args.poll, max_batch_size=args.max_batch_size, replica_cpus=args.replica_cpus)
    settings.check()
    return settings


def cmd_serve(args) -> None:
    if args.stop:
        stop_service(args)
        return
    from pathlib import Path

    from seqlvm import run_log
    from seqlvm.serving.settings import check_port_free
    from seqlvm.serving.source import ModelSource

    settings = settings_of(args)
    address = args.address or os.environ.get("RAY_ADDRESS")
    version = ModelSource.of(settings.model_uri, settings.tracking_uri).check()
    if not address:  # on a cluster, the port is the head node's, and Serve may already hold it
        check_port_free(settings.host, settings.port)
    if not args.verbose:
        log = Path(DEFAULT_LOG_DIR) / f"{settings.name}.log"
        run_log.divert(log)
        console.print(f"Ray's and Serve's output: {log} (--verbose shows it here)")
    console.print(f"deploying {settings.model_uri}" + (f" (version {version})" if version else "")
                  + (f" on the Ray cluster at {address}" if address else " on a local Ray"))
    if address:
        deploy_on_cluster(settings, address)
    else:
        serve_until_stopped(settings)


def deploy_on_cluster(settings, address: str) -> None:
    """Deploy as a detached application on a joined cluster, and return; it runs until stopped. Its replicas run
    the seqlvm installed on the cluster's nodes (the image): packages a command uploads are deleted by Ray when
    its job ends, and the service outlives the command."""
    from seqlvm.cluster.ray_runtime import ensure_ray
    from seqlvm.serving import launch

    ensure_ray(address=address)
    url, = launch.deploy(settings)
    announce(url)
    out.print(f"the service runs on the cluster until: seqlvm serve --stop --name {settings.name} --address "
              f"{address}")


def serve_until_stopped(settings) -> None:
    """Start a local Ray, deploy, and wait for Ctrl-C or SIGTERM; then shut the service and Ray down."""
    import signal
    import threading

    import ray

    from seqlvm.cluster.ray_runtime import ensure_ray
    from seqlvm.serving import launch

    def interrupt(*_):
        raise KeyboardInterrupt

    ensure_ray(worker_cpus=settings.max_replicas * settings.replica_cpus)
    # Installed after Ray starts, whose own handler of SIGTERM dumps a stack trace and kills the process; SIGINT too,
    # in case it was inherited ignored (a background job of a shell).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        url, = launch.deploy(settings)
        announce(url)
        out.print("serving until Ctrl-C")
        threading.Event().wait()
    except KeyboardInterrupt:
        console.print("stopping the service")
    finally:
        launch.shutdown()
        ray.shutdown()
    out.print("stopped")


def announce(url: str) -> None:
    """The URL, and what the model there can do (from its own `GET /info`)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url}/info", timeout=30) as answer:
        info = json.load(answer)
    version = f" version {info['model_version']}" if info.get("model_version") else ""
    follows = f", following @{info['follows']}" if info.get("follows") else ""
    out.print(f"serving {info['model']}{version}{follows}: {info['family']} on {info['modality']} at {url}")
    out.print(f"operations: {', '.join(info['operations'])} (POST {url}/OPERATION)")
    out.print(f"API: {url}/docs (schema: {url}/openapi.json)")


def stop_service(args) -> None:
    from seqlvm.cluster.ray_runtime import ensure_ray
    from seqlvm.serving import launch

    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SeqlvmError("--stop needs the cluster's --address (a service on a local Ray stops with Ctrl-C)")
    if args.model:
        raise SeqlvmError("--stop takes --name, not a MODEL_URI")
    ensure_ray(address=address)
    launch.stop(args.name)
    out.print(f"stopped {args.name} on the Ray cluster at {address}")


COMMANDS = {"serve": cmd_serve}
