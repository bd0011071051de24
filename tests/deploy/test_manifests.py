"""Static checks of the container and cluster files in ``deploy/``.

No Docker engine and no cluster are needed: Kubernetes manifests are validated with
kubernetes-validate's offline JSON schemas for one pinned Kubernetes version, in strict mode
(unknown fields are errors); the rest are cross-references between the files that a schema
cannot see (probes → ports, selectors → labels, HPA → Deployment, env → settings, mounts →
volumes, Dockerfile CMD → Deployment args → compose command).

One end-to-end test (``e2e``) runs the image's command line against the real CLI on loopback.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
K8S_DIR = DEPLOY_DIR / "k8s"
DOCKERFILE = DEPLOY_DIR / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = DEPLOY_DIR / "compose.yaml"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
SECRET_EXAMPLE = K8S_DIR / "secret.example.yaml"

# The Kubernetes API version the manifests are written for (schemas shipped by
# kubernetes-validate). Raise it deliberately, together with the cluster floor in deploy/README.md.
KUBERNETES_VERSION = "1.35"
NAMESPACE = "calf-cds"
CONTAINER_PORT = 8080
UID = 10001
TERMINATION_GRACE_SECONDS = 30

# The image's command: ENTRYPOINT + CMD. Listening on every interface is the point in a container.
ENTRYPOINT = ["calf-cds"]
SERVE_ARGS = ["serve", "--host", "0.0.0.0", "--port", str(CONTAINER_PORT)]  # noqa: S104
MIGRATE_ARGS = ["db", "upgrade"]

# Every setting the service reads (the configuration contract); anything else is a typo.
SETTINGS = frozenset(
    {
        "CALF_CDS_DATABASE_URL",
        "CALF_CDS_DATA_DIR",
        "CALF_CDS_PUBLIC_BASE_URL",
        "CALF_CDS_TRUSTED_ISSUERS_FILE",
        "CALF_CDS_RULES_DIR",
        "CALF_CDS_ACTIVE_PACK",
        "CALF_CDS_SHADOW_PACKS",
        "CALF_CDS_CORS_ORIGINS",
        "CALF_CDS_LOG_LEVEL",
        "CALF_CDS_WORKERS",
    }
)
DATA_DIR = "/var/lib/calf-cds"

Manifest = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Loading


@cache
def _manifest_documents() -> tuple[tuple[str, Manifest], ...]:
    """Every Kubernetes object in deploy/k8s/*.yaml (not the kustomization), with its file."""
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                documents.append((path.name, document))
    return tuple(documents)


def _document_id(entry: tuple[str, Manifest]) -> str:
    file_name, manifest = entry
    return f"{file_name}:{manifest['kind']}/{manifest['metadata']['name']}"


def _validate(manifest: Manifest) -> str:
    """Validate strictly; return the Kubernetes version whose schema was actually used."""
    return str(kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True))


@pytest.fixture
def manifests() -> dict[tuple[str, str], Manifest]:
    """The objects by (kind, name); deep copies, so a test may modify them."""
    return {
        (manifest["kind"], manifest["metadata"]["name"]): copy.deepcopy(manifest)
        for _, manifest in _manifest_documents()
    }


@pytest.fixture
def deployment(manifests: dict[tuple[str, str], Manifest]) -> Manifest:
    return manifests[("Deployment", "calf-cds")]


@pytest.fixture
def pod_spec(deployment: Manifest) -> Manifest:
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture
def pod_labels(deployment: Manifest) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.fixture
def all_containers(pod_spec: Manifest) -> list[Manifest]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


@pytest.fixture
def main_container(pod_spec: Manifest) -> Manifest:
    (container,) = (c for c in pod_spec["containers"] if c["name"] == "calf-cds")
    return container


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _env_values(container: Manifest) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


# --------------------------------------------------------------------------------------------
# Schemas


@pytest.mark.parametrize("entry", _manifest_documents(), ids=_document_id)
def test_manifest_validates_strictly(entry: tuple[str, Manifest]) -> None:
    """Each object matches the pinned Kubernetes version's schema, unknown fields included."""
    _, manifest = entry
    assert _validate(manifest) == KUBERNETES_VERSION


def test_strict_validation_rejects_unknown_fields(deployment: Manifest) -> None:
    """Strict mode really is strict: a misspelt field fails (guards the check above)."""
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        _validate(deployment)


def test_kustomization_lists_every_manifest_except_the_secret_example() -> None:
    """`kubectl apply -k` applies every manifest, but never overwrites the real Secret."""
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    manifest_files = {path.name for path in K8S_DIR.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert kustomization["namespace"] == NAMESPACE
    assert sorted(kustomization["resources"]) == sorted(manifest_files - {SECRET_EXAMPLE.name})


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
def test_kustomize_output_validates_strictly() -> None:
    """What `kubectl apply -k deploy/k8s` would send is valid, namespaced, and has no Secret."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True, check=True
    ).stdout
    objects = [document for document in yaml.safe_load_all(rendered) if document]
    kinds = {manifest["kind"] for manifest in objects}
    assert "Secret" not in kinds
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
    for manifest in objects:
        assert _validate(manifest) == KUBERNETES_VERSION
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == NAMESPACE


def test_every_namespaced_object_names_the_namespace() -> None:
    """`kubectl apply -f` on a single file lands in calf-cds too, not in `default`."""
    for _, manifest in _manifest_documents():
        if manifest["kind"] == "Namespace":
            assert manifest["metadata"]["name"] == NAMESPACE
        else:
            assert manifest["metadata"].get("namespace") == NAMESPACE, _document_id(("", manifest))


# --------------------------------------------------------------------------------------------
# The Deployment


def _probe_port(container: Manifest, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (container_port,) = (p["containerPort"] for p in container["ports"] if p.get("name") == port)
    return int(container_port)


@pytest.mark.parametrize(
    ("probe", "path"),
    [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")],
)
def test_probe_targets_endpoint_on_container_port(
    main_container: Manifest, probe: str, path: str
) -> None:
    """Readiness asks /readyz, liveness and startup ask /healthz, all on the serving port."""
    http_get = main_container[probe]["httpGet"]
    assert http_get["path"] == path
    assert _probe_port(main_container, http_get["port"]) == CONTAINER_PORT
    assert http_get.get("scheme", "HTTP") == "HTTP"


def test_container_port_is_the_port_the_command_serves_on(main_container: Manifest) -> None:
    """The declared containerPort is the `--port` passed to `calf-cds serve`."""
    args = main_container["args"]
    served_port = int(args[args.index("--port") + 1])
    assert [p["containerPort"] for p in main_container["ports"]] == [served_port]
    assert served_port == CONTAINER_PORT


def test_pod_security_context_is_restrictive(pod_spec: Manifest) -> None:
    """The pod runs as the image's fixed non-root UID with the runtime's seccomp profile."""
    context = pod_spec["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_every_container_security_context_is_restrictive(all_containers: list[Manifest]) -> None:
    """Non-root, read-only root, no privilege escalation, no capabilities, RuntimeDefault."""
    for container in all_containers:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context.get("runAsUser", UID) == UID, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        assert not context.get("privileged", False), container["name"]


_QUANTITY_SUFFIXES = {
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
}


def _quantity(value: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(value))
    assert match is not None, f"unparsable quantity {value!r}"
    number, suffix = match.groups()
    return float(number) * _QUANTITY_SUFFIXES[suffix]


def test_every_container_has_requests_and_limits(all_containers: list[Manifest]) -> None:
    """CPU and memory are requested and limited for each container, requests within limits."""
    for container in all_containers:
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request = _quantity(resources["requests"][resource])
            limit = _quantity(resources["limits"][resource])
            assert 0 < request <= limit, (container["name"], resource)


def test_init_container_migrates_the_database_with_the_same_image(
    pod_spec: Manifest, main_container: Manifest
) -> None:
    """`calf-cds db upgrade` runs before the service, from the same image and database URL."""
    (init,) = pod_spec["initContainers"]
    assert "command" not in init
    assert init["args"] == MIGRATE_ARGS
    assert init["image"] == main_container["image"]
    database_url = next(e for e in main_container["env"] if e["name"] == "CALF_CDS_DATABASE_URL")
    assert database_url in init["env"]


def test_container_runs_the_image_command(main_container: Manifest) -> None:
    """The image's ENTRYPOINT is kept and its args are the Dockerfile's CMD."""
    assert "command" not in main_container
    assert main_container["args"] == _dockerfile().cmd == SERVE_ARGS


def test_every_env_var_is_a_calf_cds_setting(
    manifests: dict[tuple[str, str], Manifest], all_containers: list[Manifest]
) -> None:
    """Env vars set directly or via envFrom ConfigMaps are CALF_CDS_ settings the service reads."""
    for container in all_containers:
        names = [item["name"] for item in container.get("env", [])]
        for source in container.get("envFrom", []):
            assert set(source) == {"configMapRef"}, "envFrom only from our ConfigMaps"
            assert "prefix" not in source
            config_map = manifests[("ConfigMap", source["configMapRef"]["name"])]
            names.extend(config_map["data"])
        assert names, container["name"]
        for name in names:
            assert name.startswith("CALF_CDS_"), (container["name"], name)
            assert name in SETTINGS, (container["name"], name)


def test_env_references_resolve(
    manifests: dict[tuple[str, str], Manifest], all_containers: list[Manifest]
) -> None:
    """Every secretKeyRef names a key of the example Secret; every ConfigMap ref exists."""
    (secret,) = yaml.safe_load_all(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    for container in all_containers:
        for item in container.get("env", []):
            reference = item.get("valueFrom", {}).get("secretKeyRef")
            if reference is not None:
                assert reference["name"] == secret["metadata"]["name"]
                assert reference["key"] in secret["stringData"]
        for source in container.get("envFrom", []):
            assert ("ConfigMap", source["configMapRef"]["name"]) in manifests


def test_secret_example_values_are_marked_placeholders() -> None:
    """The example Secret cannot be mistaken for (or silently used as) a real one."""
    (secret,) = yaml.safe_load_all(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    assert "data" not in secret
    assert secret["stringData"]
    for key, value in secret["stringData"].items():
        assert "CHANGE_ME" in value, key


def test_writable_paths_are_per_pod_empty_dirs(
    pod_spec: Manifest, all_containers: list[Manifest]
) -> None:
    """The data dir (audit spool) and /tmp are emptyDirs in every container."""
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    for container in all_containers:
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        data_dir = _env_values(container)["CALF_CDS_DATA_DIR"]
        assert data_dir == DATA_DIR
        for path in (data_dir, "/tmp"):  # noqa: S108 - the container's own /tmp, an emptyDir
            assert "emptyDir" in volumes[mounts[path]["name"]], (container["name"], path)
            assert not mounts[path].get("readOnly", False), (container["name"], path)


def test_rules_and_trusted_issuers_are_mounted_read_only(
    manifests: dict[tuple[str, str], Manifest], pod_spec: Manifest, main_container: Manifest
) -> None:
    """CALF_CDS_RULES_DIR is the rules ConfigMap; the issuers file is projected from the Secret."""
    (secret,) = yaml.safe_load_all(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in main_container["volumeMounts"]}
    env = _env_values(main_container)

    rules_mount = mounts[env["CALF_CDS_RULES_DIR"]]
    assert rules_mount["readOnly"] is True
    rules_volume = volumes[rules_mount["name"]]
    assert ("ConfigMap", rules_volume["configMap"]["name"]) in manifests

    issuers_file = Path(env["CALF_CDS_TRUSTED_ISSUERS_FILE"])
    secret_mount = mounts[str(issuers_file.parent)]
    assert secret_mount["readOnly"] is True
    secret_volume = volumes[secret_mount["name"]]["secret"]
    assert secret_volume["secretName"] == secret["metadata"]["name"]
    projected = {item["path"]: item["key"] for item in secret_volume["items"]}
    assert projected[issuers_file.name] in secret["stringData"]


def test_every_volume_mount_names_a_volume(
    pod_spec: Manifest, all_containers: list[Manifest]
) -> None:
    """No mount refers to a volume the pod does not declare."""
    volume_names = {volume["name"] for volume in pod_spec["volumes"]}
    for container in all_containers:
        for mount in container["volumeMounts"]:
            assert mount["name"] in volume_names, (container["name"], mount["name"])


def test_pod_has_no_kubernetes_api_access_and_no_service_links(
    manifests: dict[tuple[str, str], Manifest], pod_spec: Manifest
) -> None:
    """No service-account token; no injected CALF_CDS_PORT/… variables from the Service."""
    account = manifests[("ServiceAccount", pod_spec["serviceAccountName"])]
    assert account["automountServiceAccountToken"] is False
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["enableServiceLinks"] is False


def test_rollout_keeps_capacity_and_shuts_down_gracefully(
    deployment: Manifest, main_container: Manifest
) -> None:
    """maxUnavailable 0; a short preStop pause, then time to drain within the grace period."""
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= TERMINATION_GRACE_SECONDS
    pause = main_container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < pause <= grace // 3


def test_replicas_are_owned_by_the_hpa(
    deployment: Manifest, manifests: dict[tuple[str, str], Manifest]
) -> None:
    """No `replicas` in the Deployment, so re-applying never undoes the HPA; HPA keeps ≥ 2."""
    assert "replicas" not in deployment["spec"]
    hpa = manifests[("HorizontalPodAutoscaler", "calf-cds")]
    assert hpa["spec"]["minReplicas"] >= 2


def test_pods_spread_across_nodes_and_zones(pod_spec: Manifest, pod_labels: dict[str, str]) -> None:
    """Topology spread over hostnames and zones, each selecting this Deployment's pods."""
    constraints = pod_spec["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    for constraint in constraints:
        assert _selects(constraint["labelSelector"]["matchLabels"], pod_labels)


def test_deployment_selector_matches_its_pods(
    deployment: Manifest, pod_labels: dict[str, str]
) -> None:
    """The Deployment's selector selects its own template (an API-server rule)."""
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)


# --------------------------------------------------------------------------------------------
# Service, HPA, PDB, NetworkPolicy


def test_service_selects_the_pods_and_maps_80_to_the_container_port(
    manifests: dict[tuple[str, str], Manifest], pod_labels: dict[str, str], main_container: Manifest
) -> None:
    """ClusterIP port 80 → the pods' 8080, by a selector that matches the pod labels."""
    service = manifests[("Service", "calf-cds")]["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    assert _selects(service["selector"], pod_labels)
    (port,) = service["ports"]
    assert port["port"] == 80
    assert _probe_port(main_container, port["targetPort"]) == CONTAINER_PORT


def test_hpa_targets_the_deployment_on_cpu(
    manifests: dict[tuple[str, str], Manifest], deployment: Manifest
) -> None:
    """autoscaling/v2, the Deployment by name, 70 % CPU, 2–20 replicas."""
    hpa = manifests[("HorizontalPodAutoscaler", "calf-cds")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 20)


def test_pdb_selects_the_pods(
    manifests: dict[tuple[str, str], Manifest], pod_labels: dict[str, str]
) -> None:
    """The disruption budget protects these pods and keeps one available."""
    pdb = manifests[("PodDisruptionBudget", "calf-cds")]["spec"]
    assert _selects(pdb["selector"]["matchLabels"], pod_labels)
    assert pdb["minAvailable"] == 1


def test_network_policy_admits_only_the_service_port(
    manifests: dict[tuple[str, str], Manifest], pod_labels: dict[str, str]
) -> None:
    """Ingress only to 8080, from the ingress controller's namespace and this namespace."""
    policy = manifests[("NetworkPolicy", "calf-cds")]["spec"]
    assert _selects(policy["podSelector"]["matchLabels"], pod_labels)
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    for rule in policy["ingress"]:
        assert rule["from"], "ingress from anywhere"
        assert rule["ports"] == [{"protocol": "TCP", "port": CONTAINER_PORT}]


def test_network_policy_egress_is_dns_postgres_and_https(
    manifests: dict[tuple[str, str], Manifest],
) -> None:
    """Egress: DNS (UDP and TCP 53), PostgreSQL 5432, HTTPS 443 (FHIR servers, JWKS); no more."""
    policy = manifests[("NetworkPolicy", "calf-cds")]["spec"]
    allowed = set()
    for rule in policy["egress"]:
        assert rule["ports"], "egress on every port"
        allowed |= {(port["protocol"], port["port"]) for port in rule["ports"]}
    assert allowed == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 443)}


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


@dataclass(frozen=True)
class Dockerfile:
    preamble: tuple[Instruction, ...]  # the ARGs before the first FROM
    stages: tuple[tuple[Instruction, ...], ...]

    @property
    def final(self) -> tuple[Instruction, ...]:
        return self.stages[-1]

    def final_values(self, keyword: str) -> list[str]:
        return [i.value for i in self.final if i.keyword == keyword]

    def exec_form(self, keyword: str) -> list[str]:
        """The last ENTRYPOINT/CMD of the final stage, which must be in exec (JSON) form."""
        parsed = json.loads(self.final_values(keyword)[-1])
        assert isinstance(parsed, list), f"{keyword} must be in exec form"
        return [str(part) for part in parsed]

    @property
    def entrypoint(self) -> list[str]:
        return self.exec_form("ENTRYPOINT")

    @property
    def cmd(self) -> list[str]:
        return self.exec_form("CMD")


def _parse_dockerfile(text: str) -> Dockerfile:
    """Instructions per stage: comments dropped, backslash continuations joined."""
    preamble: list[Instruction] = []
    stages: list[list[Instruction]] = []
    logical = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        logical = f"{logical} {line}" if logical else line
        if logical.endswith("\\"):
            logical = logical[:-1].rstrip()
            continue
        keyword, _, value = logical.partition(" ")
        instruction = Instruction(keyword.upper(), value.strip())
        logical = ""
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
        else:
            assert instruction.keyword == "ARG", f"{instruction.keyword} before FROM"
            preamble.append(instruction)
    return Dockerfile(tuple(preamble), tuple(tuple(stage) for stage in stages))


@cache
def _dockerfile() -> Dockerfile:
    return _parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _env_instructions(values: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in values:
        for pair in shlex.split(value):
            key, _, assigned = pair.partition("=")
            env[key] = assigned
    return env


def test_dockerfile_runtime_is_python_311_slim() -> None:
    """Multi-stage; the final stage starts from python:3.11-slim (directly or via an ARG)."""
    dockerfile = _dockerfile()
    assert len(dockerfile.stages) >= 2
    image = dockerfile.final_values("FROM")[0].split()[0]
    if image.startswith("${"):
        defaults = dict(i.value.split("=", 1) for i in dockerfile.preamble if "=" in i.value)
        image = defaults[image.strip("${}")]
    assert image == "python:3.11-slim"


def test_dockerfile_runs_as_a_fixed_non_root_uid() -> None:
    """USER is numeric (so runAsNonRoot can verify it) and not 0; the same UID as the pods."""
    (user,) = _dockerfile().final_values("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) == UID
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_dockerfile_healthcheck_asks_healthz_with_the_standard_library() -> None:
    """HEALTHCHECK runs Python (no curl in slim) against /healthz on the exposed port."""
    (healthcheck,) = _dockerfile().final_values("HEALTHCHECK")
    _, _, command = healthcheck.partition("CMD ")
    argv = json.loads(command)
    assert argv[0].endswith("python") or argv[0].endswith("python3")
    assert argv[1] == "-c"
    code = argv[2]
    compile(code, "<HEALTHCHECK>", "exec")
    assert "urllib.request" in code
    assert f"127.0.0.1:{CONTAINER_PORT}/healthz" in code
    assert "timeout=" in code


def test_dockerfile_exposes_the_service_port_and_sets_the_data_dir() -> None:
    """EXPOSE 8080, CALF_CDS_DATA_DIR=/var/lib/calf-cds."""
    dockerfile = _dockerfile()
    assert dockerfile.final_values("EXPOSE") == [str(CONTAINER_PORT)]
    env = _env_instructions(dockerfile.final_values("ENV"))
    assert env["CALF_CDS_DATA_DIR"] == DATA_DIR


def test_dockerfile_command_is_calf_cds_serve() -> None:
    """ENTRYPOINT ["calf-cds"] and CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]."""
    dockerfile = _dockerfile()
    assert dockerfile.entrypoint == ENTRYPOINT
    assert dockerfile.cmd == SERVE_ARGS


def test_dockerfile_installs_the_locked_dependencies_without_dev_tools() -> None:
    """The builder syncs from uv.lock (frozen), without the dev group, not editable."""
    runs = " ".join(i.value for i in _dockerfile().stages[0] if i.keyword == "RUN")
    assert "pip install" in runs
    assert "uv==" in runs, "pin uv"
    final_sync = re.findall(r"uv sync[^&;]*", runs)[-1]
    for flag in ("--frozen", "--no-dev", "--no-editable"):
        assert flag in final_sync


def _copy_sources(dockerfile: Dockerfile) -> list[str]:
    sources = []
    for stage in dockerfile.stages:
        for instruction in stage:
            if instruction.keyword != "COPY" or "--from=" in instruction.value:
                continue
            parts = [p for p in instruction.value.split() if not p.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def test_dockerfile_copies_every_package_of_the_wheel() -> None:
    """Each package pyproject.toml builds into the wheel is copied into the builder."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    sources = {source.rstrip("/") for source in _copy_sources(_dockerfile())}
    assert set(packages) <= sources
    assert {"pyproject.toml", "uv.lock", "README.md"} <= sources


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw_line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        translated = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*")
        translated = translated.replace(r"\?", "[^/]").replace("\0/", "(?:.*/)?")
        translated = translated.replace("\0", ".*").replace(r"\[", "[").replace(r"\]", "]")
        patterns.append((negated, re.compile(f"{translated}")))
    return patterns


