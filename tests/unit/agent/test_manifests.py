"""The agent's deployment: Kubernetes manifests in node_agent/deploy/ and the image in node_agent/Dockerfile.

Schema: every manifest is validated offline against the official Kubernetes OpenAPI schemas that the
kubernetes-validate package bundles as JSON Schema, in strict mode (unknown fields are errors, as with
`kubectl apply --validate=strict`), for the oldest and the newest Kubernetes minor version it ships.
Policy: the security and scheduling properties the agent relies on, asserted field by field.
Dockerfile: no Docker engine runs here, so these are static checks of the Dockerfile's text, plus an import of the
agent with every dependency the image leaves out blocked, which is what would break the slim image at start-up.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import datetime, timedelta
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes.utils import parse_quantity
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from freezeframe.contracts import config

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "node_agent" / "deploy"
DOCKERFILE = REPO / "node_agent" / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

AGENT_UID = 10001
ALLOWED_RULES = {("", "pods"), ("", "services"), ("", "events"), ("", "nodes"), ("events.k8s.io", "events"),
                 ("discovery.k8s.io", "endpointslices")}
READ_VERBS = {"get", "list", "watch"}
CAPTURE_CAPS = {"NET_RAW", "NET_ADMIN"}
SPOOL_OWNER_CAPS = {"CHOWN", "FOWNER"}
JOB_KEYS = {"name", "filter", "start", "duration", "daily_iterations", "expiration"}
SCHEMA_VERSIONS = sorted({kubernetes_validate.utils.major_minor(v) for v in
                          (kubernetes_validate.utils.all_versions()[0], kubernetes_validate.utils.latest_version())})


def _manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _load_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in _manifest_files():
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


DOCS = _load_documents()


def _one(kind: str) -> dict[str, Any]:
    found = [doc for doc in DOCS if doc["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def _pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _one("DaemonSet")["spec"]["template"]["spec"]
    return spec


def _agent() -> dict[str, Any]:
    containers = _pod_spec()["containers"]
    assert [c["name"] for c in containers] == ["agent"]
    agent: dict[str, Any] = containers[0]
    return agent


def _all_containers() -> list[dict[str, Any]]:
    spec = _pod_spec()
    return [*spec.get("initContainers", []), *spec["containers"]]


def _label(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --- schema -----------------------------------------------------------------------------------------------------


def test_every_manifest_is_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in _manifest_files()]
    assert {image["name"] for image in kustomization["images"]} == {c["image"].split(":")[0]
                                                                    for c in _all_containers()}


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("doc", DOCS, ids=_label)
def test_manifest_matches_the_kubernetes_schema(doc: dict[str, Any], version: str) -> None:
    # Strict: an unknown or misspelt field fails here instead of being dropped silently by the API server.
    # SchemaNotFoundError (an unknown kind or apiVersion) propagates and fails the test too.
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{_label(doc)} against Kubernetes {version}: {where}: {exc.message}")


def test_the_schema_check_rejects_unknown_and_missing_fields() -> None:
    """Guards the guard: a strict validator must fail on a misspelt field and on a missing required one."""
    daemonset = json.loads(json.dumps(_one("DaemonSet")))
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilitys"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="capabilitys"):
        kubernetes_validate.validate(daemonset, SCHEMA_VERSIONS[-1], strict=True)
    daemonset = json.loads(json.dumps(_one("DaemonSet")))
    del daemonset["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError, match="selector"):
        kubernetes_validate.validate(daemonset, SCHEMA_VERSIONS[-1], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_offline() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True,
                           timeout=60).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    assert sorted(map(_label, docs)) == sorted(map(_label, DOCS))
    pod = next(doc for doc in docs if doc["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    images = {c["image"] for c in [*pod["initContainers"], *pod["containers"]]}
    assert len(images) == 1 and "/" in images.pop(), "kustomize should point the pod at a registry image"


# --- policy -----------------------------------------------------------------------------------------------------


def test_namespaced_objects_live_in_the_declared_namespace() -> None:
    namespace = _one("Namespace")["metadata"]["name"]
    cluster_scoped = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}
    for doc in DOCS:
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"], _label(doc)
        else:
            assert doc["metadata"].get("namespace") == namespace, _label(doc)


def test_host_network_with_cluster_dns() -> None:
    spec = _pod_spec()
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_only_capture_capabilities_and_nothing_privileged() -> None:
    for container in _all_containers():
        context = container["securityContext"]
        assert context.get("privileged") is not True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
    # Exactly the file capabilities of tcpdump in the image: one missing from the bounding set and exec fails (EPERM).
    agent_context = _agent()["securityContext"]
    assert set(agent_context["capabilities"]["add"]) == CAPTURE_CAPS
    assert "hostPID" not in _pod_spec() and "hostIPC" not in _pod_spec()


def test_agent_runs_as_the_image_user_with_file_capabilities() -> None:
    context = _agent()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == AGENT_UID
    # allowPrivilegeEscalation: false sets no_new_privs, and the kernel then ignores tcpdump's file capabilities:
    # capture would fail with "permission denied" as uid 10001.
    assert context.get("allowPrivilegeEscalation", True) is True


def test_root_init_containers_are_confined_to_fixing_ownership() -> None:
    for container in _pod_spec().get("initContainers", []):
        context = container["securityContext"]
        if context.get("runAsNonRoot") is True:
            continue
        assert set(context["capabilities"].get("add", [])) <= SPOOL_OWNER_CAPS, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]


def test_node_name_comes_from_the_downward_api() -> None:
    env = {item["name"]: item for item in _agent()["env"]}
    assert env[config.ENV_NODE_NAME]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_env_names_are_settings_or_capture_arguments() -> None:
    """Every variable the agent gets is a name freezeframe.contracts.config reads, or one the args expand as $(NAME)."""
    agent = _agent()
    known = {value for name, value in vars(config).items() if name.startswith("ENV_")}
    expanded = set(re.findall(r"\$\((\w+)\)", " ".join(agent.get("args", []))))
    names = [item["name"] for item in agent["env"]]
    assert len(names) == len(set(names)), "an env var is set twice"
    assert expanded <= set(names), "args expand a variable the container does not define"
    assert set(names) <= known | expanded, set(names) - known - expanded


def test_config_map_references_resolve() -> None:
    config_map = _one("ConfigMap")
    for item in _agent()["env"]:
        ref = item.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["name"] == config_map["metadata"]["name"]
            assert ref["key"] in config_map["data"], ref["key"]
    for volume in _pod_spec()["volumes"]:
        if "configMap" in volume:
            assert volume["configMap"]["name"] == config_map["metadata"]["name"]
            assert {item["key"] for item in volume["configMap"]["items"]} <= set(config_map["data"])


def test_settings_in_the_config_map_parse() -> None:
    data = _one("ConfigMap")["data"]
    settings = config.Settings.from_env({k: v for k, v in data.items() if k != "jobs.yaml"})
    assert settings.kafka_bootstrap and settings.cluster != config.Settings().cluster
    assert data["FREEZEFRAME_INTERFACES"]


def test_recording_jobs_are_complete() -> None:
    jobs = yaml.safe_load(_one("ConfigMap")["data"]["jobs.yaml"])["jobs"]
    assert jobs
    for job in jobs:
        assert set(job) == JOB_KEYS, job.get("name")
        start = datetime.fromisoformat(job["start"])
        expiration = datetime.fromisoformat(job["expiration"])
        assert start.tzinfo is not None and start < expiration, job["name"]
        amount, unit = re.fullmatch(r"(\d+)([smh])", job["duration"]).groups()  # type: ignore[union-attr]
        duration = timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours"}[unit]: int(amount)})
        assert isinstance(job["daily_iterations"], int) and job["daily_iterations"] >= 1, job["name"]
        assert duration * job["daily_iterations"] <= timedelta(days=1), f"{job['name']} overlaps itself"


def test_spool_is_a_host_directory_the_agent_writes() -> None:
    spec = _pod_spec()
    spool_dir = {item["name"]: item.get("value") for item in _agent()["env"]}[config.ENV_SPOOL_DIR]
    host_volumes = {v["name"]: v["hostPath"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: m["name"] for m in _agent()["volumeMounts"]}
    assert host_volumes[mounts[spool_dir]] == {"path": "/var/lib/freezeframe/spool", "type": "DirectoryOrCreate"}
    assert f"{config.ENV_SPOOL_DIR}={spool_dir}" in _dockerfile_text().replace(" ", "")


def test_service_account_has_irsa_and_only_read_access() -> None:
    account = _one("ServiceAccount")
    assert re.fullmatch(r"arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]+",
                        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
    assert _pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    binding = _one("ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": _one("ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    assert not [doc for doc in DOCS if doc["kind"] in {"Role", "RoleBinding"}]


def test_cluster_role_is_read_only_on_the_watched_resources() -> None:
    for rule in _one("ClusterRole")["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no nonResourceURLs, no resourceNames
        assert set(rule["verbs"]) <= READ_VERBS, rule
        pairs = {(group, resource) for group in rule["apiGroups"] for resource in rule["resources"]}
        assert pairs <= ALLOWED_RULES, pairs - ALLOWED_RULES


def test_every_container_has_requests_within_limits() -> None:
    for container in _all_containers():
        resources = container["resources"]
        for name in ("cpu", "memory"):
            request, limit = parse_quantity(resources["requests"][name]), parse_quantity(resources["limits"][name])
            assert 0 < request <= limit, f"{container['name']} {name}"


def test_runs_on_every_node_with_its_own_priority() -> None:
    spec = _pod_spec()
    assert {"operator": "Exists"} in spec["tolerations"]
    priority = _one("PriorityClass")
    assert spec["priorityClassName"] == priority["metadata"]["name"]
    assert priority["value"] < 1_000_000_000, "user priority classes must stay below the system-* range"
    assert priority.get("globalDefault", False) is False


def test_probes_and_metrics_use_a_declared_port() -> None:
    agent = _agent()
    ports = {port["name"]: port["containerPort"] for port in agent["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        port = agent[probe]["httpGet"]["port"]
        assert port in ports or port in ports.values(), probe
        assert agent[probe]["httpGet"]["path"] == "/healthz"
    annotations = _one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    # The port the agent serves on is the one every probe, the scrape and the declared port use.
    env = {item["name"]: item["value"] for item in agent["env"] if "value" in item}
    served = config.Settings.from_env(env).agent_http_port
    assert set(ports.values()) == {served} and int(annotations["prometheus.io/port"]) == served


def test_rollout_and_shutdown() -> None:
    daemonset = _one("DaemonSet")
    assert daemonset["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    # One segment's upload can spend ~31 s in the uploader's back-off before it gives up; leave room for two.
    assert daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()


# --- Dockerfile (static: no Docker engine here) ----------------------------------------------------------------


def _dockerfile_text() -> str:
    return DOCKERFILE.read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in _dockerfile_text().splitlines():
        if line.lstrip().startswith("#") and not current.strip():
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    pairs = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _agent_requirements() -> dict[NormalizedName, Requirement]:
    found: dict[NormalizedName, Requirement] = {}
    for keyword, args in _instructions():
        if keyword == "RUN":
            for command in args.split("&&"):
                if "pip install" in command:
                    for quoted in re.findall(r'"([^"]+)"', command):
                        requirement = Requirement(quoted)
                        found[canonicalize_name(requirement.name)] = requirement
    return found


def test_dockerfile_base_image_and_entrypoint() -> None:
    args = dict(args.split("=", 1) for keyword, args in _instructions() if keyword == "ARG" and "=" in args)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    froms = [args for keyword, args in _instructions() if keyword == "FROM"]
    assert len(froms) >= 2 and all(f.startswith("${PYTHON_IMAGE}") for f in froms), "multi-stage, one base"
    stage = _final_stage()
    assert ("ENTRYPOINT", '["freezeframe-agent"]') in stage
    assert "freezeframe-agent" in PYPROJECT["project"]["scripts"]
    assert not [keyword for keyword, _ in _instructions() if keyword == "HEALTHCHECK"], "probes do this"
    assert "docker build -f node_agent/Dockerfile" in _dockerfile_text()


def test_dockerfile_runs_as_the_non_root_uid() -> None:
    users = [args for keyword, args in _final_stage() if keyword == "USER"]
    assert users and users[-1].split(":")[0] == str(AGENT_UID)
    assert "--uid 10001" in _dockerfile_text()


def test_dockerfile_installs_tcpdump_with_capture_capabilities() -> None:
    runs = " ".join(args for keyword, args in _final_stage() if keyword == "RUN")
    install = re.search(r"apt-get install ([^&]+)", runs)
    assert install is not None
    packages = install.group(1).split()
    assert "--no-install-recommends" in packages and {"tcpdump", "libcap2-bin"} <= set(packages)
    assert "setcap cap_net_raw,cap_net_admin+eip /usr/bin/tcpdump" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs


def test_dockerfile_agent_dependencies_follow_pyproject() -> None:
    declared = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    image = _agent_requirements()
    assert set(image) == {"boto3", "kafka-python", "aws-msk-iam-sasl-signer-python", "zstandard", "kubernetes",
                          "aws-lambda-powertools", "scapy"}
    for name, requirement in image.items():
        assert str(requirement.specifier) == str(declared[name].specifier), name
    assert "--no-deps" in " ".join(args for keyword, args in _instructions() if keyword == "RUN")


def test_dockerfile_copies_what_the_wheel_build_needs() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    sources = [src for keyword, args in _instructions() if keyword == "COPY" and "--from" not in args
               for src in args.split()[:-1]]
    for source in sources:
        assert (REPO / source).exists(), source
        assert source.split("/")[0] not in ignored, source
    assert PYPROJECT["project"]["readme"] in sources


def _blocked_modules() -> Iterator[str]:
    left_out = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    left_out -= set(_agent_requirements())
    for module, distributions in packages_distributions().items():
        if any(canonicalize_name(d) in left_out for d in distributions) and module.isidentifier():
            yield module


def test_agent_imports_without_the_dependencies_the_image_leaves_out() -> None:
    blocked = sorted(set(_blocked_modules()))
    assert {"pyarrow", "duckdb"} <= set(blocked)
    script = f"""
import importlib, pkgutil, sys
BLOCKED = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not in the agent image")
sys.meta_path.insert(0, Block())
import freezeframe_agent
for module in pkgutil.walk_packages(freezeframe_agent.__path__, "freezeframe_agent."):
    importlib.import_module(module.name)
from freezeframe_agent.main import main
try:
    main(["--help"])
except SystemExit as exc:
    sys.exit(exc.code)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "capture" in result.stdout
