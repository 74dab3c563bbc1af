"""The deployment files: Kubernetes manifests checked against the Kubernetes schemas
(kubernetes-validate ships them, so this runs offline), docker-compose.yml checked by `docker
compose config` where a compose CLI exists and for the stack's shape everywhere, the Dockerfile
for a slim, non-root image running the production server."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = kubernetes_validate.utils.latest_version()


def manifests() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind_and_name() -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in manifests()}


@pytest.mark.parametrize("doc", manifests(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_every_manifest_passes_the_kubernetes_schema_strictly(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schema_check_catches_a_misspelt_field():
    deployment = copy.deepcopy(by_kind_and_name()[("Deployment", "modelforge-api")])
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_api_and_worker_have_a_deployment_service_and_autoscaler():
    resources = by_kind_and_name()
    for component in ("api", "worker"):
        name = f"modelforge-{component}"
        deployment = resources[("Deployment", name)]
        service = resources[("Service", name)]
        autoscaler = resources[("HorizontalPodAutoscaler", name)]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert resources[("Deployment", "modelforge-beat")]["spec"]["replicas"] == 1
    migrate = resources[("Job", "modelforge-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]


def test_api_probes_are_the_health_routes_with_an_allowed_host():
    resources = by_kind_and_name()
    container = resources[("Deployment", "modelforge-api")]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/v1/live"
    allowed = resources[("ConfigMap", "modelforge-config")]["data"]["ALLOWED_HOSTS"].split(",")
    for probe in ("readinessProbe", "livenessProbe"):
        assert {"name": "Host", "value": allowed[0]} in container[probe]["httpGet"]["httpHeaders"]
    worker = resources[("Deployment", "modelforge-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert "inspect ping" in " ".join(worker["livenessProbe"]["exec"]["command"])


def test_every_configured_variable_is_one_the_readme_documents():
    readme = (ROOT / "README.md").read_text()
    resources = by_kind_and_name()
    names = set(resources[("ConfigMap", "modelforge-config")]["data"]) | set(
        resources[("Secret", "modelforge-secrets")]["stringData"]
    )
    undocumented = sorted(name for name in names if f"`{name}`" not in readme)
    assert undocumented == []


def test_pods_run_as_the_images_non_root_user():
    for doc in manifests():
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 10001


# --- docker compose -----------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_passes_with_the_example_env_file():
    cli = compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI here (.ci/run installs one)")
    for profile in ([], ["--profile", "s3"]):
        result = subprocess.run(
            [*cli, "--env-file", ".env.example", *profile, "config", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_compose_runs_the_whole_stack_with_healthchecks_and_volumes():
    stack = compose()
    services = stack["services"]
    assert {"api", "worker", "beat", "db", "redis", "broker", "migrate", "minio"} <= set(services)
    assert services["db"]["image"] == "postgres:16"
    assert "granian" in " ".join(services["api"]["command"])
    assert services["minio"]["profiles"] == ["s3"]  # optional storage
    for name in ("api", "worker", "db", "redis", "broker", "minio"):
        assert "test" in services[name]["healthcheck"], name
    broker = " ".join(services["broker"]["command"])
    assert "--maxmemory-policy noeviction" in broker
    assert services["api"]["environment"]["CELERY_BROKER_URL"] != services["api"]["environment"]["REDIS_URL"]
    declared = set(stack["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in declared
    for service in services.values():
        for dependency in service.get("depends_on", {}):
            assert dependency in services


def test_every_required_compose_variable_is_in_the_example_env_file():
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    example = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    assert required and required <= example


def test_the_image_is_slim_non_root_and_runs_granian():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim$", dockerfile, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    cmd = [line for line in dockerfile.splitlines() if line.startswith("CMD ")]
    assert cmd and "granian --interface wsgi" in cmd[-1]
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_every_production_server_start_respawns_failed_workers():
    """Without it, one web worker that dies (SIGKILL, out of memory) makes granian stop the
    others and exit: tests/faults/test_worker_respawn.py shows the replacement at work."""
    from tests.granian_server import granian_command

    services = compose()["services"]
    dockerfile_cmd = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    starts = {
        "make serve": next(
            line
            for line in (ROOT / "Makefile").read_text().replace("\\\n", " ").splitlines()
            if "granian --interface wsgi" in line
        ),
        "Dockerfile": dockerfile_cmd[-1],
        "docker-compose api": " ".join(services["api"]["command"]),
        "tests/granian_server.py": " ".join(granian_command(8000, workers=2)),
    }
    assert [name for name, command in starts.items() if "--respawn-failed-workers" not in command] == []
    # The Kubernetes Deployment runs the image's command.
    api = by_kind_and_name()[("Deployment", "modelforge-api")]["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in api and "args" not in api
