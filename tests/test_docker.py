"""docker/: Dockerfiles linted by hadolint, compose.yaml valid and wired as documented.

Building the images and running the stack needs Docker, NGC and a GPU; these tests
check everything that can be checked without them.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tests.helpers.docker import COMPOSE, DOCKER, dev_tool, dockerfile_args, interpolate
from tests.helpers.paths import REPO

SERVER_DOCKERFILE = DOCKER / "Dockerfile"
BUILDER_DOCKERFILE = DOCKER / "Dockerfile.builder"
DOCKERFILES = (SERVER_DOCKERFILE, BUILDER_DOCKERFILE)
WORKDIR = "/opt/camdet"
MODEL_REPOSITORY = f"{WORKDIR}/model_repository"


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()))


def pip_pins(path: Path) -> dict[str, str]:
    """``name==version`` requirements a Dockerfile installs, by normalized name."""
    pins = {}
    for token in re.findall(r"\"?([A-Za-z0-9_.\-]+(?:\[[\w,]+\])?==[\w.+]+)\"?", path.read_text()):
        requirement = Requirement(token)
        pins[requirement.name.lower()] = str(requirement.specifier).removeprefix("==")
    return pins


# ----------------------------------------------------------------------------- lint & schema


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [dev_tool("hadolint"), "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=2)
    assert result.returncode == 0, result.stderr


def test_compose_matches_the_compose_spec(tmp_path: Path, compose: dict) -> None:
    interpolated = tmp_path / "compose.yaml"
    interpolated.write_text(yaml.safe_dump(compose))
    for path in (COMPOSE, interpolated):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "check_jsonschema",
                "--builtin-schema",
                "vendor.compose-spec",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- compose wiring


def test_engine_builds_only_when_check_fails(compose: dict) -> None:
    engine = compose["services"]["engine"]
    assert engine["command"][:2] == ["sh", "-c"]
    script = engine["command"][2]
    check, _, build = script.partition(" || ")
    assert check.startswith("python3 build_engine.py check --plan /plans/model.plan")
    assert build.startswith("python3 build_engine.py build --plan /plans/model.plan")
    assert "--precision fp16" in check and "--precision fp16" in build
    assert "--timing-cache /cache/timing.cache" in build
    assert engine["volumes"] == ["plans:/plans", "tensorrt-cache:/cache"]
    assert engine["restart"] == "no"
    assert engine["build"] == {
        "context": "..",
        "dockerfile": "docker/Dockerfile.builder",
        "args": {"NGC_VERSION": "26.10"},
    }


def test_server_waits_for_the_engine_and_serves_its_plan(compose: dict) -> None:
    server = compose["services"]["server"]
    assert server["depends_on"] == {"engine": {"condition": "service_completed_successfully"}}
    assert f"--model-repository={MODEL_REPOSITORY}" in server["command"]
    # Triton's TensorRT backend loads <repository>/detector/<version>/model.plan.
    assert server["volumes"] == [f"plans:{MODEL_REPOSITORY}/detector/1:ro"]
    # Cameras reach gRPC; HTTP (plaintext) and metrics are published on loopback only.
    assert server["ports"] == ["127.0.0.1:8000:8000", "8001:8001", "127.0.0.1:8002:8002"]
    assert set(compose["volumes"]) == {"plans", "tensorrt-cache"}


def test_server_health_check_waits_for_readiness(compose: dict) -> None:
    health = compose["services"]["server"]["healthcheck"]
    test = health["test"]
    assert test[0] == "CMD"
    assert "http://localhost:8000/v2/health/ready" in test[-1]
    assert int(health["start_period"].rstrip("s")) >= 60


def test_server_guards_admin_apis_with_a_required_secret(compose: dict) -> None:
    from camdet.serving.security import RestrictedApis

    command = compose["services"]["server"]["command"]
    secret = "${CAMDET_ADMIN_KEY:?set CAMDET_ADMIN_KEY, the admin API secret (docker/README.md)}"
    # The same flags camdet serve --restrict-apis gives (camdet.serving.security), with no default
    # secret: compose refuses to start without one.
    expected = [
        arg.replace("=placeholder", f"={secret}")
        for arg in RestrictedApis("camdet-admin", "placeholder").args()
    ]
    assert [arg for arg in command if "restricted" in arg] == expected


def test_both_services_reserve_the_same_nvidia_gpu(compose: dict) -> None:
    reservations = [
        compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        for name in ("engine", "server")
    ]
    assert reservations[0] == reservations[1]
    (device,) = reservations[0]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device["device_ids"] == ["0"]


def test_one_ngc_release_for_both_images(compose: dict) -> None:
    versions = {path.name: dockerfile_args(path)["NGC_VERSION"] for path in DOCKERFILES}
    assert versions == {"Dockerfile": "26.10", "Dockerfile.builder": "26.10"}
    assert "FROM nvcr.io/nvidia/tritonserver:${NGC_VERSION}-py3" in SERVER_DOCKERFILE.read_text()
    assert "FROM nvcr.io/nvidia/tensorrt:${NGC_VERSION}-py3" in BUILDER_DOCKERFILE.read_text()
    for name in ("engine", "server"):
        service = compose["services"][name]
        assert service["build"]["args"]["NGC_VERSION"] == "26.10"
        assert service["image"].endswith(":26.10")
        # DALI letterbox, postprocess and the build read the one input size setting
        assert service["environment"]["CAMDET_INPUT_SIZE"] == "640x640"
    assert "`26.10`" in (DOCKER / "README.md").read_text()


# ----------------------------------------------------------------------------- images


def test_images_share_the_project_layout() -> None:
    for path in DOCKERFILES:
        assert f"WORKDIR {WORKDIR}\n" in path.read_text()
    cmd = re.search(r"^CMD (.+)$", SERVER_DOCKERFILE.read_text(), re.MULTILINE)
    assert cmd is not None
    assert json.loads(cmd.group(1)) == ["tritonserver", f"--model-repository={MODEL_REPOSITORY}"]


def test_docker_pins_agree_with_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # the server image runs the GPU steps (camdet's "gpu" extra: torch); the builder also
    # converts precisions (the "precision" extra)
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *extras["gpu"], *extras["precision"]]
    declared = {canonicalize_name(Requirement(r).name): Requirement(r) for r in requirements}
    for path in DOCKERFILES:
        pins = {canonicalize_name(n): v for n, v in pip_pins(path).items()}
        assert pins, f"{path.name} installs nothing pinned"
        for name, version in pins.items():
            assert name in declared, f"{path.name} installs {name}, not a camdet dependency"
            assert declared[name].specifier.contains(version), (
                f"{path.name} pins {name}=={version}, pyproject says {declared[name]}"
            )
    assert set(pip_pins(SERVER_DOCKERFILE)) == {"torch", "torchvision", "opencv-python-headless"}


def test_server_image_imports_exist() -> None:
    command = re.search(r'python3 -c "import ([^"]+)"', SERVER_DOCKERFILE.read_text())
    assert command is not None
    modules = [m.strip() for m in command.group(1).split(",")]
    assert modules and all(importlib.util.find_spec(m) for m in modules), modules


# ----------------------------------------------------------------------------- .dockerignore


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: last matching pattern wins; a match covers a subtree."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern.removeprefix("**/"))
        hit = any(
            fnmatch.fnmatchcase(prefix, c) and (c.count("/") == prefix.count("/") or "**" in c)
            for prefix in prefixes
            for c in candidates
        )
        if hit:
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "model_repository/detector/1/model.plan",
        "model_repository/detector/1/model.plan.json",
        "camdet/__pycache__/geometry.cpython-312.pyc",
        "tests/test_docker.py",
        "camdet.egg-info/PKG-INFO",
        "data/frames/0001.jpg",
    ],
)
def test_dockerignore_keeps_out(path: str, dockerignore: list[str]) -> None:
    assert _ignored(path, dockerignore)


def test_dockerignore_keeps_what_the_images_need(dockerignore: list[str]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_dirs = project["tool"]["setuptools"].get("package-dir", {})
    needed = ["pyproject.toml", "README.md", "build_engine.py"]
    for package in project["tool"]["setuptools"]["packages"]:
        folder = package_dirs.get(package, package.replace(".", "/"))
        assert (REPO / folder / "__init__.py").is_file(), folder
        needed.append(f"{folder}/__init__.py")
    needed += [
        str(p.relative_to(REPO)) for p in (REPO / "model_repository").rglob("*") if p.is_file()
    ]
    needed.append("model_repository/detector/1/model.onnx")
    kept_out = [path for path in needed if _ignored(path, dockerignore)]
    assert kept_out == []


def test_readme_documents_running_and_clients() -> None:
    text = (DOCKER / "README.md").read_text()
    assert "docker compose -f docker/compose.yaml up --build -d" in text
    assert "camdet infer --url gpu-host:8001" in text
    assert "camdet ingest --url gpu-host:8001" in text
    assert "CAMDET_NGC_VERSION" in text and "TensorRT 11" in text
