"""deploy/k8s validates offline: the kustomization renders (its resources, namespace, labels and images applied
here as kustomize does), every built-in object validates strictly against the Kubernetes OpenAPI schemas bundled
in ``kubernetes-validate``, KEDA's objects against tests/k8s_schemas/keda.json, and the pieces fit together
(selectors, Secret keys, settings names, worker queues, the KEDA lists RQ really uses)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from erasepro_jobs.metrics import rq_queue_key
from erasepro_jobs.settings import HEAVY_QUEUE, Settings

kv = pytest.importorskip("kubernetes_validate", reason="the dev extra installs kubernetes-validate")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass"}


def render() -> list[dict[str, Any]]:
    """What ``kustomize build deploy/k8s`` gives for the features its kustomization uses."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert set(kust) <= {"apiVersion", "kind", "namespace", "labels", "resources", "images"}, set(kust)
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i.get('newTag', 'latest')}" for i in kust.get("images", [])}
    labels = {k: v for entry in kust.get("labels", []) for k, v in entry["pairs"].items()}
    out = []
    for name in kust["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
            if not doc:
                continue
            doc = copy.deepcopy(doc)
            meta = doc.setdefault("metadata", {})
            if doc["kind"] not in CLUSTER_SCOPED:
                meta["namespace"] = kust["namespace"]
            meta.setdefault("labels", {}).update(labels)
            for c in _containers(doc):
                c["image"] = images.get(c["image"], c["image"])
            out.append(doc)
    return out


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_file_is_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present


def test_builtin_objects_validate_strictly(objects: list[dict[str, Any]]) -> None:
    builtin = [o for o in objects if not o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in builtin} >= {"Namespace", "ConfigMap", "StatefulSet", "Service", "Deployment",
                                            "PersistentVolumeClaim"}
    for o in builtin + [next(yaml.safe_load_all((K8S / "secret.example.yaml").read_text(encoding="utf-8")))]:
        kv.validate(o, K8S_VERSION, strict=True)  # raises ValidationError naming the field


def test_a_broken_manifest_is_caught(objects: list[dict[str, Any]]) -> None:
    """The validator is not a no-op: a typo'd field and a wrong type both fail."""
    api = copy.deepcopy(by_kind(objects, "Deployment")["erasepro-api"])
    api["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(api, K8S_VERSION, strict=True)
    api = copy.deepcopy(by_kind(objects, "Deployment")["erasepro-api"])
    api["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kv.ValidationError):
        kv.validate(api, K8S_VERSION, strict=True)
    so = copy.deepcopy(by_kind(objects, "ScaledObject")["erasepro-worker"])
    so["spec"]["triggers"][0]["metadata"]["listname"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        _keda(so)


def _keda(o: dict[str, Any]) -> None:
    schemas = json.loads((ROOT / "tests" / "k8s_schemas" / "keda.json").read_text(encoding="utf-8"))
    jsonschema.validate(o, {**schemas[o["kind"]], "definitions": schemas["definitions"]})


def test_keda_objects_validate(objects: list[dict[str, Any]]) -> None:
    keda = [o for o in objects if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in keda} == {"ScaledObject", "TriggerAuthentication"}
    for o in keda:
        _keda(o)


def test_keda_scales_the_gpu_worker_on_the_rq_queues(objects: list[dict[str, Any]]) -> None:
    so = by_kind(objects, "ScaledObject")["erasepro-worker"]
    target = by_kind(objects, "Deployment")[so["spec"]["scaleTargetRef"]["name"]]
    (worker,) = _containers(target)
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    from worker.main import build_parser

    args = build_parser().parse_args(worker["args"][2:])  # after "erasepro worker"
    served = set(args.queues) | ({HEAVY_QUEUE} if args.heavy_lane else set())  # the heavy lane's process
    lists = {t["metadata"]["listName"] for t in so["spec"]["triggers"] if t["type"] == "redis"}
    assert lists == {rq_queue_key(q) for q in served}
    auth = by_kind(objects, "TriggerAuthentication")
    redis_svc = by_kind(objects, "Service")["redis"]
    for t in so["spec"]["triggers"]:
        assert t["authenticationRef"]["name"] in auth
        host = t["metadata"]["address"].split(":")[0]
        assert host == f"redis.{redis_svc['metadata']['namespace']}.svc.cluster.local"
    assert so["spec"]["minReplicaCount"] == 0  # idle GPUs cost money: the webhook worker keeps the reaper alive
    assert "webhooks" in build_parser().parse_args(
        _containers(by_kind(objects, "Deployment")["erasepro-webhooks"])[0]["args"][2:]).queues
    assert target["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= Settings().erase_timeout_s


def test_the_pieces_fit(objects: list[dict[str, Any]]) -> None:
    workloads = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}
    for svc in by_kind(objects, "Service").values():
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= w["spec"]["template"]["metadata"]["labels"].items() for w in workloads.values())
    for w in workloads.values():
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
    secret = next(yaml.safe_load_all((K8S / "secret.example.yaml").read_text(encoding="utf-8")))
    configmaps = by_kind(objects, "ConfigMap")
    known_env = {f"ERASEPRO_{n.upper()}" for n in Settings.model_fields} | {"REDIS_URL", "ERASEPRO_API_KEYS",
                                                                           "ERASEPRO_ADMIN_KEYS",
                                                                           "ERASEPRO_BASE_MODELS",
                                                                           "ERASEPRO_BUNDLED"}
    names = [k for cm in configmaps.values() for k in cm["data"] if k.startswith("ERASEPRO_")]
    for w in workloads.values():
        for c in _containers(w):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], ref
                names.append(e["name"])
            for src in c.get("envFrom", []):
                assert src["configMapRef"]["name"] in configmaps
    unknown = {n for n in names if n.startswith("ERASEPRO_")} - known_env
    assert not unknown, f"settings that erasepro_jobs.settings does not read: {unknown}"
    for ta in by_kind(objects, "TriggerAuthentication").values():
        for ref in ta["spec"]["secretTargetRef"]:
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    # the API's readiness must not depend on a worker (KEDA scales the GPU workers to zero)
    (api,) = _containers(by_kind(objects, "Deployment")["erasepro-api"])
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz"
