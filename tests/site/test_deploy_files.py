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
from urllib.parse import urlsplit

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
    assert container["readinessProbe"]["grpc"] == {"port": 8001}  # the same checks as /api/v1/ready
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/v1/live"
    allowed = resources[("ConfigMap", "modelforge-config")]["data"]["ALLOWED_HOSTS"].split(",")
    assert {"name": "Host", "value": allowed[0]} in container["livenessProbe"]["httpGet"]["httpHeaders"]
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
    assert "command" not in services["api"]  # the image's deploy/serve.sh: granian and the gRPC server
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
    assert cmd and cmd[-1] == 'CMD ["deploy/serve.sh"]'
    assert "exec granian --interface wsgi" in (ROOT / "deploy" / "serve.sh").read_text()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_every_production_server_start_respawns_failed_workers():
    """Without it, one web worker that dies (SIGKILL, out of memory) makes granian stop the
    others and exit: tests/faults/test_worker_respawn.py shows the replacement at work."""
    from tests.granian_server import granian_command

    starts = {
        "make serve": next(
            line
            for line in (ROOT / "Makefile").read_text().replace("\\\n", " ").splitlines()
            if "granian --interface wsgi" in line
        ),
        "Dockerfile (deploy/serve.sh)": next(
            line
            for line in (ROOT / "deploy" / "serve.sh").read_text().replace("\\\n", " ").splitlines()
            if "granian --interface wsgi" in line
        ),
        "tests/granian_server.py": " ".join(granian_command(8000, workers=2)),
    }
    assert [name for name, command in starts.items() if "--respawn-failed-workers" not in command] == []
    # The Kubernetes Deployment runs the image's command.
    api = by_kind_and_name()[("Deployment", "modelforge-api")]["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in api and "args" not in api


KEDA = K8S / "keda"


def documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def configmap() -> dict:
    (found,) = [document for document in documents(K8S / "configmap.yaml") if document["kind"] == "ConfigMap"]
    return found


def scaled_object_schema(version: str) -> dict:
    """The openAPIV3Schema of KEDA's ScaledObject at ``version``, from the vendored CRD."""
    (crd,) = documents(KEDA / "scaledobjects.keda.sh.crd.yaml")
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == "ScaledObject"
    (served,) = [entry for entry in crd["spec"]["versions"] if entry["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def scaled_object_errors(document: dict) -> list[str]:
    import jsonschema

    version = document["apiVersion"].partition("/")[2]
    validator = jsonschema.Draft7Validator(scaled_object_schema(version))
    return sorted(
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)
    )


def test_the_keda_scaled_object_is_valid_and_watches_every_celery_queue_on_the_broker():
    (scaled,) = documents(KEDA / "worker-scaledobject.yaml")
    assert scaled_object_errors(scaled) == []

    workers = documents(K8S / "worker.yaml")
    target = scaled["spec"]["scaleTargetRef"]
    assert any(doc["kind"] == target["kind"] and doc["metadata"]["name"] == target["name"] for doc in workers)

    broker = urlsplit(configmap()["data"]["CELERY_BROKER_URL"])
    queues = {"high", "normal", "low"}
    assert queues == {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {
        settings.CELERY_TASK_DEFAULT_QUEUE
    }
    triggers = scaled["spec"]["triggers"]
    assert {trigger["metadata"]["listName"] for trigger in triggers} == queues
    for trigger in triggers:
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["address"] == broker.netloc
        assert trigger["metadata"]["databaseIndex"] == (broker.path.strip("/") or "0")
        assert int(trigger["metadata"]["listLength"]) >= 1


@pytest.mark.parametrize(
    "breakage, where",
    [
        (lambda spec: spec["triggers"][0].pop("metadata"), "spec.triggers.0"),
        (lambda spec: spec["triggers"][0]["metadata"].update(listLength=4), "spec.triggers.0.metadata.listLength"),
        (lambda spec: spec.pop("scaleTargetRef"), "spec"),
        (lambda spec: spec.update(maxReplicaCount="eight"), "spec.maxReplicaCount"),
    ],
)
def test_a_broken_scaled_object_fails_the_schema_check(breakage, where):
    (scaled,) = documents(KEDA / "worker-scaledobject.yaml")
    broken = copy.deepcopy(scaled)
    breakage(broken["spec"])
    errors = scaled_object_errors(broken)
    assert errors and any(error.startswith(f"{where}:") for error in errors), errors


def test_the_grpc_server_runs_beside_the_http_server_everywhere():
    """`make serve`, `make run` and the image (docker-compose's api service, the Kubernetes API
    pod) start `serve_grpc` beside granian; compose and the Service publish its port, and the
    kubelet asks grpc.health.v1 whether the pod is ready."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    for target in ("serve", "run"):
        recipe = re.search(rf"^{target}: .*?(?=^\S)", makefile, re.MULTILINE | re.DOTALL).group(0)
        assert "manage.py serve_grpc --host $(HOST) --port $(GRPC_PORT)" in recipe, target
    serve_script = (ROOT / "deploy" / "serve.sh").read_text()
    assert 'manage.py serve_grpc --host 0.0.0.0 --port "${GRPC_PORT:-8001}"' in serve_script
    assert "EXPOSE 8000 8001" in (ROOT / "Dockerfile").read_text()

    api = compose()["services"]["api"]
    assert "command" not in api  # the image's: deploy/serve.sh
    assert api["ports"] == ["${API_PORT:-8000}:8000", "${API_GRPC_PORT:-8001}:8001"]

    resources = by_kind_and_name()
    (container,) = resources[("Deployment", "modelforge-api")]["spec"]["template"]["spec"]["containers"]
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {"http": 8000, "grpc": 8001}
    assert container["readinessProbe"]["grpc"] == {"port": 8001}
    ports = {port["name"]: port for port in resources[("Service", "modelforge-api")]["spec"]["ports"]}
    assert ports["grpc"]["targetPort"] == "grpc" and ports["grpc"]["appProtocol"] == "grpc"
