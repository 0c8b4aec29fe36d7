"""Checks of the container and deployment files that need no Docker and no cluster.

Run by scripts/validate-deploy.sh (which provides PyYAML in a venv):

    python3 tests/deploy/test_manifests.py

Standard library unittest + PyYAML (+ tomllib, Python >= 3.11). The schema validation of the
Kubernetes objects is kubernetes-validate's job (in the script); this file checks what a
schema cannot: that the pieces agree with each other and with oidc-bff's configuration rules.
"""

import json
import re
import sys
import tomllib
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE_DIR = ROOT / "deploy" / "compose"

SECRETS_DIR = "/run/secrets/oidc-bff"
CONFIG_PATH = "/etc/oidc-bff/bff.toml"
NONROOT_UID = 65532


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def k8s_objects():
    """{kind: object} for every manifest listed in kustomization.yaml."""
    kustomization = load_yaml_docs(K8S / "kustomization.yaml")[0]
    objects = {}
    for name in kustomization["resources"]:
        for doc in load_yaml_docs(K8S / name):
            if doc["kind"] in objects:
                raise AssertionError(f"two {doc['kind']} objects; these tests expect one of each")
            objects[doc["kind"]] = doc
    return objects


def port_number(container, port):
    """A probe's or Service's target port (a number or a container port name) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"no container port named {port!r}")


def listen_port(addr):
    return int(addr.rsplit(":", 1)[1])


class Kubernetes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objs = k8s_objects()
        cls.deployment = cls.objs["Deployment"]
        cls.pod = cls.deployment["spec"]["template"]["spec"]
        containers = cls.pod["containers"]
        assert len(containers) == 1, "one container expected"
        cls.container = containers[0]
        cls.pod_labels = cls.deployment["spec"]["template"]["metadata"]["labels"]
        cls.config = tomllib.loads(cls.objs["ConfigMap"]["data"]["bff.toml"])

    def mount(self, path):
        mounts = [m for m in self.container.get("volumeMounts", []) if m["mountPath"] == path]
        self.assertEqual(len(mounts), 1, f"one volume mounted at {path}")
        volume = [v for v in self.pod["volumes"] if v["name"] == mounts[0]["name"]]
        self.assertEqual(len(volume), 1, f"the volume of {path} is defined")
        return mounts[0], volume[0]

    def test_kustomization_lists_every_manifest_but_examples(self):
        kustomization = load_yaml_docs(K8S / "kustomization.yaml")[0]
        listed = set(kustomization["resources"])
        on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
        examples = {n for n in on_disk if n.endswith(".example.yaml")}
        self.assertIn("secret.example.yaml", examples)
        self.assertEqual(listed, on_disk - examples)
        self.assertEqual(
            set(self.objs),
            {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"},
        )
        images = {i["name"] for i in kustomization.get("images", [])}
        self.assertIn(self.container["image"].split(":")[0], images, "kustomize sets the image")

    def test_replicas(self):
        self.assertGreaterEqual(self.deployment["spec"]["replicas"], 2)

    def test_selector_matches_template(self):
        selector = self.deployment["spec"]["selector"]["matchLabels"]
        self.assertTrue(selector)
        self.assertLessEqual(selector.items(), self.pod_labels.items())

    def test_probes(self):
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            with self.subTest(probe=probe):
                get = self.container[probe]["httpGet"]
                self.assertEqual(get["path"], path)
                self.assertEqual(port_number(self.container, get["port"]), 8080)
        self.assertEqual(listen_port(self.config["server"]["listen"]), 8080)

    def test_security_context(self):
        pod_sc = self.pod.get("securityContext", {})
        sc = {**pod_sc, **self.container.get("securityContext", {})}  # the container's wins
        self.assertIs(sc.get("runAsNonRoot"), True)
        self.assertEqual(sc.get("runAsUser"), NONROOT_UID)
        self.assertIs(sc.get("readOnlyRootFilesystem"), True)
        self.assertIs(sc.get("allowPrivilegeEscalation"), False)
        self.assertIn("ALL", sc.get("capabilities", {}).get("drop", []))
        self.assertFalse(sc.get("capabilities", {}).get("add"))
        self.assertEqual(sc.get("seccompProfile", {}).get("type"), "RuntimeDefault")
        self.assertFalse(sc.get("privileged", False))
        self.assertIs(self.pod.get("automountServiceAccountToken"), False)

    def test_resources(self):
        res = self.container["resources"]
        self.assertEqual(res["requests"]["cpu"], "100m")
        self.assertEqual(res["requests"]["memory"], "32Mi")
        self.assertEqual(res["limits"]["memory"], "64Mi")

    def test_config_mount(self):
        mount, volume = self.mount(str(Path(CONFIG_PATH).parent))
        self.assertIs(mount.get("readOnly"), True)
        self.assertNotIn("subPath", mount, "a subPath mount never sees ConfigMap updates")
        self.assertEqual(volume["configMap"]["name"], self.objs["ConfigMap"]["metadata"]["name"])
        paths = {i["path"] for i in volume["configMap"].get("items", [{"path": "bff.toml"}])}
        self.assertIn(Path(CONFIG_PATH).name, paths)
        env = {e["name"]: e.get("value") for e in self.container.get("env", [])}
        self.assertEqual(env.get("BFF_CONFIG", CONFIG_PATH), CONFIG_PATH)

    def test_secret_mount(self):
        mount, volume = self.mount(SECRETS_DIR)
        self.assertIs(mount.get("readOnly"), True)
        self.assertEqual(volume["secret"]["secretName"], "oidc-bff")
        items = {i["key"]: i["path"] for i in volume["secret"].get("items", [])}
        self.assertEqual(
            items,
            {"client-secret": "client-secret", "session-keys": "session-keys", "session-url": "session-url"},
        )
        mode = volume["secret"].get("defaultMode", 0o644)
        self.assertEqual(mode & 0o007, 0, "secret files are not world-readable")
        if not mode & 0o004:
            self.assertEqual(self.pod["securityContext"].get("fsGroup"), NONROOT_UID)

    def test_configmap_toml(self):
        server, oidc = self.config["server"], self.config["oidc"]
        session, logging = self.config["session"], self.config["logging"]
        self.assertEqual(server["admin_listen"], "0.0.0.0:9090")
        self.assertTrue(server["public_url"].startswith("https://"))
        self.assertTrue(oidc["issuer"].startswith("https://"))
        self.assertTrue(oidc["client_id"])
        self.assertEqual(logging["format"], "json")
        self.assertEqual(oidc["client_secret_file"], f"{SECRETS_DIR}/client-secret")
        self.assertEqual(session["keys_file"], f"{SECRETS_DIR}/session-keys")
        self.assertNotIn("client_secret", oidc, "no secret in the ConfigMap")
        self.assertNotIn("keys", session, "no session key in the ConfigMap")
        # Cookie sessions; the store URL comes from the Secret (it may hold a password), never
        # the ConfigMap.
        self.assertEqual(session.get("store", "cookie"), "cookie")
        self.assertFalse(session.get("url"), "a store URL belongs in a Secret (url_file)")
        self.assertLess(
            server.get("shutdown_timeout_secs", 30), self.pod["terminationGracePeriodSeconds"]
        )

    def test_replicas_share_a_store(self):
        # Several replicas against an IdP that rotates refresh tokens must share the refresh
        # cache and lock (docs/operations.md): the example may not run 2+ replicas without one.
        session = self.config["session"]
        hpa = self.objs["HorizontalPodAutoscaler"]
        replicas = max(self.deployment["spec"]["replicas"], hpa["spec"]["minReplicas"])
        if replicas > 1:
            self.assertEqual(session.get("url_file"), f"{SECRETS_DIR}/session-url")

    def test_ports_and_prometheus(self):
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports, {"http": 8080, "metrics": 9090})
        self.assertEqual(listen_port(self.config["server"]["admin_listen"]), ports["metrics"])
        ann = self.deployment["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(ann["prometheus.io/scrape"], "true")
        self.assertEqual(ann["prometheus.io/port"], str(ports["metrics"]))
        self.assertEqual(ann.get("prometheus.io/path", "/metrics"), "/metrics")

    def test_service(self):
        svc = self.objs["Service"]["spec"]
        self.assertLessEqual(svc["selector"].items(), self.pod_labels.items())
        ports = {p["name"]: p for p in svc["ports"]}
        self.assertEqual(ports["http"]["port"], 80)
        self.assertEqual(port_number(self.container, ports["http"]["targetPort"]), 8080)
        self.assertEqual(ports["metrics"]["port"], 9090)
        self.assertEqual(port_number(self.container, ports["metrics"]["targetPort"]), 9090)

    def test_hpa(self):
        hpa = self.objs["HorizontalPodAutoscaler"]
        self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
        ref = hpa["spec"]["scaleTargetRef"]
        self.assertEqual((ref["apiVersion"], ref["kind"]), ("apps/v1", "Deployment"))
        self.assertEqual(ref["name"], self.deployment["metadata"]["name"])
        self.assertGreaterEqual(hpa["spec"]["minReplicas"], 2)
        self.assertGreater(hpa["spec"]["maxReplicas"], hpa["spec"]["minReplicas"])
        cpu = [m["resource"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
        self.assertEqual(cpu[0]["name"], "cpu")
        self.assertEqual(cpu[0]["target"], {"type": "Utilization", "averageUtilization": 70})

    def test_pdb(self):
        pdb = self.objs["PodDisruptionBudget"]
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        self.assertEqual(pdb["spec"]["minAvailable"], 1)
        self.assertEqual(
            pdb["spec"]["selector"]["matchLabels"], self.deployment["spec"]["selector"]["matchLabels"]
        )

    def test_secret_example(self):
        secret = load_yaml_docs(K8S / "secret.example.yaml")[0]
        self.assertEqual((secret["kind"], secret["metadata"]["name"]), ("Secret", "oidc-bff"))
        data = secret.get("stringData", {})
        self.assertEqual(set(data), {"client-secret", "session-keys", "session-url"})
        for key, value in data.items():
            with self.subTest(key=key):
                self.assertIn("REPLACE", value, "placeholders only, never real values")


class Dockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
        text = re.sub(r"\\\n", " ", text)  # line continuations
        lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
        cls.stages = []
        for line in lines:
            instr, _, args = line.partition(" ")
            if instr.upper() == "FROM":
                cls.stages.append({"from": args.strip(), "lines": []})
            else:
                cls.stages[-1]["lines"].append((instr.upper(), args.strip()))
        cls.final = cls.stages[-1]

    def instr(self, stage, name):
        return [args for i, args in stage["lines"] if i == name]

    def test_multi_stage_with_exact_builder_tag(self):
        self.assertGreaterEqual(len(self.stages), 2)
        builders = [s["from"] for s in self.stages if s["from"].startswith("rust:")]
        self.assertTrue(builders)
        for b in builders:
            self.assertRegex(b, r"^rust:\d+\.\d+\.\d+-slim-bookworm\b", "exact Rust version, Debian 12")
        for s in self.stages:
            image = s["from"].split()[0]
            if image in {t["from"].split()[-1] for t in self.stages if " AS " in t["from"].upper()}:
                continue  # FROM an earlier stage
            self.assertRegex(image, r":[^:/]+$", f"{image} has a tag")
            self.assertFalse(image.endswith(":latest"), image)

    def test_dependency_layer(self):
        runs = " ".join(a for s in self.stages for a in self.instr(s, "RUN"))
        self.assertRegex(runs, r"cargo install cargo-chef --version \d+\.\d+\.\d+ --locked")
        self.assertIn("cargo chef cook --release --locked", runs)

    def test_release_build(self):
        runs = [a for s in self.stages for a in self.instr(s, "RUN")]
        self.assertTrue(any("cargo build --release --locked" in r for r in runs))

    def test_final_stage(self):
        self.assertTrue(self.final["from"].startswith("gcr.io/distroless/cc-debian12:"))
        users = self.instr(self.final, "USER")
        self.assertTrue(users, "the final stage sets USER")
        self.assertIn(users[-1].split(":")[0], (str(NONROOT_UID), "nonroot"))
        self.assertTrue(
            any("/usr/local/bin/oidc-bff" in c and "--from=builder" in c for c in self.instr(self.final, "COPY"))
        )
        self.assertIn(f"BFF_CONFIG={CONFIG_PATH}", self.instr(self.final, "ENV"))
        exposed = {p for e in self.instr(self.final, "EXPOSE") for p in e.split()}
        self.assertLessEqual({"8080", "9090"}, exposed)
        self.assertFalse(self.instr(self.final, "RUN"), "no shell at run time: no RUN in the final stage")

    def test_healthcheck(self):
        checks = self.instr(self.final, "HEALTHCHECK")
        self.assertEqual(len(checks), 1)
        cmd = re.search(r"\bCMD\s+(\[.*\])\s*$", checks[0])
        self.assertIsNotNone(cmd, "exec-form CMD (no shell in distroless)")
        self.assertEqual(json.loads(cmd.group(1)), ["/usr/local/bin/oidc-bff", "healthcheck"])
        entry = json.loads(self.instr(self.final, "ENTRYPOINT")[-1])
        self.assertEqual(entry, ["/usr/local/bin/oidc-bff"])

    def test_dockerignore(self):
        entries = {
            l.strip().rstrip("/")
            for l in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
            if l.strip() and not l.startswith("#")
        }
        self.assertLessEqual({"target", "**/node_modules", ".git", ".demo"}, entries)
        for needed in ("src", "Cargo.toml", "Cargo.lock", "benches", "tests/api", "tests"):
            self.assertNotIn(needed, entries, f"{needed} is needed by cargo in the build")


class Compose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.compose = load_yaml_docs(COMPOSE_DIR / "docker-compose.yml")[0]
        cls.services = cls.compose["services"]
        cls.config = tomllib.loads((COMPOSE_DIR / "bff.toml").read_text(encoding="utf-8"))

    def mounts(self, service):
        out = {}
        for v in self.services[service].get("volumes", []):
            parts = v.split(":")
            out[parts[1]] = (parts[0], parts[2:] == ["ro"])
        return out

    def test_services(self):
        self.assertEqual(set(self.services), {"oidc-bff", "idp", "redis"})
        self.assertEqual(self.services["redis"]["image"], "redis:7.2-alpine")
        self.assertEqual(self.services["idp"]["image"], "node:20-bookworm-slim")
        build = self.services["oidc-bff"]["build"]
        self.assertTrue((COMPOSE_DIR / build["context"] / build.get("dockerfile", "Dockerfile")).is_file())

    def test_mounted_paths_exist_and_are_read_only(self):
        for service in ("oidc-bff", "idp"):
            for target, (source, ro) in self.mounts(service).items():
                with self.subTest(service=service, target=target):
                    self.assertTrue((COMPOSE_DIR / source).exists(), source)
                    self.assertTrue(ro, f"{target} is mounted read-only")

    def test_published_on_loopback_only(self):
        for name, svc in self.services.items():
            for port in svc.get("ports", []):
                with self.subTest(service=name, port=port):
                    self.assertTrue(str(port).startswith("127.0.0.1:"))

    def test_bff_config(self):
        server, oidc, session = self.config["server"], self.config["oidc"], self.config["session"]
        self.assertEqual(server["public_url"], "http://127.0.0.1:8080")
        self.assertIs(session["secure"], False)
        self.assertEqual(session.get("store"), "redis")
        self.assertTrue(session["url"].startswith("redis://redis:6379/"), "the compose file's Redis")
        self.assertEqual(self.services["oidc-bff"]["depends_on"]["redis"]["condition"], "service_healthy")
        self.assertNotIn("admin_listen", server)
        mounts = self.mounts("oidc-bff")
        self.assertEqual(mounts[CONFIG_PATH][0], "./bff.toml")
        self.assertEqual((COMPOSE_DIR / mounts[server["static_dir"]][0]).resolve(), ROOT / "examples" / "spa")
        self.assertEqual(self.services["oidc-bff"]["network_mode"], "service:idp")
        # The namespace's published ports: oidc-bff's listen port and the IdP's, unchanged.
        published = {p.split(":")[1]: p.split(":")[2] for p in self.services["idp"]["ports"]}
        self.assertEqual(published[str(listen_port(server["listen"]))], str(listen_port(server["listen"])))
        self.assertEqual(oidc["issuer"], "http://127.0.0.1:9000/ENV_ID/as")
        self.assertIn("9000", published)

    def test_idp(self):
        idp = self.services["idp"]
        script = idp["command"][-1]
        self.assertLess(script.index("npm ci --omit=dev"), script.index("node server.js"))
        self.assertIn("/src/idp", self.mounts("idp"))
        self.assertEqual((COMPOSE_DIR / self.mounts("idp")["/src/idp"][0]).resolve(), ROOT / "tests" / "idp")
        forward = re.search(r"loopback-forward\.mjs (\d+) (\d+)", script)
        published = {p.split(":")[1]: p.split(":")[2] for p in idp["ports"]}
        self.assertEqual(published["9000"], forward.group(1))
        cfg = json.loads(idp["environment"]["IDP_CONFIG"])
        self.assertEqual(cfg["port"], int(forward.group(2)))
        client = {c["client_id"]: c for c in cfg["clients"]}[self.config["oidc"]["client_id"]]
        self.assertEqual(client["client_secret"], self.config["oidc"]["client_secret"])
        public = self.config["server"]["public_url"]
        self.assertIn(f"{public}/callback", client["redirect_uris"])
        self.assertIn(f"{public}/", client["post_logout_redirect_uris"])
        self.assertIn("healthcheck", idp)
        cond = self.services["oidc-bff"]["depends_on"]["idp"]["condition"]
        self.assertEqual(cond, "service_healthy")


class Monitoring(unittest.TestCase):
    """deploy/kubernetes/monitoring/: Prometheus Operator objects (CRDs), kept out of the default
    kustomization because kubernetes-validate has no schema for them; checked here instead."""

    def setUp(self):
        self.monitor = load_yaml_docs(K8S / "monitoring" / "servicemonitor.yaml")[0]
        self.rule = load_yaml_docs(K8S / "monitoring" / "prometheusrule.yaml")[0]
        self.service = load_yaml_docs(K8S / "service.yaml")[0]

    def test_kinds_and_not_in_the_default_kustomization(self):
        self.assertEqual((self.monitor["apiVersion"], self.monitor["kind"]), ("monitoring.coreos.com/v1", "ServiceMonitor"))
        self.assertEqual((self.rule["apiVersion"], self.rule["kind"]), ("monitoring.coreos.com/v1", "PrometheusRule"))
        listed = load_yaml_docs(K8S / "kustomization.yaml")[0]["resources"]
        self.assertFalse([r for r in listed if "monitoring" in r])

    def test_service_monitor_scrapes_the_metrics_port_of_the_service(self):
        spec = self.monitor["spec"]
        self.assertLessEqual(spec["selector"]["matchLabels"].items(), self.service["metadata"]["labels"].items())
        ports = {p["name"] for p in self.service["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            self.assertIn(endpoint["port"], ports)
            self.assertEqual(endpoint.get("path", "/metrics"), "/metrics")

    def test_alerts_use_documented_metric_families_and_labels(self):
        """Every bff_ family an alert reads is in docs/operations.md's metrics table, and every
        label it matches on is one the table gives that family."""
        table = {}
        for line in (ROOT / "docs" / "operations.md").read_text(encoding="utf-8").splitlines():
            m = re.match(r"^\| `(bff_[a-z_]+)` \|([^|]*)\|", line)
            if m:
                table[m.group(1)] = set(re.findall(r"`([a-z_]+)`", m.group(2)))
        rules = [r for g in self.rule["spec"]["groups"] for r in g["rules"]]
        wanted = {"OidcBffRefreshFailing", "OidcBffIdpUnavailable", "OidcBffStoreErrors"}
        self.assertLessEqual(wanted, {r["alert"] for r in rules})
        for r in rules:
            with self.subTest(alert=r["alert"]):
                self.assertIn(r["labels"]["severity"], {"warning", "critical"})
                self.assertTrue(r["annotations"]["summary"])
                for family, matchers in re.findall(r"(bff_[a-z_]+)(?:\{([^}]*)\})?", r["expr"]):
                    self.assertIn(family, table, f"{family} is not in docs/operations.md")
                    for label in re.findall(r"([a-z_]+)\s*=~?", matchers):
                        self.assertIn(label, table[family], f"{family} has no label {label}")
                for label in re.findall(r"by \(([a-z_, ]+)\)", r["expr"]):
                    for name in label.split(","):
                        self.assertTrue(any(name.strip() in ls for ls in table.values()), name)


class Docs(unittest.TestCase):
    def test_deployment_doc(self):
        text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
        for needle in (
            "docker build -t oidc-bff .",
            "kubectl apply -k deploy/kubernetes",
            "trusted_proxies",
            "admin_listen",
            "public_url",
            "scripts/validate-deploy.sh",
            "kubectl apply -f deploy/kubernetes/monitoring/",
        ):
            with self.subTest(needle=needle):
                self.assertIn(needle, text)


if __name__ == "__main__":
    program = unittest.main(exit=False)
    result = program.result
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    sys.stderr.flush()
    print(f"deploy: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    sys.exit(0 if result.wasSuccessful() and result.testsRun else 1)
