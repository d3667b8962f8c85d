"""deploy/k8s's Ingresses route the public to the public endpoints and to nothing else.

The web role's port serves operator endpoints beside the public ones (/metrics, the probes,
POST /bank-details, Faust's index): one path too broad would publish them. These checks follow
each routed path to the Service, the pods behind it and their roles, build a worker with
those roles, and hold every route the path reaches to what may be public.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from streams.health import HEALTHZ, READYZ
from streams.settings import Settings
from tests.unit.deploy.test_deploy_files import K8S, _roles, k8s_objects, yaml_docs

#: What customers and PSPs must reach: the webhooks and the payment pages.
PUBLIC = {"/webhooks/{psp}", "/pay/{psp}/{object_id}"}
#: What the opt-in CRM push Ingress reaches (the workers' crm role serves it).
CRM_PUSH = {"/events/crm"}
#: For the cluster only (bearer-token bank details, metrics, probes, Faust's index page).
INTERNAL = {"/bank-details", "/metrics", HEALTHZ, READYZ, "/"}
OPTIONAL = K8S / "optional" / "ingress-crm-push.yaml"
#: Each Ingress by name -> the routes it must reach, all of them and no others.
REACHES = {"paybus-public": PUBLIC, "paybus-crm-push": CRM_PUSH}


def kustomized() -> list[dict[str, Any]]:
    """The objects `kubectl apply -k deploy/k8s` applies."""
    listed = yaml_docs(K8S / "kustomization.yaml")[0]["resources"]
    return [doc for name in listed for doc in yaml_docs(K8S / name)]


def ingresses() -> list[tuple[str, dict[str, Any]]]:
    """(name, Ingress) for the applied Ingresses and the opt-in one."""
    found = [*kustomized(), *yaml_docs(OPTIONAL)]
    return [(o["metadata"]["name"], o) for o in found if o["kind"] == "Ingress"]


def routed(ingress: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, pathType, backend service) of every path of every rule."""
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            yield path["path"], path["pathType"], path["backend"]["service"]


def matches(path: str, path_type: str, route: str) -> bool:
    """Whether a request for ``route`` (an aiohttp template: ``{x}`` is any one segment) can
    match an Ingress path, by Kubernetes' rules: Exact is the whole path, Prefix its leading
    whole segments (so ``/`` is everything). Trailing slashes are ignored: erring towards a
    match is erring towards a failing test."""
    want = [s for s in path.split("/") if s]
    have = [s for s in route.split("/") if s]
    assert path_type in ("Exact", "Prefix"), f"{path}: pathType {path_type} is per controller"
    if len(have) < len(want) or (path_type == "Exact" and len(have) > len(want)):
        return False
    return all(h == w or re.fullmatch(r"\{\w+\}", h) for h, w in zip(have, want, strict=False))


