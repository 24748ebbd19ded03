"""The Kubernetes manifests under deploy/: valid for Kubernetes, and consistent with the image and the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from gradserve.server.rpc.server import SERVICE_NAME
from gradserve.server.cli import parse_args

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# gRPC probes are GA from Kubernetes 1.27: the oldest version the manifests target, and the newest known.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]


def load_resources() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"]
            for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


RESOURCES = load_resources()


def resource(kind: str, name: str) -> dict:
    return next(r for r in RESOURCES if r["kind"] == kind and r["metadata"]["name"] == name)


def pod_spec() -> dict:
    return resource("Deployment", "gradserve")["spec"]["template"]["spec"]


def container() -> dict:
    (only,) = pod_spec()["containers"]
    return only


def serve_args(environ: dict[str, str]):
    """What `gradserve serve` makes of these GRADSERVE_* variables, exactly as the CLI reads them."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        return parse_args(["serve"])


def dockerfile_env() -> dict[str, str]:
    return dict(re.findall(r"\b(GRADSERVE_\w+)=(\S+)", (ROOT / "Dockerfile").read_text()))


def pod_environ() -> dict[str, str]:
    """The GRADSERVE_* variables the server sees in the pod: the image's, overridden by the Deployment's."""
    return {**dockerfile_env(), **{e["name"]: e["value"] for e in container()["env"]}}


def test_kustomization_lists_every_manifest():
    """kubectl apply -k deploy/ applies every YAML file in deploy/."""
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(version):
    """Every resource passes Kubernetes' strict schema (a misspelled field is an error, not ignored)."""
    for doc in RESOURCES:
        kubernetes_validate.validate(doc, version, strict=True)


def test_probes_ask_the_grpc_health_service_on_the_served_port():
    """Startup, liveness and readiness are gRPC probes on the port the image serves; readiness asks for our API."""
    grpc_port = next(p["containerPort"] for p in container()["ports"] if p["name"] == "grpc")
    assert grpc_port == serve_args(pod_environ()).port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container()[probe]["grpc"]["port"] == grpc_port
    assert container()["readinessProbe"]["grpc"]["service"] == SERVICE_NAME


def test_pod_runs_as_the_images_non_root_user_with_nothing_extra():
    """Non-root (the image's numeric uid), read-only root, no privilege escalation, every capability dropped."""
    uid = int(re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M).group(1))
    pod, box = pod_spec()["securityContext"], container()["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid != 0
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"]
    assert pod_spec()["automountServiceAccountToken"] is False


def test_read_only_pod_gets_a_writable_tmp():
    """With a read-only root filesystem, /tmp is an emptyDir."""
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_resources_have_requests_and_limits():
    """CPU and memory requests (the HPA's utilization is relative to them) and limits."""
    resources = container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind])


def test_environment_sets_real_serve_flags():
    """Every GRADSERVE_* variable of the pod and the image is a `gradserve serve` flag, parsed as intended."""
    environ = pod_environ()
    args = serve_args(environ)
    for name in environ:
        assert hasattr(args, name.removeprefix("GRADSERVE_").lower()), f"{name} is no `gradserve serve` flag"
    assert args.host == "0.0.0.0"
    assert args.log_json is True


def test_metrics_port_is_declared_and_announced():
    """The port GRADSERVE_METRICS_PORT opens is a container port and the one the scrape annotation names."""
    metrics_port = next(p["containerPort"] for p in container()["ports"] if p["name"] == "metrics")
    annotations = resource("Deployment", "gradserve")["spec"]["template"]["metadata"]["annotations"]
    assert serve_args(pod_environ()).metrics_port == metrics_port
    assert int(annotations["prometheus.io/port"]) == metrics_port


def test_termination_grace_outlasts_the_servers_drain():
    """Kubernetes waits longer than the server's --grace before SIGKILL, so in-flight calls can finish."""
    assert pod_spec()["terminationGracePeriodSeconds"] > serve_args(pod_environ()).grace


def test_session_memory_cap_fits_in_the_memory_limit():
    """The live-session byte cap is below the container's memory limit, so sessions cannot get the pod killed."""
    limit = container()["resources"]["limits"]["memory"]
    units = {"Mi": 1 << 20, "Gi": 1 << 30}
    limit_bytes = int(limit[:-2]) * units[limit[-2:]]
    assert serve_args(pod_environ()).max_session_bytes < limit_bytes


def test_services_select_the_pods_on_the_grpc_port():
    """Both Services select the Deployment's pods and target its named grpc port."""
    labels = resource("Deployment", "gradserve")["spec"]["template"]["metadata"]["labels"]
    for name in ("gradserve", "gradserve-headless"):
        spec = resource("Service", name)["spec"]
        assert spec["selector"].items() <= labels.items()
        assert [p["targetPort"] for p in spec["ports"]] == ["grpc"]


def test_service_affinity_and_headless_service_for_client_balancing():
    """The ClusterIP Service pins a client to one pod (sessions); the headless one lists every pod (round_robin)."""
    assert resource("Service", "gradserve")["spec"]["sessionAffinity"] == "ClientIP"
    assert resource("Service", "gradserve-headless")["spec"]["clusterIP"] == "None"


def test_autoscaler_owns_the_deployments_replica_count():
    """The HPA scales the Deployment on CPU from at least two replicas; the Deployment leaves replicas to it."""
    hpa = resource("HorizontalPodAutoscaler", "gradserve")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gradserve"}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert "replicas" not in resource("Deployment", "gradserve")["spec"]


def test_disruption_budget_keeps_a_replica():
    """Node drains leave at least one replica serving."""
    pdb = resource("PodDisruptionBudget", "gradserve")["spec"]
    labels = resource("Deployment", "gradserve")["spec"]["template"]["metadata"]["labels"]
    assert pdb["minAvailable"] >= 1 and pdb["selector"]["matchLabels"].items() <= labels.items()
