"""deploy/kubernetes, validated offline: every object against the Kubernetes JSON schemas
(kubernetes-validate ships them, strict: unknown fields fail), the RabbitmqCluster against the
fields of the RabbitMQ Cluster Operator's CRD it uses (kubernetes-validate has no CRD schemas),
and the references between the objects (selectors, ConfigMaps, probes, grace periods).

The Kustomize base is rendered here by reading kustomization.yaml (resources, configMapGenerator,
images), which is all it uses, so no kustomize binary is needed; name hashes are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
# The oldest Kubernetes minor still supported by the major clouds, and the newest schema shipped.
VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
GUNICORN_GRACEFUL_SECONDS = 10  # web/gunicorn.conf.py's graceful_timeout after the drain

# The RabbitmqCluster fields this base may use, as the operator's CRD (rabbitmq.com/v1beta1)
# names them; anything else is a typo the operator would reject or ignore.
RABBITMQ_CLUSTER_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "rabbitmq.com/v1beta1"},
        "kind": {"const": "RabbitmqCluster"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "replicas": {"type": "integer", "minimum": 1},
                "image": {"type": "string"},
                "imagePullSecrets": {"type": "array"},
                "service": {"type": "object", "properties": {
                    "type": {"enum": ["ClusterIP", "LoadBalancer", "NodePort"]},
                    "annotations": {"type": "object"}}, "additionalProperties": False},
                "persistence": {"type": "object", "properties": {
                    "storageClassName": {"type": "string"},
                    "storage": {"type": ["string", "integer"]}}, "additionalProperties": False},
                "resources": {"type": "object", "properties": {
                    "requests": {"type": "object"}, "limits": {"type": "object"}},
                    "additionalProperties": False},
                "rabbitmq": {"type": "object", "properties": {
                    "additionalConfig": {"type": "string"},
                    "advancedConfig": {"type": "string"},
                    "envConfig": {"type": "string"},
                    "additionalPlugins": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False},
                "affinity": {"type": "object"},
                "tolerations": {"type": "array"},
                "override": {"type": "object"},
                "tls": {"type": "object"},
                "terminationGracePeriodSeconds": {"type": "integer"},
                "delayStartSeconds": {"type": "integer"},
                "skipPostDeploySteps": {"type": "boolean"},
                "autoEnableAllFeatureFlags": {"type": "boolean"},
                "secretBackend": {"type": "object"},
            },
        },
    },
}


def render() -> list[dict]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    objects = []
    for resource in kustomization["resources"]:
        objects += [doc for doc in yaml.safe_load_all((BASE / resource).read_text()) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator.get("files", []):
            key, _, path = entry.partition("=")
            data[key] = (BASE / path).read_text()
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": generator["name"]}, "data": data})
    images = {image["name"]: image for image in kustomization.get("images", [])}
    for obj in objects:
        for container in pod_spec(obj).get("containers", []):
            if container["image"] in images:
                image = images[container["image"]]
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def pod_spec(obj: dict) -> dict:
    return obj.get("spec", {}).get("template", {}).get("spec", {}) if obj["kind"] == "Deployment" \
        else {}


OBJECTS = render()


def named(kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in OBJECTS if obj["kind"] == kind}


def test_the_base_has_every_piece_of_the_stack():
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in OBJECTS}
    assert {("Deployment", "web"), ("Deployment", "worker"), ("Deployment", "nginx"),
            ("Service", "nginx"), ("Service", "web-replicas"), ("ConfigMap", "nginx-config"),
            ("RabbitmqCluster", "rabbitmq"), ("PodDisruptionBudget", "web")} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("obj", [o for o in OBJECTS if o["kind"] != "RabbitmqCluster"],
                         ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_each_object_is_valid_against_the_kubernetes_schema(obj, version):
    kubernetes_validate.validate(obj, version, strict=True)


def test_the_rabbitmq_cluster_uses_only_fields_of_the_operators_crd():
    (cluster,) = named("RabbitmqCluster").values()
    jsonschema.validate(cluster, RABBITMQ_CLUSTER_SCHEMA)
    assert cluster["spec"]["replicas"] == 3  # a quorum survives the loss of one node
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
        kubernetes_validate.validate(cluster, VERSIONS[-1], strict=True)  # why the CRD is here


def test_selectors_of_services_and_disruption_budgets_match_deployed_pods():
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in named("Deployment").values()]
    for deployment in named("Deployment").values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for kind, selector_of in (("Service", lambda o: o["spec"]["selector"]),
                              ("PodDisruptionBudget", lambda o: o["spec"]["selector"][
                                  "matchLabels"])):
        for name, obj in named(kind).items():
            selector = selector_of(obj)
            assert any(selector.items() <= labels.items() for labels in pod_labels), \
                f"{kind}/{name} selects no pods: {selector}"


def test_probes_are_wired_to_healthz_and_readyz():
    for name in ("web", "worker"):
        (container,) = pod_spec(named("Deployment")[name])["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
    (nginx,) = pod_spec(named("Deployment")["nginx"])["containers"]
    assert nginx["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_web_grace_period_covers_the_drain_and_the_graceful_shutdown():
    drain = float(named("ConfigMap")["app-config"]["data"]["DRAIN_SECONDS"])
    grace = pod_spec(named("Deployment")["web"])["terminationGracePeriodSeconds"]
    assert grace >= drain + GUNICORN_GRACEFUL_SECONDS + 5


def test_referenced_config_maps_and_keys_exist():
    config_maps = named("ConfigMap")
    for deployment in named("Deployment").values():
        spec = pod_spec(deployment)
        volumes = {v["name"]: v["configMap"]["name"] for v in spec.get("volumes", [])
                   if "configMap" in v}
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps
            for mount in container.get("volumeMounts", []):
                if mount["name"] in volumes and "subPath" in mount:
                    assert mount["subPath"] in config_maps[volumes[mount["name"]]]["data"]


def test_nginx_sets_every_variable_of_its_template():
    template = named("ConfigMap")["nginx-config"]["data"]["socketio.conf.template"]
    needed = set(re.findall(r"\$\{(NGINX_[A-Z_]+)\}", template))
    (nginx,) = pod_spec(named("Deployment")["nginx"])["containers"]
    assert needed <= {env["name"] for env in nginx["env"]}
