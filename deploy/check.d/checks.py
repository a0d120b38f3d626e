"""The Python half of deploy/check: checks that need the worker's own code or the CRD
models. Run by deploy/check inside its tool venv, with the repository on PYTHONPATH:

    checks.py prometheusrule RENDERED.yaml...
    checks.py helm-schema (--check | --write)
    checks.py crds RENDERED.yaml...
    checks.py metrics
    checks.py dashboard-rules OUT.yaml
    checks.py settings RENDERED.yaml...
    checks.py compose
    checks.py consistency RENDERED.yaml...

RENDERED.yaml: the chart (deploy/helm/ocitag-worker) rendered by `helm template` with
one of its ci/ values files.

Each prints what it checked and exits non-zero on the first kind of failure it finds.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "ocitag-worker"
ALERTS = CHART / "files" / "alerts.yaml"
SCHEMA = CHART / "values.schema.json"
CHART_VALUES = CHART / "values.yaml"
DASHBOARD = DEPLOY / "grafana" / "ocitag-worker-dashboard.json"
COMPOSE = DEPLOY / "compose.yaml"

# Metrics the dashboard and alerts may use that the worker does not expose itself.
EXTERNAL_METRICS = {
    "up": "Prometheus, per scrape target",
    "prober_probe_total": "kubelet /metrics/probes",
    # the reconcile CronJob's runs are too short to scrape: its Job status tells instead
    "kube_cronjob_status_last_successful_time": "kube-state-metrics",
    "kube_cronjob_created": "kube-state-metrics",
}
# Labels a Prometheus Operator scrape adds to every series of a target.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
EXTERNAL_LABELS = {"probe_type", "result", "pod_uid", "cronjob"}
# Grafana's variables: ours (templating) are checked separately.
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"  FAIL {message}")


def ok(message: str) -> None:
    print(f"  ok   {message}")


def finish() -> None:
    if failures:
        print(f"{len(failures)} problem(s)")
        sys.exit(1)


def load_yaml_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


# ---------------------------------------------------------------- PrometheusRule <-> alerts


def cmd_prometheusrule(*rendered: str) -> None:
    """The chart renders files/alerts.yaml's groups into its PrometheusRule: each
    rendering that has one holds exactly those groups (the template's round trip through
    fromYaml/toYaml loses nothing), and at least one rendering has one."""
    print("PrometheusRule vs files/alerts.yaml")
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    names = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    seen = 0
    for path in rendered:
        for doc in load_yaml_all(Path(path)):
            if doc["kind"] != "PrometheusRule":
                continue
            seen += 1
            if doc["spec"]["groups"] != groups:
                fail(f"{Path(path).name}: PrometheusRule groups differ from {ALERTS.name}")
            else:
                ok(f"{Path(path).name}: spec.groups == alerts.yaml groups ({len(names)} alerts)")
    if not seen:
        fail("no rendering has the PrometheusRule (prometheusRule.enabled in none of ci/)")
    finish()


# ---------------------------------------------------------------- values schema <-> settings


def config_properties() -> dict[str, Any]:
    """The schema of values `config`: every setting of worker/settings.py by its
    environment variable, a string (a ConfigMap's values are), except the secrets
    (they go under `secrets`, mounted as files) but for DATABASE_URL without its
    password."""
    from worker.settings import SECRET_FIELDS, Settings, env_name
    from worker.settings import SDK_VARIABLES

    props = {
        env_name(name): {"type": "string", "description": field.description or ""}
        for name, field in Settings.FIELDS.items()
        if name not in SECRET_FIELDS or name == "database_url"
    }
    # the tracing SDK's own variables, passed through to it (docs/tracing.md)
    props |= {name: {"type": "string", "description": d} for name, d in SDK_VARIABLES.items()}
    return dict(sorted(props.items()))


def cmd_helm_schema(mode: str) -> None:
    print("values.schema.json: config is the settings of worker/settings.py, kinds its kinds")
    from worker.settings import INGEST_KINDS

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    config = schema["properties"]["config"]
    want = config_properties()
    kinds = schema["properties"]["secrets"]["properties"]["ingestKinds"]["properties"]["kinds"]
    if mode == "--write":
        config["properties"] = want
        kinds["items"]["enum"] = list(INGEST_KINDS)
        SCHEMA.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        ok(f"wrote {len(want)} settings into {SCHEMA.relative_to(ROOT)}")
        return
    have = config.get("properties", {})
    for name in sorted(set(want) - set(have)):
        fail(f"setting {name} is not in the schema's config: run deploy/check --write-helm-schema")
    for name in sorted(set(have) - set(want)):
        fail(f"config.{name} in the schema is no setting: run deploy/check --write-helm-schema")
    if not failures and have != want:
        fail("the schema's config descriptions differ: run deploy/check --write-helm-schema")
    if kinds["items"]["enum"] != list(INGEST_KINDS):
        fail(
            "secrets.ingestKinds.kinds are not worker.settings.INGEST_KINDS: "
            "run deploy/check --write-helm-schema"
        )
    if config.get("additionalProperties") is not False:
        fail("the schema's config accepts unknown names")
    defaults = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))["config"]
    for name in sorted(set(want) - set(defaults) - NOT_IN_CONFIGMAP):
        print(f"  WARN setting {name} has no default in the chart's values.yaml config")
    _strict_objects(schema, "values.schema.json")
    if not failures:
        ok(f"{len(want)} settings, no secret among them; every fixed-key object is strict")
    finish()


def _strict_objects(node: Any, where: str) -> None:
    """Every object schema with fixed keys refuses others (additionalProperties false)."""
    if isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            fail(f"{where}: an object with properties accepts unknown keys")
        for key, value in node.items():
            _strict_objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _strict_objects(value, f"{where}[{i}]")


# ---------------------------------------------------------------- CRD-based kinds


def _crd_models() -> dict[tuple[str, str], Any]:
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    return {
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
    }


def _dropped(given: Any, kept: Any, path: str = "") -> Iterator[str]:
    """Paths present in ``given`` but not in ``kept`` (fields the schema does not know)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in kept:
                yield where
            else:
                yield from _dropped(value, kept[key], where)
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept, strict=False)):
            yield from _dropped(a, b, f"{path}[{i}]")
    elif given != kept:
        yield f"{path} (value {given!r} became {kept!r})"


