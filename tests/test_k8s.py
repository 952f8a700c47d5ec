"""docker/k8s: every overlay renders, validates against the Kubernetes schemas, and is wired.

Rendered offline by ``kubectl kustomize``; core kinds are validated (strict) by
kubernetes-validate, the ServiceMonitor (a Prometheus Operator CRD it has no schema for)
by the checks here. Image tags are read from the Dockerfiles, never copied.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from camdet.client.config import load_cameras
from camdet.client.sharding import load_servers

from camdet.serving.security import RestrictedApis
from tests.helpers.docker import COMPOSE, DOCKER, dev_tool, dockerfile_args, interpolate

K8S = DOCKER / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VERSION = "1.30.0"
"""Oldest version validated: the ingest pods read the pod-index label (1.28+)."""
INGEST_DOCKERFILE = DOCKER / "Dockerfile.ingest"
SERVER_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
ADAPTER_RULES = K8S / "monitoring" / "prometheus-adapter-rules.yaml"
Manifest = dict[str, Any]


def render(overlay: Path) -> list[Manifest]:
    """``kubectl kustomize`` of an overlay, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl missing: install it to render the kustomizations")
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS, ids=lambda p: p.name)
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    return render(request.param)


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def servers_of(manifests: list[Manifest]) -> list[Manifest]:
    """The Triton StatefulSets (one per GPU pool)."""
    return [
        s
        for s in of_kind(manifests, "StatefulSet")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    ]


def container(pod_spec: Manifest, name: str, init: bool = False) -> Manifest:
    (found,) = [
        c for c in pod_spec["initContainers" if init else "containers"] if c["name"] == name
    ]
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def camera_file(manifests: list[Manifest], tmp_path: Path) -> Path:
    (config_map,) = [
        m
        for m in of_kind(manifests, "ConfigMap")
        if m["metadata"]["name"].startswith("camdet-cameras")
    ]
    path = tmp_path / "cameras.yaml"
    path.write_text(config_map["data"]["cameras.yaml"])
    return path


def test_every_overlay_is_tested() -> None:
    assert [p.name for p in OVERLAYS] == ["single-pool", "two-pools"]


def test_core_kinds_validate_against_the_kubernetes_schemas(manifests) -> None:
    kinds = set()
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRD: checked by test_service_monitors_scrape_their_pools_metrics
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        kinds.add(manifest["kind"])
    assert kinds == {
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }


