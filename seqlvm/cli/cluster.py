"""`seqlvm submit`, `seqlvm jobs` and `seqlvm cluster`: commands on a Ray cluster, and a local one."""
from __future__ import annotations

import argparse
import sys

from seqlvm.cli.output import out, rows_table


def add_parsers(sub) -> None:
    address_help = "the head's dashboard, e.g. http://127.0.0.1:8265 (default: $RAY_ADDRESS, else that)"
    submit = sub.add_parser("submit", help="run a seqlvm command on a Ray cluster as a Ray job",
                            usage="seqlvm submit [options] -- seqlvm COMMAND ...")
    submit.add_argument("--address", help=address_help)
    submit.add_argument("--installed", action="store_true",
                        help="ship no code: run the seqlvm installed in the cluster's image (default: ship this one)")
    submit.add_argument("--working-dir", help="a folder to ship as the job's working dir (relative paths in the "
                                              "command then refer to it)")
    submit.add_argument("--tracking-uri", help="MLflow tracking URI as the cluster reaches it (default: the "
                                                "MLFLOW_TRACKING_URI of the cluster's nodes)")
    submit.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for the job (not a secret)")
    submit.add_argument("--submission-id", help="the job's id (default: seqlvm-COMMAND-TIME-RANDOM)")
    submit.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 unless it succeeded")
    submit.add_argument("--follow", action="store_true", help="stream its logs until it ends (implies --wait)")
    submit.add_argument("job_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                        help="the command, e.g. -- seqlvm tune ...")

    jobs = sub.add_parser("jobs", help="Ray jobs on a cluster: list, status, logs, stop")
    actions = jobs.add_subparsers(dest="action", required=True)
    for action, text in (("list", "jobs with their status"), ("status", "one job's status"),
                         ("logs", "one job's logs"), ("stop", "stop a running job")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("--address", help=address_help)
        if action != "list":
            parser.add_argument("job_id", help="the submission id printed by seqlvm submit")
        if action == "status":
            parser.add_argument("--wait", action="store_true", help="wait for the job to end")
        if action == "logs":
            parser.add_argument("--follow", action="store_true", help="stream until the job ends")

    cluster = sub.add_parser("cluster", help="a local multi-process Ray cluster + MLflow server on 127.0.0.1")
    actions = cluster.add_subparsers(dest="action", required=True)
    for action, text in (("up", "start a head node, a worker node and an MLflow server"),
                         ("down", "stop what `up` started"), ("status", "addresses and the environment to use it")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("--dir", default="runs/cluster", help="the cluster's state folder (default runs/cluster)")
        if action == "up":
            parser.add_argument("--head-cpus", type=int, default=4, help="logical CPUs of the head node")
            parser.add_argument("--worker-cpus", type=int, default=2, help="logical CPUs of the worker node")
            parser.add_argument("--no-mlflow", action="store_true", help="no MLflow server")
    report = actions.add_parser("report-max", help="report an autoscaling cluster's maximum size to its GCS, so "
                                                   "that runs it could never hold are refused (run on the head)")
    report.add_argument("--autoscaling-config", required=True, metavar="FILE",
                        help="the cluster launcher config with its node types' resources, as `ray up` writes it to "
                             "the head: ~/ray_bootstrap_config.yaml")
    report.add_argument("--address", help="the cluster's GCS, HOST:PORT (default: $RAY_ADDRESS, else the Ray "
                                          "running on this machine)")


def cmd_submit(args) -> None:
    from seqlvm.cluster import jobs

    command = args.job_command[1:] if args.job_command[:1] == ["--"] else args.job_command
    job_id = jobs.submit(command, args.address, not args.installed, args.working_dir, args.tracking_uri, args.env,
                         args.submission_id)
    out.print(f"submitted job {job_id} to {jobs.jobs_address(args.address)}")
    if args.follow or args.wait:
        status = jobs.follow(job_id, args.address) if args.follow else jobs.wait(job_id, args.address)
        finish_job(job_id, status)
    else:
        out.print(f"follow it with: seqlvm jobs logs {job_id} --follow")


def finish_job(job_id: str, status: str) -> None:
    from seqlvm.cluster import jobs

    out.print(f"job {job_id}: {status}")
    if status != "SUCCEEDED":
        raise jobs.JobFailed(f"job {job_id} ended {status} (its logs: seqlvm jobs logs {job_id})")


def cmd_jobs(args) -> None:
    from seqlvm.cluster import jobs

    if args.action == "list":
        rows = [{"job": j.submission_id, "status": str(j.status.value), "command": j.entrypoint[:70],
                 "started": time_of(j.start_time), "ended": time_of(j.end_time)}
                for j in sorted(jobs.call(args.address, "list_jobs"), key=lambda j: j.start_time or 0)
                if j.submission_id]
        out.print(rows_table("jobs", rows))
    elif args.action == "status":
        status = jobs.wait(args.job_id, args.address) if args.wait else None
        info = jobs.call(args.address, "get_job_info", args.job_id)
        out.print(f"job {args.job_id}: {status or info.status.value}"
                  + (f" ({info.message.splitlines()[0]})" if info.message else ""))
        if status is not None:
            finish_job(args.job_id, status)
    elif args.action == "logs":
        if args.follow:
            finish_job(args.job_id, jobs.follow(args.job_id, args.address))
        else:
            sys.stdout.write(jobs.call(args.address, "get_job_logs", args.job_id))
    else:
        stopped = jobs.call(args.address, "stop_job", args.job_id)
        out.print(f"job {args.job_id}: {'stop requested' if stopped else 'was not running'}")


def time_of(milliseconds: int | None) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(milliseconds / 1000)) if milliseconds else ""


def cmd_cluster(args) -> None:
    from pathlib import Path

    from seqlvm.cluster import local_cluster

    if args.action == "report-max":
        report_max(args.autoscaling_config, args.address)
        return
    root = Path(args.dir)
    if args.action == "up":
        state = local_cluster.up(root, args.head_cpus, args.worker_cpus, mlflow=not args.no_mlflow)
    elif args.action == "down":
        state = local_cluster.down(root)
        out.print(f"stopped the local cluster in {state.root} (processes {sorted(state.pids.values())})")
        return
    else:
        state = local_cluster.load(root)
    out.print(f"Ray head {state.gcs_address}, dashboard and Jobs API {state.dashboard_url}, "
              f"MLflow {state.tracking_uri or 'not started'}; logs in {state.root}")
    out.print("use it from a shell with:")
    for key, value in state.client_env().items():
        out.print(f"export {key}={value}")


def report_max(config_file: str, address: str | None) -> None:
    import os

    from seqlvm.cluster.ceiling import AutoscalerMaximum
    from seqlvm.cluster.ray_runtime import ensure_ray

    maximum = AutoscalerMaximum.from_file(config_file)  # checked before joining
    ensure_ray(address=address or os.environ.get("RAY_ADDRESS") or "auto", dashboard=False)
    maximum.report()
    out.print(rows_table("node types the autoscaler can start", [
        {"node type": t.name, "CPU": t.resources.get("CPU", 0), "GPU": t.resources.get("GPU", 0),
         "max nodes": t.max_count} for t in maximum.node_types]))
    out.print("reported to the cluster's GCS: it grows to at most "
              + ", ".join(f"{maximum.max_resources.get(k, 0)} {k}" for k in ("CPU", "GPU")))


COMMANDS = {"submit": cmd_submit, "jobs": cmd_jobs, "cluster": cmd_cluster}