def cmd_crds(*rendered: str) -> None:
    """Validate the custom resources against models generated from the CRDs' OpenAPI
    schemas (cloudcoil-models-keda, cloudcoil-models-prometheus-operator): types,
    enums, patterns, required fields, and, strictly, no field the CRD does not define."""
    import pydantic

    print("custom resources against their CRD schemas")
    models = _crd_models()
    seen: set[tuple[str, str]] = set()
    for doc in (d for path in rendered for d in load_yaml_all(Path(path))):
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in models:
            continue
        seen.add(key)
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            model = models[key].model_validate(doc)
        except pydantic.ValidationError as exc:
            fail(f"{name}: {exc}")
            continue
        kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        unknown = list(_dropped(doc, kept))
        if unknown:
            fail(f"{name}: not in the CRD schema: {', '.join(unknown)}")
        else:
            ok(f"{name} ({key[0]})")
    if seen != set(models):
        missing = ", ".join(kind for _, kind in sorted(set(models) - seen))
        fail(f"custom resources of every checked kind expected; missing: {missing}")
    finish()


# ---------------------------------------------------------------- operators' resources

OPERATORS = DEPLOY / "operators"


def _refusing_unknown(node: Any) -> Any:
    """A copy of a CRD's structural schema in which every object with fixed properties
    refuses other keys (the API server would prune them silently), except where the CRD
    keeps unknown fields on purpose (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(node, list):
        return [_refusing_unknown(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {key: _refusing_unknown(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def cmd_operators() -> None:
    """The example manifests of deploy/operators (Strimzi, CloudNativePG) against the vendored
    openAPIV3Schema of their CRDs (deploy/operators/schemas, PROVENANCE.json says from
    where): types, enums, required fields, and, strictly, no field the CRD does not
    define. A manifest of a kind without a vendored schema fails."""
    import jsonschema

    print("operators' custom resources against their vendored CRD schemas")
    schemas = OPERATORS / "schemas"
    validators = {}
    for entry in json.loads((schemas / "PROVENANCE.json").read_text()):
        schema = _refusing_unknown(json.loads((schemas / entry["file"]).read_text()))
        validators[(entry["apiVersion"], entry["kind"])] = jsonschema.Draft7Validator(schema)
    manifests = sorted(
        path for path in OPERATORS.rglob("*.yaml") if not path.name.endswith("-values.yaml")
    )
    if not manifests:
        fail("no manifest under deploy/operators")
    for path in manifests:
        for doc in load_yaml_all(path):
            key = (doc.get("apiVersion"), doc.get("kind"))
            name = f"{path.relative_to(DEPLOY)}: {key[1]}/{doc.get('metadata', {}).get('name')}"
            if key not in validators:
                fail(f"{name}: no vendored schema for {key[0]} {key[1]}")
                continue
            errors = sorted(validators[key].iter_errors(doc), key=lambda e: list(e.path))
            for error in errors:
                where = "/".join(str(p) for p in error.absolute_path) or "(top)"
                fail(f"{name}: {where}: {error.message[:300]}")
            if not errors:
                ok(f"{name} ({key[0]})")
    finish()


# ---------------------------------------------------------------- metric names


def exposed_metrics() -> dict[str, set[str]]:
    """Sample names the worker's commands expose (with prometheus-client's suffixes),
    mapped to their label names, as their /metrics would show them."""
    import prometheus_client

    import worker.metrics as m

    # Labelled metrics show no sample until a label set is used: touch one of each.
    for value in vars(m).values():
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase) and value._labelnames:
            value.labels(*["x"] * len(value._labelnames))
    names: dict[str, set[str]] = {}
    for family in (f for command in m.COMMANDS for f in m.registry(command).collect()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_LABEL_LIST = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w.$:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w(])(?!\s*\()")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "atan2", "start", "end",
}  # fmt: skip


def promql_parts(expr: str) -> tuple[set[str], set[str], list[tuple[str, set[str]]]]:
    """(metric names, labels in by/on/... lists, [(metric, matcher labels)]) of an expr.
    A lexical scan, enough for the expressions here: promtool checks the syntax."""
    expr = re.sub(r"#[^\n]*", "", expr)
    selectors = []
    for metric, body in _SELECTOR.findall(_QUOTED.sub('""', expr)):
        # the label name before its matcher: =, !=, =~ or !~
        matchers = [m for m in body.split(",") if m.strip()]
        labels = {re.split(r"=~|!~|!=|=", m, maxsplit=1)[0].strip() for m in matchers}
        selectors.append((metric, labels))
    stripped = _QUOTED.sub('""', expr)
    grouping: set[str] = set()
    for _, inner in _LABEL_LIST.findall(stripped):
        grouping.update(x.strip() for x in inner.split(",") if x.strip())
    stripped = _LABEL_LIST.sub(" ", stripped)
    stripped = re.sub(r"\{[^}]*\}", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    stripped = re.sub(r"\$\{?\w+\}?", " ", stripped)
    names = {
        n for n in _IDENT.findall(stripped) if n.lower() not in _KEYWORDS and not n[0].isdigit()
    }
    return names, grouping, selectors


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for panel in _panels(board):
        for target in panel.get("targets", []):
            if "expr" in target:
                out.append((f"panel {panel['id']} {panel.get('title')!r}", target["expr"]))
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            text = query.get("query", "") if isinstance(query, dict) else query or ""
            inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
            if inner:
                out.append((f"variable {var['name']}", inner.group(1)))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [
        (f"alert {r.get('alert') or r.get('record')}", r["expr"])
        for g in groups
        for r in g["rules"]
    ]


def cmd_metrics() -> None:
    print("metric and label names in the dashboard and alerts vs worker/metrics.py")
    exposed = exposed_metrics()
    ocitag = sorted(n for n in exposed if n.startswith("ocitag_"))
    print(f"  the worker exposes {len(exposed)} sample names ({len(ocitag)} ocitag_*)")
    known_labels = set().union(*exposed.values()) | TARGET_LABELS | EXTERNAL_LABELS
    used: set[str] = set()
    for source, expr in dashboard_exprs() + alert_exprs():
        names, grouping, selectors = promql_parts(expr)
        for name in sorted(names):
            if name not in exposed and name not in EXTERNAL_METRICS:
                fail(f"{source}: metric {name} is not exposed by the worker")
        for label in sorted(grouping - known_labels - {"le"}):
            fail(f"{source}: label {label} is on no metric of the worker")
        for metric, labels in selectors:
            if metric in exposed:
                allowed = exposed[metric] | TARGET_LABELS | {"__name__"}
                for label in sorted(labels - allowed):
                    fail(f"{source}: {metric} has no label {label}")
        used |= names
    for name in sorted(used):
        origin = EXTERNAL_METRICS.get(name, "worker")
        print(f"  ok   {name} ({origin})")
    families = {re.sub(r"_(total|created|bucket|sum|count)$", "", n) for n in ocitag}
    board_names: set[str] = set()
    for _, expr in dashboard_exprs():
        board_names |= {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in promql_parts(expr)[0]}
    for family in sorted(families - board_names):
        print(f"  WARN {family} is exposed but on no dashboard panel")
    finish()


# ---------------------------------------------------------------- dashboard


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def cmd_dashboard_rules(out: str) -> None:
    """Structural checks of the dashboard, and its queries written out as recording
    rules (Grafana variables replaced) for `promtool check rules` to parse."""
    print("Grafana dashboard structure")
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    if not isinstance(board.get("schemaVersion"), int) or board["schemaVersion"] < 36:
        fail("schemaVersion missing or older than 36")
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        fail("no datasource template variable")
    for name in ("job", "namespace"):
        if name not in variables:
            fail(f"no {name} template variable")
    ids: set[int] = set()
    cells: dict[tuple[int, int], int] = {}
    records = []
    for panel in _panels(board):
        pid = panel.get("id")
        if pid in ids:
            fail(f"panel id {pid} used twice")
        ids.add(pid)
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            fail(f"panel {pid} is wider than the 24-column grid")
        if panel.get("type") != "row":
            for dx in range(grid.get("w", 0)):
                for dy in range(grid.get("h", 0)):
                    cell = (grid["x"] + dx, grid["y"] + dy)
                    if cell in cells:
                        fail(f"panel {pid} overlaps panel {cells[cell]}")
                        break
                    cells[cell] = pid
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"panel {pid} does not use the ${{datasource}} variable")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if not refs or len(refs) != len(set(refs)):
            fail(f"panel {pid}: no targets, or refIds not unique")
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            for var in set(re.findall(r"\$\{?(\w+)", expr)):
                if var not in variables and var not in GRAFANA_BUILTINS:
                    fail(f"panel {pid}: unknown variable ${var}")
            concrete = expr
            for var in ("__rate_interval", "__interval", "__range"):
                concrete = re.sub(r"\$\{?" + var + r"\}?", "5m", concrete)
            concrete = re.sub(r"\$\{?(\w+)(:\w+)?\}?", ".+", concrete)
            records.append(
                {"record": f"dashboard:panel_{pid}:{target.get('refId', 'A').lower()}",
                 "expr": concrete}
            )  # fmt: skip
    Path(out).write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}, sort_keys=False),
        encoding="utf-8",
    )
    ok(f"{len(ids)} panels, unique ids, inside the grid, no overlaps, ${{datasource}} everywhere")
    ok(f"variables: {', '.join(variables)}; {len(records)} queries written for promtool")
    finish()


# ---------------------------------------------------------------- settings


# Mounted files whose content has a syntax: their stand-ins (for Secrets the rendering
# does not hold) must be valid.
STUB_CONTENT = {
    "OCITAG_REGISTRY_ENDPOINTS_FILE": "registry.example=https://user:stand-in@registry.example\n",
    "OCITAG_REGISTRY_DOCKER_CONFIG": '{"auths": {}}\n',
    "OCITAG_API_GRANTS_FILE": '{"ci": [{"actions": ["read"], "tags": ["**"]}]}\n',
    "OCITAG_INGEST_RECEIVERS_FILE": '[{"name": "prod", "kind": "distribution", '
    '"secret": "Bearer stand-in", "hosts": ["registry.example"]}]\n',
}
MOUNTED = "/var/run/secrets/"


def _secret_stub_environ(
    extra: dict[str, str], files: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment as the pod sees it, each mounted file (a path under
    /var/run/secrets/) replaced by a local file: with its content when the rendering
    holds it (``files``: path -> content), else a stand-in."""
    environ = dict(extra)
    stub_dir = Path(tempfile.mkdtemp(prefix="ocitag-check-"))
    for name, value in list(environ.items()):
        if name.endswith("_FILE") or name in STUB_CONTENT or value.startswith(MOUNTED):
            stub = stub_dir / Path(value).name
            content = (files or {}).get(value)
            if content is None:
                content = STUB_CONTENT.get(name, "stand-in-secret\n")
            stub.write_text(content, encoding="utf-8")
            environ[name] = str(stub)
    return environ