def _in_build_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    included = True
    for negated, pattern in _dockerignore_patterns():
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            included = negated
    return included


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "service/cli.py",
        "rules/packs/calf-pain-1.0.0.json",
        "fhir_mappings/data/value_sets.json",
    ],
)
def test_dockerignore_keeps_build_inputs(path: str) -> None:
    """What the image is built from reaches the build context."""
    assert _in_build_context(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/config",
        ".env",
        "data/calf-cds.sqlite",
        ".calf-cds/dev-key.pem",
        "tests/data/bundle.json",
        "service/__pycache__/cli.cpython-311.pyc",
    ],
)
def test_dockerignore_drops_local_state(path: str) -> None:
    """Virtualenvs, git, local data, keys and byte-code never reach the build context."""
    assert not _in_build_context(path)


def test_dockerignore_keeps_every_copy_source() -> None:
    """Each path the Dockerfile COPYs from the context is not ignored."""
    for source in _copy_sources(_dockerfile()):
        assert _in_build_context(source.rstrip("/")), source


# --------------------------------------------------------------------------------------------
# compose.yaml


@pytest.fixture
def compose() -> Manifest:
    document: Manifest = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return document


def test_compose_service_runs_the_image_command(compose: Manifest) -> None:
    """The service is built from deploy/Dockerfile and runs the same `serve` as the image."""
    service = compose["services"]["calf-cds"]
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert service["command"] == _dockerfile().cmd == SERVE_ARGS
    assert "entrypoint" not in service
    assert f"{CONTAINER_PORT}:{CONTAINER_PORT}" in service["ports"]