def pods_behind(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates of the Deployments ``service`` selects."""
    selector = service["spec"]["selector"].items()
    return [
        d["spec"]["template"]
        for d in k8s_objects()
        if d["kind"] == "Deployment"
        and selector <= d["spec"]["template"]["metadata"]["labels"].items()
    ]


def service_of(backend: dict[str, Any]) -> dict[str, Any]:
    services = {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "Service"}
    assert backend["name"] in services, f"no Service {backend['name']} in deploy/k8s"
    return services[backend["name"]]


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Roles -> the paths a worker with them serves (built once per set of roles)."""
    from prometheus_client import REGISTRY

    from streams import agents
    from streams.app import build_app

    built: dict[frozenset[str], set[str]] = {}

    def serve(roles: frozenset[str]) -> set[str]:
        if roles not in built:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(REGISTRY, "register", lambda collector: None)  # one per process
                for key in [k for k in os.environ if k.startswith("PAYBUS_")]:
                    patch.delenv(key)  # the shipped defaults, not the developer's shell
                app = build_app(Settings(data_dir=tmp_path_factory.mktemp("routes")))
                agents.attach(app, sorted(roles))
                app.web.blueprints.apply(app.web)  # Faust's own pages, as the server adds them
                router = app.web.web_app.router  # type: ignore[attr-defined]
                built[roles] = {r.resource.canonical for r in router.routes()}
        return built[roles]

    return serve


def roles_behind(service: dict[str, Any]) -> frozenset[str]:
    (pod,) = pods_behind(service)
    (container,) = pod["spec"]["containers"]
    return _roles(list(container["args"]))


# --- tests ------------------------------------------------------------------------------------


def test_the_public_ingress_is_applied_and_crm_push_is_opt_in() -> None:
    listed = yaml_docs(K8S / "kustomization.yaml")[0]["resources"]
    applied = [o["metadata"]["name"] for o in kustomized() if o["kind"] == "Ingress"]
    assert applied == ["paybus-public"]
    assert [o["kind"] for o in yaml_docs(OPTIONAL)] == ["Ingress"]
    assert str(OPTIONAL.relative_to(K8S)) not in listed, "CRM push is for operators who use it"


@pytest.mark.parametrize("name, ingress", ingresses())
def test_every_backend_is_a_service_port_that_exists(name: str, ingress: dict[str, Any]) -> None:
    assert "defaultBackend" not in ingress["spec"], f"{name}: a default backend exposes all"
    paths = list(routed(ingress))
    assert paths, name
    for path, _, backend in paths:
        service = service_of(backend)
        port = backend["port"]
        (target,) = [
            p["targetPort"]
            for p in service["spec"]["ports"]
            if p.get("name") == port.get("name", object()) or p["port"] == port.get("number")
        ]
        pods = pods_behind(service)
        assert pods, f"{name} {path}: Service {backend['name']} selects no Deployment"
        for pod in pods:
            ports = [p for c in pod["spec"]["containers"] for p in c["ports"]]
            assert any(target in (p.get("name"), p["containerPort"]) for p in ports), (name, path)


def test_the_public_ingress_routes_only_webhooks_and_pages() -> None:
    (public,) = [o for o in kustomized() if o["kind"] == "Ingress"]
    paths = {(path, path_type) for path, path_type, _ in routed(public)}
    assert paths == {("/webhooks/", "Prefix"), ("/pay/", "Prefix")}
    for private in ("/", "/metrics", HEALTHZ, READYZ, "/bank-details", "/events/crm", "/table/x"):
        hits = [p for p, t, _ in routed(public) if matches(p, t, private)]
        assert not hits, f"{private} is public through {hits}"


@pytest.mark.parametrize("name, ingress", ingresses())
def test_routed_paths_reach_only_public_routes(
    name: str, ingress: dict[str, Any], routes: Any
) -> None:
    reached: set[str] = set()
    for path, path_type, backend in routed(ingress):
        served = routes(roles_behind(service_of(backend)))
        hits = {route for route in served if matches(path, path_type, route)}
        assert hits, f"{name}: {path} reaches no route of {backend['name']}'s pods"
        assert hits <= REACHES[name], f"{name}: {path} exposes {sorted(hits - REACHES[name])}"
        reached |= hits
    assert reached == REACHES[name], f"{name}: {sorted(REACHES[name] - reached)} not routed"


def test_every_route_the_pods_serve_is_classified(routes: Any) -> None:
    """A new route must be placed: public (and routed) or for the cluster only."""
    for obj in k8s_objects():
        if obj["kind"] == "Deployment":
            (container,) = obj["spec"]["template"]["spec"]["containers"]
            served = routes(_roles(list(container["args"])))
            unknown = served - PUBLIC - CRM_PUSH - INTERNAL
            assert not unknown, f"{obj['metadata']['name']}: decide who may reach {unknown}"


@pytest.mark.parametrize("name, ingress", ingresses())
def test_tls_covers_every_host(name: str, ingress: dict[str, Any]) -> None:
    tls = ingress["spec"]["tls"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts and None not in hosts, f"{name}: a rule without a host answers any name"
    assert hosts <= {h for t in tls for h in t["hosts"]}, name
    assert all(t["secretName"] for t in tls), name


def _page_url_setting(path: Path) -> str:
    """PAYBUS_PAGES__PUBLIC_URL from the ConfigMap, or from its commented-out example."""
    (config,) = [o for o in yaml_docs(path) if o["kind"] == "ConfigMap"]
    if "PAYBUS_PAGES__PUBLIC_URL" in config["data"]:
        return str(config["data"]["PAYBUS_PAGES__PUBLIC_URL"])
    (line,) = re.findall(r"^\s*#\s*(PAYBUS_PAGES__PUBLIC_URL:.*)$", path.read_text(), re.M)
    return str(yaml.safe_load(line)["PAYBUS_PAGES__PUBLIC_URL"])


@pytest.mark.usefixtures("clean_env")
def test_page_links_point_at_the_public_ingress(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.page_links import page_link

    monkeypatch.setenv("PAYBUS_PROFILE", "production")
    monkeypatch.setenv("PAYBUS_PAGES__PUBLIC_URL", _page_url_setting(K8S / "configmap.yaml"))
    base = Settings().page_base_url
    assert base is not None
    link = urlsplit(page_link(base, "s", "stripe", "pi_1", 2_000_000_000))
    assert link.scheme == "https", "the page takes card details: TLS only"
    (public,) = [o for o in kustomized() if o["kind"] == "Ingress"]
    assert link.hostname in {rule["host"] for rule in public["spec"]["rules"]}
    assert any(matches(p, t, link.path) for p, t, _ in routed(public)), link.path