def _known_env_names() -> set[str]:
    import worker.settings as s

    plain = {s.env_name(f) for f in s.Settings.FIELDS}
    # the settings read from a file too: the secrets, the grants and the receivers
    files = s.FILE_FIELDS
    from worker.settings import SDK_VARIABLES

    return plain | {s.env_name(f) + "_FILE" for f in files} | set(SDK_VARIABLES)


def _check_env_names(where: str, names: set[str]) -> None:
    known = _known_env_names()
    for name in sorted(names - known):
        fail(f"{where}: {name} is not a setting of the worker (worker/settings.py)")


def _load(where: str, environ: dict[str, str]) -> Any:
    from worker.errors import SettingsError
    from worker.settings import load_settings

    try:
        settings = load_settings(environ=environ)
    except SettingsError as exc:
        fail(f"{where}: the worker would refuse these settings: {exc}")
        return None
    ok(f"{where}: {len(environ)} variables accepted by worker.settings.load_settings")
    return settings


def _pod_template(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]  # type: ignore[no-any-return]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return _pod_template(doc)["spec"]  # type: ignore[no-any-return]


def _containers(rendered: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for doc in load_yaml_all(Path(rendered)):
        if doc["kind"] in {"Deployment", "Job", "CronJob"}:
            for container in _pod_spec(doc)["containers"]:
                yield f"{doc['kind']}/{doc['metadata']['name']}", doc, container


def pod_environ(rendered: str, container: dict[str, Any]) -> dict[str, str]:
    configmaps = {
        d["metadata"]["name"]: d.get("data", {})
        for d in load_yaml_all(Path(rendered))
        if d["kind"] == "ConfigMap"
    }
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        if ref:
            environ.update(configmaps[ref])
    for var in container.get("env", []):
        if "value" in var:
            environ[var["name"]] = var["value"]
    return environ


def pod_files(
    rendered: str, doc: dict[str, Any], container: dict[str, Any]
) -> dict[str, str | None]:
    """The files the container sees from Secrets: mounted path -> content (decoded from
    the rendering's Secret), or None for a Secret the rendering does not hold (an
    existing one)."""
    secrets = {
        d["metadata"]["name"]: d.get("data", {})
        for d in load_yaml_all(Path(rendered))
        if d["kind"] == "Secret"
    }
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    files: dict[str, str | None] = {}
    for volume in _pod_spec(doc).get("volumes", []):
        if volume["name"] not in mounts:
            continue
        sources = [
            s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s
        ]
        if "secret" in volume:
            sources.append({"name": volume["secret"]["secretName"], **volume["secret"]})
        for source in sources:
            for item in source.get("items", []):
                data = secrets.get(source["name"], {}).get(item["key"])
                content = base64.b64decode(data).decode() if data is not None else None
                files[f"{mounts[volume['name']]}/{item['path']}"] = content
    return files


# Settings the chart's values.yaml config has no default for, on purpose: listen on every
# address by default; files the pods get from `secrets` (OCITAG_KAFKA_SSL_CAFILE) or that
# need a mounted file; off unless needed (GAR's Pub/Sub OIDC); the registry's own page size.
NOT_IN_CONFIGMAP = {
    "OCITAG_HTTP_HOST",
    "OCITAG_INGEST_HOST",
    "OCITAG_INGEST_GAR_OIDC_AUDIENCE",
    "OCITAG_INGEST_GAR_OIDC_EMAIL",
    "OCITAG_INGEST_GAR_OIDC_JWKS_URL",
    "OCITAG_KAFKA_SSL_CAFILE",
    "OCITAG_KAFKA_SSL_CERTFILE",
    "OCITAG_KAFKA_SSL_KEYFILE",
    "OCITAG_REGISTRY_CA_FILE",
    "OCITAG_REGISTRY_DOCKER_CONFIG",
    "OCITAG_REGISTRY_PAGE_SIZE",
}


def cmd_settings(*rendered: str) -> None:
    print("settings: names and values against worker/settings.py")
    for path in rendered:
        for what, doc, container in _containers(path):
            where = f"{Path(path).stem}: {what}"
            environ = pod_environ(path, container)
            _check_env_names(where, set(environ))
            files = {k: v for k, v in pod_files(path, doc, container).items() if v is not None}
            _load(where, _secret_stub_environ(environ, files))
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("ocitag-worker"):
            environ = {
                k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))
                for k, v in service.get("environment", {}).items()
            }
            _check_env_names(f"compose {name}", set(environ))
            _load(f"compose {name}", environ)
    finish()


