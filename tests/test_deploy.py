"""The deployment examples in deploy/ are held to the gateway: they load, verify and agree with it."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from docs_markdown import read
from helpers import ROOT

from gateway.app import build_app
from gateway.cli.server import drain_seconds
from gateway.config import Config, build_config, load_config
from gateway.listener import files_needed
from gateway.passwords import parse_hash

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "apigee-audit-gateway.service"
VERIFY_UNIT = DEPLOY / "apigee-audit-gateway-verify.service"
TIMER = DEPLOY / "apigee-audit-gateway-verify.timer"
HOST_CONFIG = DEPLOY / "config.toml"
MANIFEST = DEPLOY / "kubernetes-sidecar.yaml"

INSTALLED_GATEWAY = "/opt/apigee-audit-gateway/venv/bin/gateway"
INSTALLED_CONFIG = "/etc/apigee-audit-gateway/config.toml"
CHAIN_KEY = "0123456789abcdef0123456789abcdef"
"""32 bytes: what the examples' chain key variable holds in these tests."""

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}


class _CaseKept(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return optionstr


def unit(path: Path) -> configparser.ConfigParser:
    """A systemd unit as configparser reads it: keys keep their case, a repeated key keeps its last value."""
    parser = _CaseKept(strict=False, interpolation=None)
    parser.read_string(path.read_text(), source=str(path))
    return parser


def host_config() -> Config:
    environ = {tomllib.loads(HOST_CONFIG.read_text())["audit"]["chain_key_env"]: CHAIN_KEY}
    return load_config(HOST_CONFIG, environ=environ)


def test_the_documented_drain_is_60_seconds_by_default() -> None:
    """The units, the manifest and docs/deployment.md give 60 s as the default drain; it must still be so."""
    assert 60.0 == drain_seconds(load_config(None))


class TestSystemdUnit:
    def test_runs_gateway_serve_with_the_installed_config(self) -> None:
        """ExecStart runs the venv's console script on /etc/apigee-audit-gateway/config.toml."""
        service = unit(UNIT)["Service"]
        assert [INSTALLED_GATEWAY, "serve", "--config", INSTALLED_CONFIG] == shlex.split(service["ExecStart"])

    def test_runs_as_a_dedicated_user_and_restarts_on_failure(self) -> None:
        service = unit(UNIT)["Service"]
        assert ("apigee-audit-gateway", "apigee-audit-gateway") == (service["User"], service["Group"])
        assert ("on-failure", "SIGTERM") == (service["Restart"], service["KillSignal"])

    def test_reload_sends_sighup(self) -> None:
        """`systemctl reload` re-reads [[users]]: the gateway reloads them on SIGHUP (tests/test_reload.py)."""
        assert ["/bin/kill", "-HUP", "$MAINPID"] == shlex.split(unit(UNIT)["Service"]["ExecReload"])

    def test_stop_timeout_outlasts_the_drain(self) -> None:
        """systemd's SIGKILL must not cut the drain short, or the calls in flight stay pending."""
        timeout = float(unit(UNIT)["Service"]["TimeoutStopSec"].removesuffix("s"))
        assert timeout > drain_seconds(host_config()) >= 60

    def test_open_file_limit_covers_the_connection_cap(self) -> None:
        """Past max_connections the gateway refuses connections itself, before the file limit could."""
        assert int(unit(UNIT)["Service"]["LimitNOFILE"]) >= files_needed(host_config().server.max_connections)

    @pytest.mark.parametrize("path", [UNIT, VERIFY_UNIT], ids=lambda p: p.name)
    def test_is_hardened(self, path: Path) -> None:
        service = unit(path)["Service"]
        assert HARDENING == {key: service.get(key) for key in HARDENING}

    def test_database_is_in_the_state_directory_the_unit_may_write(self) -> None:
        """audit.database lies in StateDirectory, the one path ReadWritePaths opens under ProtectSystem=strict."""
        service = unit(UNIT)["Service"]
        state = Path("/var/lib") / service["StateDirectory"]
        assert [str(state)] == service["ReadWritePaths"].split()
        assert state == host_config().database_path.parent

    def test_chain_key_comes_from_a_root_only_environment_file(self) -> None:
        """The config names an environment variable; the unit reads an EnvironmentFile next to the config."""
        config = host_config()
        assert config.chain_secret == CHAIN_KEY.encode()
        assert (config.audit.chain_key_env, "") == ("GATEWAY_CHAIN_KEY", config.audit.chain_key_file)
        assert str(PurePosixPath(INSTALLED_CONFIG).parent / "env") == unit(UNIT)["Service"]["EnvironmentFile"]

    def test_verify_timer_checks_the_same_log_with_the_same_key(self) -> None:
        gateway, verify = unit(UNIT)["Service"], unit(VERIFY_UNIT)["Service"]
        assert [INSTALLED_GATEWAY, "audit", "verify", "--config", INSTALLED_CONFIG] == shlex.split(verify["ExecStart"])
        for key in ("User", "Group", "EnvironmentFile", "StateDirectory", "ReadWritePaths"):
            assert gateway[key] == verify[key], key
        assert "oneshot" == verify["Type"]
        assert "hourly" == unit(TIMER)["Timer"]["OnCalendar"]


class TestHostConfig:
    def test_loads_with_the_real_loader(self) -> None:
        config = host_config()
        assert ("127.0.0.1", 8080) == (config.server.host, config.server.port)
        assert ("https://api.enterprise.apigee.com", "passthrough") == (config.upstream.url, config.upstream.auth)
        assert Path("/var/lib/apigee-audit-gateway/audit.db") == config.database_path

    def test_user_hashes_have_the_hash_password_format(self) -> None:
        for user in host_config().users:
            parse_hash(user.password_hash)


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian: apt-get install systemd)"
)


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60)


