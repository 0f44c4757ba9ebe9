"""Static checks of infra/: every manifest parses and agrees with the image, the CLI and the security rules
(no literal secrets, nothing published beyond 127.0.0.1). Pure parsing: no Ray, no Docker, no network."""
import configparser
import importlib.metadata
import importlib.util
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import tomllib
import yaml

from seqlvm.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
INFRA, KUBE, LAUNCHER = ROOT / "infra", ROOT / "infra/kuberay", ROOT / "infra/cluster-launcher"
DOCKERFILE = (INFRA / "docker/Dockerfile").read_text()
ARGS = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE, re.M))
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# The one image convention: ghcr.io/OWNER/seqlvm:<pyproject version>, with "-gpu" for the CUDA build.
IMAGE = re.compile(rf"ghcr\.io/OWNER/seqlvm:{re.escape(VERSION)}(-gpu)?")
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "ACCESS_KEY", "KEY_ID")
YAMLS = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def walk(node):
    """Every dict, list and scalar in a parsed document."""
    yield node
    for child in node.values() if isinstance(node, dict) else node if isinstance(node, list) else ():
        yield from walk(child)


def kind(path, name):
    return [d for d in docs(path) if d.get("kind") == name]


def secretish(name):
    return any(word in str(name).upper() for word in SECRET_WORDS)