# ---------------------------------------------------------------- compose


def cmd_compose() -> None:
    print("compose.yaml references")
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            dockerfile = context / build["dockerfile"]
            if not dockerfile.is_file():
                fail(f"{name}: build dockerfile {dockerfile} does not exist")
            else:
                where = "the repository root" if context == ROOT else context
                ok(f"{name}: builds {dockerfile.relative_to(ROOT)}, context {where}")
        for dep, cond in (service.get("depends_on") or {}).items():
            if dep not in services:
                fail(f"{name}: depends on unknown service {dep}")
            condition = cond.get("condition")
            if condition == "service_healthy" and "healthcheck" not in services[dep]:
                fail(f"{name}: waits for {dep} to be healthy but {dep} has no healthcheck")
        if "restart" not in service:
            fail(f"{name}: no restart policy")
    worker = services["worker"]
    deps = worker.get("depends_on", {})
    if deps.get("migrate", {}).get("condition") != "service_completed_successfully":
        fail("worker does not wait for migrate to complete successfully")
    if services["migrate"].get("command") != ["migrate"]:
        fail("migrate service does not run `ocitag-worker migrate`")
    ok(f"services {', '.join(services)}: dependencies, healthchecks, restart policies")
    finish()


# ---------------------------------------------------------------- cross-file consistency