def units_for_this_host(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart runs this venv's `gateway`, since /opt/... does not exist here.

    Nothing else changes: the unit verified is the unit shipped.
    """
    gateway = shutil.which("gateway", path=str(Path(sys.executable).parent)) or shutil.which("gateway")
    assert gateway is not None, "the gateway console script is not installed (pip install -e .)"
    copies = []
    for path in (UNIT, VERIFY_UNIT, TIMER):
        text = path.read_text()
        if path.suffix == ".service":
            assert INSTALLED_GATEWAY in text
            text = text.replace(INSTALLED_GATEWAY, gateway)
        copy = tmp_path / path.name
        copy.write_text(text)
        copies.append(copy)
    return copies


@needs_systemd_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """No error and no warning about them (an unknown or misspelt directive is only a warning, with exit 0)."""
    copies = units_for_this_host(tmp_path)
    result = systemd_analyze("verify", *map(str, copies))
    about_ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if str(tmp_path) in line or any(copy.name in line for copy in copies)
    ]
    assert (0, []) == (result.returncode, about_ours), result.stderr


@needs_systemd_analyze
def test_services_keep_a_low_exposure_level(tmp_path: Path) -> None:
    """`systemd-analyze security` fails past an exposure of 2.5 ("OK"): the hardening cannot regress silently."""
    for copy in units_for_this_host(tmp_path):
        if copy.suffix != ".service":
            continue
        result = systemd_analyze("security", "--offline=true", "--threshold=25", str(copy))  # 0-100 scale
        if "--offline" in result.stderr or "--threshold" in result.stderr:
            pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {result.stderr.strip()}")
        assert 0 == result.returncode, result.stdout[-400:] + result.stderr


# Kubernetes ------------------------------------------------------------------------------------


def manifest() -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind (each kind appears once)."""
    documents = [document for document in yaml.safe_load_all(MANIFEST.read_text()) if document is not None]
    kinds = [document["kind"] for document in documents]
    assert len(kinds) == len(set(kinds)), kinds
    return {document["kind"]: document for document in documents}


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifest()["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(name: str) -> dict[str, Any]:
    spec = pod_spec()
    found: list[dict[str, Any]] = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    assert 1 == len(found), name
    return found[0]


def gateway_environment() -> dict[str, str]:
    """The gateway container's environment, with CHAIN_KEY standing for each Secret's value."""
    return {e["name"]: e["value"] if "value" in e else CHAIN_KEY for e in container("gateway")["env"]}


def sidecar_config() -> Config:
    """The ConfigMap's config.toml, validated by the gateway's own loader in the container's environment."""
    config_map = manifest()["ConfigMap"]
    data = tomllib.loads(config_map["data"]["config.toml"])
    source = f"{MANIFEST.name}: ConfigMap {config_map['metadata']['name']}: config.toml"
    return build_config(data, source=source, base_dir=Path("/etc/gateway"), environ=gateway_environment())


def mount_of(mounted_on: dict[str, Any], path: PurePosixPath) -> dict[str, Any]:
    """The pod's volume that this container mounts at path."""
    names = [m["name"] for m in mounted_on["volumeMounts"] if PurePosixPath(m["mountPath"]) == path]
    assert 1 == len(names), f"nothing mounted at {path}"
    return next(v for v in pod_spec()["volumes"] if v["name"] == names[0])


def mebibytes(quantity: str) -> float:
    found = re.fullmatch(r"(\d+)([MGT]i)", quantity)
    assert found is not None, quantity
    number, unit = found.groups()
    return int(number) * {"Mi": 1, "Gi": 1024, "Ti": 1024**2}[unit]


class TestKubernetesSidecar:
    def test_holds_the_configmap_claim_deployment_and_network_policy(self) -> None:
        documents = manifest()
        assert {"ConfigMap", "PersistentVolumeClaim", "Deployment", "NetworkPolicy"} == set(documents)
        assert "apps/v1" == documents["Deployment"]["apiVersion"]

    def test_config_map_is_a_valid_gateway_config(self) -> None:
        config = sidecar_config()
        assert (8080, "https://api.enterprise.apigee.com", "passthrough") == (
            config.server.port,
            config.upstream.url,
            config.upstream.auth,
        )
        assert CHAIN_KEY.encode() == config.chain_secret
        for user in config.users:
            parse_hash(user.password_hash)

    def test_gateway_runs_serve_on_the_mounted_config(self) -> None:
        gateway = container("gateway")
        assert gateway["image"].startswith("ghcr.io/example/apigee-audit-gateway:")
        assert ["serve", "--config", "/etc/gateway/config.toml"] == gateway["args"]
        volume = mount_of(gateway, PurePosixPath("/etc/gateway"))
        assert manifest()["ConfigMap"]["metadata"]["name"] == volume["configMap"]["name"]

    def test_gateway_is_a_native_sidecar(self) -> None:
        """An init container that keeps running: up before the application, stopped after it."""
        assert ["gateway"] == [c["name"] for c in pod_spec()["initContainers"]]
        assert "Always" == container("gateway")["restartPolicy"]

    def test_application_calls_the_gateway_on_loopback(self) -> None:
        env = {e["name"]: e.get("value") for e in container("app")["env"]}
        assert f"http://127.0.0.1:{sidecar_config().server.port}" == env["APIGEE_BASE_URL"]

    def test_probes_reach_health_endpoints_on_the_gateway_port(self) -> None:
        """The kubelet probes the pod's IP, so the gateway must listen beyond loopback."""
        gateway, config = container("gateway"), sidecar_config()
        probes = {
            kind: (gateway[kind]["httpGet"]["path"], gateway[kind]["httpGet"]["port"])
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert {
            "startupProbe": ("/healthz", 8080),
            "livenessProbe": ("/healthz", 8080),
            "readinessProbe": ("/readyz", 8080),
        } == probes
        assert (8080, "0.0.0.0") == (config.server.port, config.server.host)

    def test_probed_and_scraped_paths_are_routes_of_the_gateway(self) -> None:
        """Built from the ConfigMap's config, the gateway answers GET on every path the pod spec names."""
        gateway = container("gateway")
        paths = {gateway[kind]["httpGet"]["path"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        paths.add(manifest()["Deployment"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
        routes = {
            route.resource.canonical
            for route in build_app(sidecar_config()).router.routes()
            if route.method == "GET" and route.resource is not None
        }
        assert {"/healthz", "/readyz", "/metrics"} == paths <= routes

    def test_prometheus_scrapes_metrics_on_the_gateway_port(self) -> None:
        annotations = manifest()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        expected = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
        assert expected == {key: annotations.get(key) for key in expected}

    def test_chain_key_comes_from_a_secret(self) -> None:
        env = {e["name"]: e for e in container("gateway")["env"]}
        reference = env[sidecar_config().audit.chain_key_env]["valueFrom"]["secretKeyRef"]
        assert reference["name"] and reference["key"]

    def test_database_is_on_the_persistent_volume_claim(self) -> None:
        config, claim = sidecar_config(), manifest()["PersistentVolumeClaim"]
        volume = mount_of(container("gateway"), PurePosixPath(config.database_path.parent))
        assert claim["metadata"]["name"] == volume["persistentVolumeClaim"]["claimName"]
        assert ["ReadWriteOnce"] == claim["spec"]["accessModes"]
        assert 0 < config.audit.max_size_mb < mebibytes(claim["spec"]["resources"]["requests"]["storage"])

    def test_no_service_links_in_the_environment(self) -> None:
        """Kubernetes' <SERVICE>_PORT variables could otherwise read as GATEWAY_SECTION_KEY overrides."""
        assert False is pod_spec()["enableServiceLinks"]

    def test_one_pod_replaced_by_recreate(self) -> None:
        """One SQLite file on a ReadWriteOnce volume: never two pods at once."""
        spec = manifest()["Deployment"]["spec"]
        assert (1, "Recreate") == (spec["replicas"], spec["strategy"]["type"])

    def test_grace_period_outlasts_the_drain(self) -> None:
        assert pod_spec()["terminationGracePeriodSeconds"] > drain_seconds(sidecar_config()) >= 60

    @pytest.mark.parametrize("name", ["gateway", "app"])
    def test_containers_are_locked_down(self, name: str) -> None:
        pod = pod_spec()["securityContext"]
        context = container(name)["securityContext"]
        assert (True, True, False) == (
            context.get("runAsNonRoot", pod.get("runAsNonRoot")),
            context["readOnlyRootFilesystem"],
            context["allowPrivilegeEscalation"],
        )
        assert ["ALL"] == context["capabilities"]["drop"]

    def test_gateway_has_resource_requests_and_limits(self) -> None:
        resources = container("gateway")["resources"]
        assert {"cpu", "memory"} == set(resources["requests"]) == set(resources["limits"])

    def test_network_policy_selects_the_pod_and_opens_only_the_gateway_port(self) -> None:
        documents = manifest()
        policy = documents["NetworkPolicy"]["spec"]
        labels = documents["Deployment"]["spec"]["template"]["metadata"]["labels"]
        assert policy["podSelector"]["matchLabels"].items() <= labels.items()
        assert [[8080]] == [[port["port"] for port in rule["ports"]] for rule in policy["ingress"]]

    def test_passes_the_kubernetes_schemas(self) -> None:
        """Strict schema check (unknown fields are errors) against Kubernetes 1.29, the first with native sidecars on."""
        for document in manifest().values():
            kubernetes_validate.validate(document, "1.29.0", strict=True)


# docs/deployment.md ---------------------------------------------------------------------------


def test_the_deployment_page_links_every_example_and_installs_where_the_unit_expects() -> None:
    """Each file in deploy/ is linked from docs/deployment.md, and the install commands put the
    gateway, its config and its key file where the unit looks for them."""
    page = read(ROOT / "docs" / "deployment.md")
    linked = {link.target for link in page.links}
    for path in sorted(DEPLOY.iterdir()):
        assert f"../deploy/{path.name}" in linked, path.name
    _, blocks = page.in_section("On a host, with systemd")
    install = next(block.text for block in blocks if block.info == "sh")
    service = unit(UNIT)["Service"]
    for expected in (
        INSTALLED_CONFIG,
        INSTALLED_GATEWAY,
        service["EnvironmentFile"],
        f"{host_config().audit.chain_key_env}=",
    ):
        assert expected in install, expected