def shell_commands(text):
    """Split a shell string into commands (word lists) at ; && || | & and newlines."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|\n")
    lexer.whitespace, lexer.whitespace_split = " \t\r", True
    command = []
    for token in [*lexer, ";"]:
        if token and set(token) <= set(";&|\n"):
            yield from [command] if command else []
            command = []
        else:
            command.append(token)


def seqlvm_argvs(text):
    """The arguments of every `seqlvm ...` command in a shell string, and of `... -- seqlvm ...` (submit)."""
    for words in shell_commands(text):
        while words and re.fullmatch(r"\w+=.*", words[0]):  # leading VAR=value assignments
            words = words[1:]
        if len(words) > 1 and words[0].split("/")[-1] == "seqlvm":
            yield words[1:]
        yield from (words[i + 2:] for i in range(len(words) - 1) if words[i:i + 2] == ["--", "seqlvm"])


def manifest_commands():
    for path in YAMLS:
        for node in walk(docs(path)):
            if isinstance(node, str) and " " in node:  # entrypoints, shell scripts, launcher commands
                yield from ((path, argv) for argv in seqlvm_argvs(node))
            elif isinstance(node, list) and node and all(isinstance(x, str) for x in node):  # command: [...]
                yield from ((path, argv) for argv in seqlvm_argvs(shlex.join(node)))


def parse(argv, where):
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `seqlvm {shlex.join(argv)}` does not parse with seqlvm.cli.build_parser()")


def test_every_yaml_parses_and_none_is_missing():
    names = {p.relative_to(INFRA).as_posix() for p in YAMLS}
    assert {"kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/mlflow.yaml", "cluster-launcher/aws.yaml",
            "cluster-launcher/onprem.yaml", "mlflow/docker-compose.yaml"} <= names
    assert all(docs(p) for p in YAMLS)


@pytest.mark.parametrize("spec", [*(d["spec"] for d in kind(KUBE / "raycluster.yaml", "RayCluster")),
                                  *(d["spec"]["rayClusterSpec"] for d in kind(KUBE / "rayjob.yaml", "RayJob"))],
                         ids=["raycluster", "rayjob"])
def test_ray_cluster_spec(spec):
    assert spec["rayVersion"] == ARGS["RAY_VERSION"] == importlib.metadata.version("ray")
    assert spec["authOptions"]["mode"] == "token" and spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress")
    has_gpu = [any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                   for c in group["template"]["spec"]["containers"]) for group in spec["workerGroupSpecs"]]
    assert True in has_gpu and False in has_gpu, "needs a CPU and a GPU worker group"
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


def test_rayjob_runs_a_sweep_on_s3_and_cleans_up():
    (job,) = kind(KUBE / "rayjob.yaml", "RayJob")
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] > 0
    args = parse(shlex.split(job["spec"]["entrypoint"])[1:], "rayjob entrypoint")
    assert args.command == "tune" and args.data.startswith("s3://") and args.storage.startswith("s3://")


def test_no_kubernetes_service_is_exposed_outside_the_cluster():
    services = [d for p in KUBE.glob("*.yaml") for d in docs(p) if d.get("kind") in ("Service", "Ingress")]
    assert services and all(d["kind"] == "Service" and d["spec"].get("type", "ClusterIP") == "ClusterIP"
                            for d in services)


def test_in_cluster_mlflow_uses_basic_auth_as_compose_does():
    (config_map,) = kind(KUBE / "mlflow.yaml", "ConfigMap")
    in_cluster, compose = configparser.ConfigParser(), configparser.ConfigParser()
    in_cluster.read_string(config_map["data"]["basic_auth.ini"])
    compose.read(INFRA / "mlflow/basic_auth.ini")
    assert dict(in_cluster["mlflow"]) == dict(compose["mlflow"])
    assert not compose["mlflow"].get("admin_password"), "the admin password comes from a secret"
    (deployment,) = kind(KUBE / "mlflow.yaml", "Deployment")
    assert "--app-name=basic-auth" in deployment["spec"]["template"]["spec"]["containers"][0]["command"]


@pytest.mark.parametrize("path", [LAUNCHER / "aws.yaml", LAUNCHER / "onprem.yaml"], ids=lambda p: p.stem)
def test_launcher_config(path):
    (config,) = docs(path)
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])  # located, not imported
    jsonschema.validate(config, json.loads((ray_dir / "autoscaler/ray-schema.json").read_text()))
    assert config["cluster_name"] and config["provider"]["type"] and config["docker"]["image"]
    # token auth: Ray's default token file on every node, token mode in every container
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    heads = [c for c in config["head_start_ray_commands"] if "--head" in c]
    assert heads and all("--dashboard-host=127.0.0.1" in c for c in heads)
    if config["provider"]["type"] == "local":  # Ray's local provider aborts on node types
        assert "available_node_types" not in config and "head_node_type" not in config
        assert config["provider"]["head_ip"] and 0 < config["max_workers"] <= len(config["provider"]["worker_ips"])
        return
    after_start = config["head_start_ray_commands"][config["head_start_ray_commands"].index(heads[0]):]
    report = "seqlvm cluster report-max --autoscaling-config ~/ray_bootstrap_config.yaml"
    assert any(command.startswith(report) for command in after_start)  # the autoscaler's maximum, for the GCS
    types = config["available_node_types"]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert config["head_node_type"] in types and {"cpu", "gpu"} <= set(workers)
    assert all(0 <= t.get("min_workers", 0) <= t["max_workers"] for t in workers.values())
    assert config["max_workers"] == sum(t["max_workers"] for t in workers.values())
    assert workers["gpu"]["docker"]["worker_image"].endswith("-gpu")


def test_every_image_follows_the_convention():
    images = []
    for path in YAMLS:
        for node in (n for n in walk(docs(path)) if isinstance(n, dict)):
            images += [v for k, v in node.items() if k in ("image", "head_image", "worker_image")]
            if "nvidia.com/gpu" in node.get("resources", {}).get("limits", {}):
                assert node["image"].endswith("-gpu"), f"{path.name}: a GPU container without the CUDA image"
    ours = [i for i in images if "seqlvm" in i]
    assert ours and all(IMAGE.fullmatch(i) for i in ours), ours
    assert all(":" in i and not i.endswith(":latest") for i in images), "pin third-party images"


def test_dockerfile_pins_torch_before_the_project():
    makefile_torch = re.search(r"^TORCH \?= torch==(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert ARGS["TORCH_VERSION"] == makefile_torch and ARGS["PYTHON_VERSION"] == "3.11"
    lines = [line for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines() if not line.startswith("#")]
    installs = [cmd for line in lines for cmd in line.split("&&")
                if "pip install" in cmd and not cmd.strip().endswith(" pip")]
    assert '"torch==${TORCH_VERSION}"' in installs[0] and "TORCH_INDEX_URL" in installs[0]
    assert "--constraint" in installs[1] and " . " in installs[1] and "==${RAY_VERSION}" in installs[1]
    # basic auth needs the auth extra; the version is the one developed against
    assert '"mlflow[auth]==${MLFLOW_VERSION}"' in installs[1]
    assert ARGS["MLFLOW_VERSION"] == importlib.metadata.version("mlflow")
    assert re.findall(r"^USER (\S+)", DOCKERFILE, re.M)[-1] not in ("root", "0")


def test_manifest_seqlvm_commands_parse():
    found = list(manifest_commands())
    assert found, "no seqlvm command found in the manifests"
    for path, argv in found:
        config = getattr(parse(argv, path.relative_to(ROOT)), "config", None)
        if config and config.startswith("/app/"):  # the image's /app holds the repository's files
            assert (ROOT / config.removeprefix("/app/")).is_file(), config


def test_readme_seqlvm_commands_parse():
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", (INFRA / "README.md").read_text(), re.S)
    script = re.sub(r"\\\n\s*", " ", re.sub(r"(^|\s)#[^\n]*", "", "\n".join(blocks)))  # comments, continuations
    found = list(seqlvm_argvs(script))
    assert found
    for argv in found:
        parse(argv, "infra/README.md")


def test_no_literal_secrets():
    for path in YAMLS:
        for node in walk(docs(path)):
            if isinstance(node, dict) and ("value" in node or "valueFrom" in node) and secretish(node.get("name")):
                assert "value" not in node and "secretKeyRef" in node["valueFrom"], f"{path.name}: {node['name']}"
            if isinstance(node, dict) and "environment" in node:  # compose: secrets only through env_file
                assert not [e for e in node["environment"] if secretish(str(e).split("=")[0])], path.name
            if isinstance(node, str) and re.match(r"(-e|--env)[ =]\w+=", node):  # docker run options
                assert not secretish(node.split("=")[0]), node
    for example in INFRA.rglob("*.env.example"):
        for line in example.read_text().splitlines():
            key, _, value = line.lstrip("# ").partition("=")
            if secretish(key):
                assert value.split("#")[0].strip() in ("", "CHANGE_ME"), f"{example.name}: {key}"


def test_compose_publishes_on_loopback_only():
    services = docs(INFRA / "mlflow/docker-compose.yaml")[0]["services"]
    published = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", p) if isinstance(p, str)  # ${VAR:-default} -> default
                 else f"{p.get('host_ip', '0.0.0.0')}:" for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    assert services["mlflow"]["env_file"] and "--app-name basic-auth" in services["mlflow"]["command"][-1]