def test_compose_migrates_before_the_service_starts(compose: Manifest) -> None:
    """postgres healthy → `calf-cds db upgrade` completes → the service starts."""
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == MIGRATE_ARGS
    assert migrate["image"] == services["calf-cds"]["image"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["calf-cds"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }


def test_compose_postgres_is_16_with_a_healthcheck(compose: Manifest) -> None:
    """postgres:16 reports health with pg_isready, which `service_healthy` waits for."""
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_compose_settings_point_at_postgres_and_a_writable_data_dir(compose: Manifest) -> None:
    """Only CALF_CDS_ settings; the database is the postgres service; the data dir is a volume."""
    for name in ("migrate", "calf-cds"):
        service = compose["services"][name]
        environment = service["environment"]
        assert set(environment) <= SETTINGS, name
        assert "@postgres:5432/" in environment["CALF_CDS_DATABASE_URL"]
        assert environment["CALF_CDS_DATA_DIR"] == DATA_DIR
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        writable = {*service["tmpfs"], *(v.split(":")[1] for v in service.get("volumes", []))}
        assert {DATA_DIR, "/tmp"} <= writable, name  # noqa: S108 - the container's own /tmp


# --------------------------------------------------------------------------------------------
# The image's command against the real CLI

CALF_CDS = REPO_ROOT / ".venv" / "bin" / "calf-cds"
_CLI_PRESENT = CALF_CDS.exists() and importlib.util.find_spec("service.cli") is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except OSError:
        return None


def _trusted_issuers_file(folder: Path) -> Path:
    """A trusted-issuer file naming one EHR by an inline public key (made here, never used)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
    issuers = {"issuers": [{"iss": "https://ehr.example.org/", "jwks": {"keys": [{**jwk, "kid": "k1"}]}}]}
    path = folder / "trusted-issuers.json"
    path.write_text(json.dumps(issuers), encoding="utf-8")
    return path


@pytest.mark.e2e
@pytest.mark.skipif(not _CLI_PRESENT, reason="the calf-cds CLI (service.cli) has not landed yet")
def test_image_command_serves_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    """ENTRYPOINT + CMD, moved to loopback, answer /healthz (and the HEALTHCHECK passes);
    SIGTERM stops the process cleanly within the pod's grace period."""
    dockerfile = _dockerfile()
    argv = [*dockerfile.entrypoint, *dockerfile.cmd]
    port = _free_port()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    argv[0] = str(CALF_CDS)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALF_CDS_")}
    environment["CALF_CDS_DATA_DIR"] = str(tmp_path / "data")
    (tmp_path / "data").mkdir()
    # As in the pod: the service refuses to start without a trusted-issuer file (the Secret's).
    environment["CALF_CDS_TRUSTED_ISSUERS_FILE"] = str(_trusted_issuers_file(tmp_path))
    log_path = tmp_path / "serve.log"

    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            argv, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
        ) as process,
    ):
        try:
            deadline = time.monotonic() + 60  # the startupProbe's budget
            status = None
            while status != 200 and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.2)
                status = _get_status(f"http://127.0.0.1:{port}/healthz")
            log.flush()
            assert status == 200, log_path.read_text(errors="replace")

            (healthcheck,) = dockerfile.final_values("HEALTHCHECK")
            code = json.loads(healthcheck.partition("CMD ")[2])[2]
            code = code.replace(f":{CONTAINER_PORT}/", f":{port}/")
            subprocess.run([sys.executable, "-c", code], check=True, timeout=10)

            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=TERMINATION_GRACE_SECONDS - 5)
            # uvicorn re-raises the signal after its graceful shutdown: -SIGTERM is a clean stop.
            assert returncode in {0, -signal.SIGTERM}, log_path.read_text(errors="replace")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