def test_server_pods_probe_health_and_take_one_gpu(manifests) -> None:
    pools = servers_of(manifests)
    assert pools
    for pool in pools:
        spec = pool["spec"]["template"]["spec"]
        triton = container(spec, "tritonserver")
        ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
        assert ports == SERVER_PORTS
        assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
        assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
        startup = triton["startupProbe"]
        assert startup["httpGet"]["path"] == "/v2/health/live"
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model loading
        assert "--strict-readiness=true" in triton["command"]
        for c in (triton, container(spec, "engine", init=True)):
            assert c["resources"]["limits"]["nvidia.com/gpu"] == 1, c["name"]
        assert "nvidia.com/gpu.product" in spec["nodeSelector"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        annotations = pool["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(SERVER_PORTS["metrics"])
        shm = next(v for v in spec["volumes"] if v["name"] == "shm")
        assert shm["emptyDir"]["medium"] == "Memory"


def test_plans_are_built_on_the_pods_gpu_and_served_read_only(manifests) -> None:
    compose = interpolate(yaml.safe_load(COMPOSE.read_text()))
    compose_build = " ".join(compose["services"]["engine"]["command"])
    for pool in servers_of(manifests):
        spec = pool["spec"]["template"]["spec"]
        engine = container(spec, "engine", init=True)
        script = engine["command"][-1]
        assert re.search(r"build_engine\.py check --plan /plans/model\.plan .*\|\| ", script)
        assert "build_engine.py build --plan /plans/model.plan" in script
        assert "build_engine.py check" in compose_build  # the same step as compose's engine
        mounts = {m["name"]: m for m in container(spec, "tritonserver")["volumeMounts"]}
        assert mounts["plans"]["mountPath"] == "/opt/camdet/model_repository/detector/1"
        assert mounts["plans"]["readOnly"] is True
        assert {m["mountPath"] for m in engine["volumeMounts"] if m["name"] == "plans"} == {
            "/plans"
        }


def test_containers_get_the_environment_compose_gives_its_services(manifests) -> None:
    services = interpolate(yaml.safe_load(COMPOSE.read_text()))["services"]
    for pool in servers_of(manifests):
        spec = pool["spec"]["template"]["spec"]
        for service, k8s in (
            ("engine", container(spec, "engine", init=True)),
            ("server", container(spec, "tritonserver")),
        ):
            env = {e["name"]: e.get("value") for e in k8s["env"]}
            wanted = services[service].get("environment", {})
            assert wanted, f"compose's {service} sets no environment"
            assert {k: env.get(k) for k in wanted} == wanted, service


def test_server_keeps_the_admin_api_guard_of_compose(manifests) -> None:
    guard = RestrictedApis("camdet-admin", "$(CAMDET_ADMIN_KEY)").args()
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["server"]["command"]
    compose_guard = [
        re.sub(r"\$\{CAMDET_ADMIN_KEY:\?[^}]*\}", "$(CAMDET_ADMIN_KEY)", a)
        for a in compose
        if "restricted" in a
    ]
    assert compose_guard == guard
    for pool in servers_of(manifests):
        triton = container(pool["spec"]["template"]["spec"], "tritonserver")
        assert [a for a in triton["command"] if "restricted" in a] == guard
        (key,) = [e for e in triton["env"] if e["name"] == "CAMDET_ADMIN_KEY"]
        ref = key["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "camdet-admin" and not ref.get("optional", False)


def test_image_tags_are_the_dockerfiles_ngc_release(manifests) -> None:
    release = dockerfile_args(DOCKER / "Dockerfile")["NGC_VERSION"]
    for dockerfile in ("Dockerfile.builder", "Dockerfile.ingest"):
        assert dockerfile_args(DOCKER / dockerfile)["NGC_VERSION"] == release, dockerfile
    assert "FROM nvcr.io/nvidia/tritonserver:${NGC_VERSION}-py3-sdk" in (
        INGEST_DOCKERFILE.read_text()
    )
    images = set()
    for workload in of_kind(manifests, "StatefulSet"):
        spec = workload["spec"]["template"]["spec"]
        images |= {c["image"] for c in spec.get("initContainers", []) + spec["containers"]}
    assert images == {
        f"camdet-server:{release}",
        f"camdet-engine-builder:{release}",
        f"camdet-ingest:{release}",
    }


def test_services_expose_grpc_http_and_metrics_of_each_pool(manifests) -> None:
    for pool in servers_of(manifests):
        pod_labels = pool["spec"]["template"]["metadata"]["labels"]
        assert selects(pool["spec"]["selector"]["matchLabels"], pod_labels)
        headless = named(manifests, "Service", pool["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        api = named(manifests, "Service", f"{pool['metadata']['name']}-api")
        for service in (headless, api):
            assert selects(service["spec"]["selector"], pod_labels)
            assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == SERVER_PORTS
            assert {p["targetPort"] for p in service["spec"]["ports"]} == set(SERVER_PORTS)
        budget = named(manifests, "PodDisruptionBudget", pool["metadata"]["name"])
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"] == pool["spec"]["selector"]["matchLabels"]


def test_service_monitors_scrape_their_pools_metrics(manifests) -> None:
    monitors = of_kind(manifests, "ServiceMonitor")
    assert len(monitors) == len(servers_of(manifests))
    services = of_kind(manifests, "Service")
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor["spec"]) == {"selector", "endpoints"}
        chosen = [
            s
            for s in services
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert [s["metadata"]["name"] for s in chosen] == [monitor["metadata"]["name"]]
        port_names = {p["name"] for p in chosen[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
            assert endpoint["port"] == "metrics" and endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
            assert re.fullmatch(r"\d+(ms|s|m)", endpoint["interval"])


def test_autoscaler_uses_the_adapters_triton_metric(manifests) -> None:
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    served = {rule["name"]["as"]: rule for rule in rules}
    for pool in servers_of(manifests):
        hpa = named(manifests, "HorizontalPodAutoscaler", pool["metadata"]["name"])
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("StatefulSet", pool["metadata"]["name"])
        (metric,) = hpa["spec"]["metrics"]
        name = metric["pods"]["metric"]["name"]
        assert name in served
        assert "nv_inference_queue_duration_us" in served[name]["metricsQuery"]
        assert 1 <= hpa["spec"]["minReplicas"] <= pool["spec"]["replicas"]


def test_camera_file_lists_every_pod_the_autoscalers_may_create(manifests, tmp_path) -> None:
    expected = []
    for pool in servers_of(manifests):
        hpa = named(manifests, "HorizontalPodAutoscaler", pool["metadata"]["name"])
        name, service = pool["metadata"]["name"], pool["spec"]["serviceName"]
        expected += [
            f"{name}-{n}.{service}:{SERVER_PORTS['grpc']}"
            for n in range(hpa["spec"]["maxReplicas"])
        ]
    path = camera_file(manifests, tmp_path)
    assert load_servers(path) == expected
    assert load_cameras(path)


def test_ingest_replicas_each_take_their_shard(manifests) -> None:
    ingest = named(manifests, "StatefulSet", "camdet-ingest")
    spec = ingest["spec"]["template"]["spec"]
    client = container(spec, "ingest")
    env = {e["name"]: e for e in client["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["CAMDET_SHARD"]["value"] == f"$(POD_INDEX)/{ingest['spec']['replicas']}"
    assert client["command"] == ["camdet", "ingest"]
    (volume,) = spec["volumes"]
    config_map = volume["configMap"]["name"]
    assert config_map.startswith("camdet-cameras-")  # the generated, hash-suffixed one
    assert "--cameras=/etc/camdet/cameras.yaml" in client["args"]
    assert client["securityContext"]["runAsNonRoot"] is True
    metrics = {p["name"]: p["containerPort"] for p in client["ports"]}["metrics"]
    assert f"--metrics-port={metrics}" in client["args"]
    assert client["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_ingest_dockerfile_lints_clean() -> None:
    result = subprocess.run(
        [dev_tool("hadolint"), "--no-color", str(INGEST_DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
