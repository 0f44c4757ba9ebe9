"""`seqlvm registry list|show|promote|rollback`: the MLflow model registry."""
from __future__ import annotations

from pipelines.errors import SeqlvmError
from seqlvm.cli.output import out, rows_table


def add_parsers(sub) -> None:
    reg = sub.add_parser("registry", help="the MLflow model registry: list, show, promote, rollback")
    actions = reg.add_subparsers(dest="action", required=True)
    parsers = [actions.add_parser("list", help="registered models with their champion"),
               actions.add_parser("show", help="the versions of a registered model"),
               actions.add_parser("promote", help="point an alias (default champion) at a version"),
               actions.add_parser("rollback", help="move an alias back to the version that held it before")]
    for parser in parsers:
        parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or "
                                                   "runs/mlflow.db)")
        if parser.prog.split()[-1] != "list":
            parser.add_argument("name", help="registered model name")
        if parser.prog.split()[-1] == "promote":
            parser.add_argument("version", help="version number")
        if parser.prog.split()[-1] in ("promote", "rollback"):
            parser.add_argument("--alias", default="champion")


def cmd_registry(args) -> None:
    from pathlib import Path

    from seqlvm import tracking
    from seqlvm.tracking import registry

    uri = tracking.resolve_tracking_uri(args.tracking_uri, Path("runs").absolute())
    if uri.startswith("sqlite:") and not Path(uri[len("sqlite:///"):]).exists():
        raise SeqlvmError(f"{uri[len('sqlite:///'):]}: no MLflow store here (pass --tracking-uri)")
    tracking.check_reachable(uri)
    client = tracking.client(uri)
    if args.action == "list":
        out.print(rows_table("registered models", registry.list_models(client)))
    elif args.action == "show":
        out.print(rows_table(f"{args.name}", registry.show_model(client, args.name)))
    elif args.action == "promote":
        registry.require_model(client, args.name)
        try:
            registry.set_alias(client, args.name, args.version, args.alias)
        except Exception as exc:  # MLflow raises its own type for an unknown version
            raise SeqlvmError(f"{args.name}: cannot promote version {args.version} "
                              f"({str(exc).splitlines()[0]})") from None
        out.print(f"{args.name}@{args.alias} -> version {args.version}")
    else:
        registry.require_model(client, args.name)
        version = registry.rollback(client, args.name, args.alias)
        out.print(f"{args.name}@{args.alias} -> version {version} (rolled back)")


COMMANDS = {"registry": cmd_registry}
