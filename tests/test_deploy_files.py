"""The production kit's files, validated offline with the tools that read them: the Dockerfile (hadolint),
compose.yaml (podman-compose config), the Kubernetes manifests (kubernetes-validate, strict, against its
newest schema) and the systemd units (systemd-analyze verify, on a file tree laid out as the README's install).
Beyond validity, each test checks what the issue asks of the file (probes, non-root, sandboxing, secrets only
from the environment)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KUBERNETES = ROOT / "deploy/kubernetes"
SYSTEMD = ROOT / "deploy/systemd"
SECRET_NAMES = re.compile(r"TOKEN|PASSWORD|SECRET|KEY", re.I)


def test_hadolint_finds_nothing_in_the_dockerfile():
    lint = subprocess.run(
        [str(BIN / "hadolint"), "--config", ".hadolint.yaml", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr


def test_the_dockerfile_has_one_image_for_every_role():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=debian:bookworm-slim$", text, re.M)
    assert len(re.findall(r"^FROM \$\{BASE\}", text, re.M)) == 2  # build and runtime, on the same base
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.M)
    assert "/etc/pip.conf" not in text and "COPY --from=build /opt/aipbot/venv" in text


# -- compose ----------------------------------------------------------------------------------------------------


def compose_config(tmp_path: Path) -> dict:
    """compose.yaml as podman-compose resolves it, with a throwaway env file for the interpolated variables."""
    env = tmp_path / "compose.env"
    env.write_text("POSTGRES_PASSWORD=pw-for-the-test\n")
    done = subprocess.run(
        [str(BIN / "podman-compose"), "--env-file", str(env), "-f", "compose.yaml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_runs_the_cluster_with_healthchecks_and_no_secret_in_the_file(tmp_path):
    config = compose_config(tmp_path)
    services = config["services"]
    assert set(services) == {"redis", "postgres", "front1", "front2", "worker1", "worker2", "nginx"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        for needed, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, needed)
    for name in ("front1", "front2", "worker1", "worker2"):
        bot = services[name]
        assert bot["env_file"] == [".env"] and set(bot["depends_on"]) == {"redis", "postgres"}
        assert bot["read_only"] is True and bot["cap_drop"] == ["ALL"]
        assert any("/healthz" in part for part in bot["healthcheck"]["test"])
    assert services["front1"]["command"] == ["serve"]
    assert services["worker1"]["command"] == ["worker", "--port", "8080"]
    assert set(services["nginx"]["depends_on"]) == {"front1", "front2"}
    assert "postgres:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    # the secrets are in the env file: compose.yaml only names them
    raw = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAMES.search(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), (name, key, value)
    assert "pw-for-the-test" in services["front1"]["environment"]["AIPBOT_DATABASE_URL"]
    nginx = (ROOT / "deploy/compose/nginx.conf").read_text()
    assert "server front1:8080;" in nginx and "server front2:8080;" in nginx


# -- Kubernetes -------------------------------------------------------------------------------------------------


def manifests() -> dict[tuple[str, str], dict]:
    """Every resource of the kustomization, by (kind, name), each checked against the Kubernetes schema."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = kustomization["resources"]
    assert sorted(files) == sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    version = kubernetes_validate.latest_version()
    found = {}
    for name in files:
        for resource in yaml.safe_load_all((KUBERNETES / name).read_text()):
            kubernetes_validate.validate(resource, version, strict=True)  # raises on any schema violation
            found[(resource["kind"], resource["metadata"]["name"])] = resource
    assert [image["name"] for image in kustomization["images"]] == ["aipbot"]
    return found


def test_the_kubernetes_manifests_are_valid_and_run_front_ends_and_workers_safely():
    found = manifests()
    for role, args in (("front", ["serve"]), ("worker", ["worker", "--port", "8080"])):
        deployment = found[("Deployment", f"aipbot-{role}")]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        (container,) = pod["containers"]
        assert container["image"] == "aipbot" and container["args"] == args
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert set(container["resources"]) == {"requests", "limits"}
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert {"secretRef": {"name": "aipbot"}} in container["envFrom"]
        assert not any(SECRET_NAMES.search(key) for key in found[("ConfigMap", "aipbot")]["data"])
        budget = found[("PodDisruptionBudget", f"aipbot-{role}")]
        assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert found[("Service", "aipbot-front")]["spec"]["selector"]["app.kubernetes.io/component"] == "front"
    autoscaler = found[("HorizontalPodAutoscaler", "aipbot-worker")]["spec"]
    assert autoscaler["scaleTargetRef"]["name"] == "aipbot-worker"
    assert [m["external"]["metric"]["name"] for m in autoscaler["metrics"]] == ["aipbot_intake_depth"]


def test_kubernetes_validation_does_refuse_a_broken_manifest():
    deployment = yaml.safe_load((KUBERNETES / "front.yaml").read_text().split("---")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = {"no": "port"}
    try:
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise AssertionError("kubernetes-validate accepted a probe without a port")


# -- systemd ----------------------------------------------------------------------------------------------------


def installed_tree(root: Path) -> None:
    """What the README's VM install leaves (the units in /etc/systemd/system, the code and a virtualenv in
    /opt/aipbot), under ``root``, with the system's own units beside them."""
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in SYSTEMD.glob("*.service"):
        shutil.copy(unit, units)
    (root / "opt/aipbot").mkdir(parents=True)
    shutil.copy(ROOT / "bot.py", root / "opt/aipbot/bot.py")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--copies", str(root / "opt/aipbot/.venv")], check=True
    )


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *units],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )


def test_systemd_analyze_verifies_the_units(tmp_path):
    installed_tree(tmp_path)
    done = verify(tmp_path, "aipbot.service", "aipbot-serve@8081.service", "aipbot-worker@9101.service")
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stdout + done.stderr
    # and it does complain about a unit that is wrong
    broken = tmp_path / "etc/systemd/system/aipbot.service"
    broken.write_text(broken.read_text().replace("ExecStart=/opt/aipbot/.venv/bin/python", "ExecStart=/opt/nothing"))
    done = verify(tmp_path, "aipbot.service")
    assert done.returncode != 0 and "/opt/nothing" in done.stderr


def test_the_units_run_sandboxed_as_a_user_and_restart_on_failure():
    for unit in SYSTEMD.glob("*.service"):
        service = unit.read_text().split("[Service]")[1].split("[Install]")[0]
        settings = dict(line.split("=", 1) for line in service.splitlines() if "=" in line and line[0] != "#")
        assert settings["User"] == "aipbot" and settings["Restart"] == "on-failure", unit.name
        assert settings["NoNewPrivileges"] == "yes" and settings["ProtectSystem"] == "strict", unit.name
        assert settings["ReadWritePaths"] == "/var/lib/aipbot" and settings["StateDirectory"] == "aipbot", unit.name
        assert settings["EnvironmentFile"] == "/etc/aipbot/aipbot.env", unit.name
    assert "bot.py serve --config /etc/aipbot/config.yaml --port %i" in (SYSTEMD / "aipbot-serve@.service").read_text()
    assert (
        "bot.py worker --config /etc/aipbot/config.yaml --port %i" in (SYSTEMD / "aipbot-worker@.service").read_text()
    )