def _duration_seconds(text: str) -> float:
    return float(text)


# What each probe must ask: /healthz (worker/health.py) for liveness and start-up.
PROBE_PATHS = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}


def _check_probe_targets(where: str, container: dict[str, Any], port: int, http: str) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in PROBE_PATHS.items():
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            fail(f"{where}: no {probe} (httpGet {path})")
            continue
        if ports.get(get["port"], get["port"]) != port:
            fail(f"{where}: {probe} asks port {get['port']}, not OCITAG_HTTP_PORT {port}")
        if get["path"] != path or f'"{path}"' not in http:
            fail(f"{where}: {probe} asks {get['path']}, not {path} (worker/http.py)")


def _check_probes(rendered: str) -> None:
    """Each Deployment runs a command that serves probes (worker.health.COMMAND_PARTS),
    and probes the port and paths that command serves: OCITAG_HTTP_PORT as the pod's
    settings make it, /healthz and /readyz (worker/http.py)."""
    from worker.health import COMMAND_PARTS

    http = (ROOT / "worker" / "http.py").read_text(encoding="utf-8")
    for where, doc, container in _containers(rendered):
        if doc["kind"] != "Deployment":
            continue
        command = container["args"][0]
        parts = COMMAND_PARTS.get(command)
        if parts is None:
            fail(f"{where}: `ocitag-worker {command}` serves no /healthz to probe")
            continue
        settings = _load(where, _secret_stub_environ(pod_environ(rendered, container)))
        if settings is None:
            continue
        if not settings.probes.http_port:
            fail(f"{where}: OCITAG_HTTP_PORT is 0: `{command}` serves no probes")
            continue
        found = len(failures)
        _check_probe_targets(where, container, settings.probes.http_port, http)
        liveness = container.get("livenessProbe", {})
        period = liveness.get("periodSeconds", 10)
        # one slow answer (a busy loop, a GC pause) must not restart a live process:
        # /healthz itself already waits OCITAG_LIVENESS_TIMEOUT_SECONDS
        if liveness.get("failureThreshold", 3) < 2 or liveness.get("timeoutSeconds", 1) >= period:
            fail(f"{where}: livenessProbe restarts on one slow answer")
        if len(failures) > found:
            continue
        restart = settings.probes.liveness_timeout_seconds + period * liveness.get(
            "failureThreshold", 3
        )
        ok(
            f"{where} ({command}): probes on {settings.probes.http_port}; /healthz watches "
            f"{', '.join(parts)}; a stalled part restarts within {restart:g} s"
        )


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _check_deployment(docs: dict[tuple[str, str], Any], name: str, config: dict[str, str]) -> None:
    """One Deployment: its own pods, grace period above the drain, the metrics port."""
    deployment = docs[("Deployment", name)]
    pod = deployment["spec"]["template"]["spec"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    if not _selects(selector, deployment["spec"]["template"]["metadata"]["labels"]):
        fail(f"Deployment {name}: its selector does not select its own pods")
    grace = _duration_seconds(config.get("OCITAG_SHUTDOWN_GRACE_SECONDS", "20"))
    if pod["terminationGracePeriodSeconds"] <= grace:
        fail(f"Deployment {name}: terminationGracePeriodSeconds is not above the drain {grace:g}")
    (container,) = pod["containers"]
    port = int(config.get("OCITAG_HTTP_PORT", "9400"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if ports.get("metrics") != port:
        fail(f"Deployment {name}: container port 'metrics' is not OCITAG_HTTP_PORT {port}")
    extras = _check_service(docs, name, selector, ports, port)
    listed = ", ".join(f"{k} {v}" for k, v in ports.items())
    ok(
        f"{name}: grace {pod['terminationGracePeriodSeconds']} > drain {grace:g}; "
        f"ports {listed} in {', '.join(extras)}"
    )


def _check_service(
    docs: dict[tuple[str, str], Any],
    name: str,
    selector: dict[str, str],
    ports: dict[str, int],
    port: int,
) -> list[str]:
    """The Deployment's Service (named as it: the job label the alerts select on), PDB
    and ServiceMonitor select its pods and ports; returns the kinds present."""
    service = docs.get(("Service", name))
    if service is None:
        fail(f"Deployment {name} has no Service {name} (the job label the alerts select on)")
        return []
    if service["spec"]["selector"] != selector:
        fail(f"Service {name} does not select the Deployment's pods")
    for sp in service["spec"]["ports"]:
        if sp["targetPort"] not in ports:
            fail(f"Service {name} port {sp['name']} targets {sp['targetPort']}: no such port")
    if {sp["name"]: sp["port"] for sp in service["spec"]["ports"]}.get("metrics") != port:
        fail(f"Service {name} does not expose 'metrics' on OCITAG_HTTP_PORT {port}")
    pdb = docs.get(("PodDisruptionBudget", name))
    if pdb is not None and pdb["spec"]["selector"]["matchLabels"] != selector:
        fail(f"PodDisruptionBudget {name} does not select the Deployment's pods")
    monitor = docs.get(("ServiceMonitor", name))
    if monitor is not None and not _selects(
        monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
    ):
        fail(f"ServiceMonitor {name} does not select the Service {name}")
    return ["Service"] + [k for k in ("PodDisruptionBudget", "ServiceMonitor") if (k, name) in docs]


def _check_keda(docs: dict[tuple[str, str], Any], config: dict[str, str]) -> None:
    scaled = docs[("ScaledObject", "ocitag-worker")]["spec"]
    deployment = docs[("Deployment", "ocitag-worker")]
    if "replicas" in deployment["spec"]:
        fail("Deployment ocitag-worker sets replicas while KEDA's HPA owns them")
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    want = {
        "bootstrapServers": config["KAFKA_BOOTSTRAP_SERVERS"],
        "consumerGroup": config["OCITAG_GROUP_ID"],
        "topic": config["OCITAG_INPUT_TOPIC"],
    }
    for key, value in want.items():
        if meta.get(key) != value:
            fail(f"ScaledObject trigger {key} {meta.get(key)!r} != config {value!r}")
    if scaled["maxReplicaCount"] > int(config["OCITAG_TOPIC_PARTITIONS"]):
        fail("ScaledObject maxReplicaCount above OCITAG_TOPIC_PARTITIONS: idle consumers")
    if scaled["scaleTargetRef"]["name"] != "ocitag-worker":
        fail("ScaledObject does not target the Deployment")
    protocol = config["OCITAG_KAFKA_SECURITY_PROTOCOL"]
    sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
    want_sasl = sasl[config["OCITAG_KAFKA_SASL_MECHANISM"]] if "SASL" in protocol else None
    want_tls = "enable" if protocol in {"SSL", "SASL_SSL"} else None
    if meta.get("sasl") != want_sasl or meta.get("tls") != want_tls:
        fail(f"ScaledObject sasl/tls do not match {protocol}")
    if "authenticationRef" in trigger:
        auth = docs[("TriggerAuthentication", trigger["authenticationRef"]["name"])]["spec"]
        _check_trigger_auth(auth, deployment["spec"]["template"]["spec"], config)
    ok("ScaledObject: brokers, group, topic, sasl/tls from the settings; max <= partitions")


def _check_trigger_auth(auth: dict[str, Any], pod: dict[str, Any], config: dict[str, str]) -> None:
    """KEDA reads the password and CA from the very Secret keys the worker mounts, and
    the SASL user from the worker container's settings."""
    mounted = {
        (s["secret"]["name"], item["key"]): item["path"]
        for v in pod["volumes"]
        for s in v.get("projected", {}).get("sources", [])
        if "secret" in s
        for item in s["secret"].get("items", [])
    }
    files = {
        "password": "kafka-sasl-password",
        "ca": "kafka-ca.crt",
        "cert": "kafka-client.crt",
        "key": "kafka-client.key",
        "keyPassword": "kafka-key-password",
    }
    for ref in auth.get("secretTargetRef", []):
        want = files.get(ref["parameter"])
        if mounted.get((ref["name"], ref["key"])) != want:
            fail(f"TriggerAuthentication {ref['parameter']} is not the worker's {want}")
    for ref in auth.get("env", []):
        if ref["name"] not in config or ref.get("containerName") != "worker":
            fail(f"TriggerAuthentication env {ref['name']} is not in the worker's config")


def _check_mounted_files(path: str) -> None:
    """Every variable pointing into /var/run/secrets/ names a file the pod mounts, and a
    Secret the chart renders holds every key a pod reads from it."""
    rendered = {d["metadata"]["name"] for d in load_yaml_all(Path(path)) if d["kind"] == "Secret"}
    count = 0
    for where, doc, container in _containers(path):
        files = pod_files(path, doc, container)
        for name, value in pod_environ(path, container).items():
            if value.startswith(MOUNTED):
                count += 1
                if value not in files:
                    fail(f"{where}: {name}={value} is no file of the pod's Secret volumes")
        for volume in _pod_spec(doc).get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                secret = source.get("secret", {})
                if secret.get("name") in rendered:
                    for item in secret["items"]:
                        if files.get(f"/var/run/secrets/ocitag/{item['path']}") is None:
                            fail(f"{where}: Secret {secret['name']} has no key {item['key']}")
    ok(f"{count} *_FILE variables name files the pods mount; created Secrets hold their keys")


def cmd_consistency(*rendered: str) -> None:
    print("cross-file consistency")
    for path in rendered:
        print(f"-- {Path(path).name}")
        docs = {(d["kind"], d["metadata"]["name"]): d for d in load_yaml_all(Path(path))}
        config = docs[("ConfigMap", "ocitag-worker")]["data"]
        deployments = [name for kind, name in docs if kind == "Deployment"]
        for name in deployments:
            _check_deployment(docs, name, config)
        _check_probes(path)
        selectors = [
            docs[("Deployment", n)]["spec"]["selector"]["matchLabels"] for n in deployments
        ]
        for what, doc, _ in _containers(path):
            if doc["kind"] in {"Job", "CronJob"}:
                labels = _pod_template(doc)["metadata"]["labels"]
                if any(_selects(s, labels) for s in selectors):
                    fail(f"{what}'s pods match a Deployment's selector")
        ok("the Jobs' pods match no Deployment's selector")
        if ("ScaledObject", "ocitag-worker") in docs:
            _check_keda(docs, config)
        _check_mounted_files(path)
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    if "/healthz" not in dockerfile or "EXPOSE 9400" not in dockerfile:
        fail("Dockerfile HEALTHCHECK/EXPOSE do not match /healthz on 9400")
    if not re.search(r"python:3\.11\.\d+-slim-bookworm", dockerfile):
        fail("Dockerfile base is not an exact python:3.11.x-slim-bookworm tag")
    ok("Dockerfile: exact base tag, EXPOSE 9400, HEALTHCHECK /healthz")
    finish()


def main() -> None:
    command, *args = sys.argv[1:]
    os.chdir(ROOT)
    commands = {
        "prometheusrule": cmd_prometheusrule,
        "helm-schema": cmd_helm_schema,
        "crds": cmd_crds,
        "operators": cmd_operators,
        "metrics": cmd_metrics,
        "dashboard-rules": cmd_dashboard_rules,
        "settings": cmd_settings,
        "compose": cmd_compose,
        "consistency": cmd_consistency,
    }
    commands[command](*args)


if __name__ == "__main__":
    main()
