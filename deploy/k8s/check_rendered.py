#!/usr/bin/env python3
"""Checks a rendered overlay (`kubectl kustomize deploy/k8s/overlays/<name>`) against the
project, beyond what the Kubernetes schemas can see. Run by dev/k8s-validate.sh:

    check_rendered.py RENDERED.yaml --overlay NAME --repo ROOT [--external-secret NAME]...

- Configuration: every key of the mounted petstore.yaml and every PETSTORE__SECTION__KEY
  variable (in a Deployment or in a ConfigMap it takes its environment from) is a key the
  project knows: one of config/enhanced_config.yaml, config/distributed.yaml,
  config/production.yaml, or of the configuration reference table in README.md (the
  optional sections: messaging.kafka, messaging.nats, flags.file, …). An unknown key stops a
  service at start-up; here it fails the check, naming the key. PETSTORE_ENV names a file
  config/<env>.yaml that exists (the image carries config/).
- Mounts: PETSTORE_CONFIG and PETSTORE__FLAGS__FILE name a key of a ConfigMap mounted as a
  directory (no subPath, or live reload would never see an update); the flag file is
  config/flags.json, byte for byte.
- The effective configuration of each Deployment (defaults → config/<PETSTORE_ENV>.yaml →
  petstore.yaml → literal PETSTORE__ variables): http.host 0.0.0.0, the container port is
  services.<name>.port, `serve <name>` names a service, replicated services use shared
  storage and a shared bus (PostgreSQL, not memory), production has an OIDC issuer and not
  the development secret.
- References: ConfigMaps, Secrets (and their keys), the ServiceAccount, Services' selectors
  and target ports, Ingress backends, autoscaler and PodDisruptionBudget targets.
- Partitions: no Deployment's replicas and no autoscaler's maxReplicas exceed the
  partitions of a channel the service consumes as a competing consumer (more consumers of a
  group than partitions idle).

Exits 1 with one line per problem; prints a summary (and, for Secrets the operator
provides, the keys they must hold) otherwise.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import sys

import yaml

SERVICES = ["order", "payment", "delivery", "inventory", "notification", "orchestrator"]
# The channels each service consumes in its consumer group (services/*/src/lib.rs): its
# useful replicas are bounded by the fewest partitions among them.
CONSUMES = {
    "order": ["order-commands"],
    "payment": ["payment-commands"],
    "delivery": ["delivery-commands"],
    "inventory": ["inventory-commands", "inventory-events"],
    "notification": ["notification-commands"],
    "orchestrator": ["order-events", "inventory-events", "payment-events", "delivery-events", "notification-events"],
}
# Maps whose keys are data (route names, channel names, librdkafka properties), not keys.
FREE_MAPS = [("http", "body_limits"), ("rate_limits", "routes"), ("messaging", "channels"), ("messaging", "kafka", "client")]
# Keys whose value may itself be a mapping of the user's (`start: { time: … }`, properties).
OPEN = [("http", "body_limits", "*"), ("messaging", "kafka", "client", "*"), ("messaging", "channels", "*", "start")]
SINGLE_UNDERSCORE = {"PETSTORE_ENV", "PETSTORE_CONFIG"}
DEVELOPMENT_SECRET = "petstore-development-secret-not-for-production"


def normalize(path):
    """`path` with each free map's key replaced by `*`."""
    path = list(path)
    for free in FREE_MAPS:
        n = len(free)
        if len(path) > n and tuple(path[:n]) == free:
            path[n] = "*"
    return tuple(path)


def nodes(value, prefix=()):
    """Every path of a YAML mapping: intermediate nodes and leaves."""
    if isinstance(value, dict):
        for k, v in value.items():
            path = prefix + (str(k),)
            yield path
            yield from nodes(v, path)


def leaves(value, prefix=()):
    """The leaf paths of a mapping (scalars, lists and empty mappings)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaves(v, prefix + (str(k),))
    elif prefix:
        yield prefix


def readme_keys(readme):
    """Keys of README.md's configuration table: first-column code spans, `{a, b}` expanded,
    `<name>` kept only where it stands for a free map's key."""
    keys = set()
    section = readme.split("\n## Configuration", 1)[-1]
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for span in re.findall(r"`([^`]+)`", first):
            if not re.fullmatch(r"[a-z_][a-z0-9_.]*(\.\{[a-z0-9_, ]+\}|\.<[a-z]+>[a-z0-9_.{}, ]*)?", span):
                continue
            expanded = [span]
            m = re.search(r"\{([^}]*)\}", span)
            if m:
                expanded = [span[: m.start()] + part.strip() + span[m.end():] for part in m.group(1).split(",")]
            for key in expanded:
                path = tuple("*" if re.fullmatch(r"<[a-z]+>", s) else s for s in key.split("."))
                if "*" in path and normalize(path) != path:
                    continue
                if "*" in path and not any(path[: len(f)] == f and path[len(f)] == "*" for f in FREE_MAPS if len(path) > len(f)):
                    continue
                keys.add(path)
    return keys


class Known:
    def __init__(self, repo):
        self.paths = set()
        self.layers = {}
        for name in ("enhanced_config", "distributed", "production"):
            with open(os.path.join(repo, "config", name + ".yaml")) as f:
                data = yaml.safe_load(f) or {}
            self.layers[name] = data
            self.paths.update(normalize(p) for p in nodes(data))
        with open(os.path.join(repo, "README.md")) as f:
            for path in readme_keys(f.read()):
                for i in range(1, len(path) + 1):
                    self.paths.add(path[:i])
        self.defaults = self.layers["enhanced_config"]
        self.channels = set(self.defaults["messaging"]["channels"])

    def problem(self, path):
        """Why `path` (a tuple of segments) is not a key the project knows, or None."""
        norm = normalize(path)
        if tuple(path[:2]) == ("messaging", "channels") and len(path) > 2 and path[2] not in self.channels:
            return "no channel `%s` (the contract channels: %s)" % (path[2], ", ".join(sorted(self.channels)))
        if norm in self.paths:
            return None
        for o in OPEN:
            if len(norm) >= len(o) and norm[: len(o)] == o:
                return None
        return "not a configuration key of the project"


def merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def env_path(name):
    return tuple(s.lower() for s in name[len("PETSTORE__"):].split("__"))


def set_path(tree, path, value):
    for seg in path[:-1]:
        tree = tree.setdefault(seg, {})
    tree[path[-1]] = value


def get_path(tree, path, default=None):
    for seg in path:
        if not isinstance(tree, dict) or seg not in tree:
            return default
        tree = tree[seg]
    return tree


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--overlay", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--external-secret", action="append", default=[])
    args = ap.parse_args()

    known = Known(args.repo)
    with open(args.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    objs = {}
    for d in docs:
        objs[(d["kind"], d["metadata"]["name"])] = d
    problems = []
    notes = []

    def bad(where, what):
        problems.append("%s: %s: %s" % (args.overlay, where, what))

    def configmap(name):
        return objs.get(("ConfigMap", name))

    def secret_data(name):
        s = objs.get(("Secret", name))
        if s is None:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        data.update(s.get("stringData") or {})
        return data

    external_keys = {name: set() for name in args.external_secret}
    checked_keys = set()
    checked_env = set()

    def check_key(where, path, origin):
        why = known.problem(path)
        if why:
            bad(where, "%s `%s`: %s" % (origin, ".".join(path), why))
        else:
            checked_keys.add(path)

    def check_env_name(where, name):
        if name.startswith("PETSTORE__"):
            checked_env.add(name)
            check_key(where, env_path(name), "variable " + name + " sets")
        elif name.startswith("PETSTORE_") and name not in SINGLE_UNDERSCORE:
            bad(where, "variable %s: the services read PETSTORE_ENV, PETSTORE_CONFIG and PETSTORE__SECTION__KEY only" % name)

    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if not deployments:
        bad("render", "no Deployment")

    for dep in deployments:
        name = dep["metadata"]["name"]
        where = "Deployment/" + name
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        if not matches(dep["spec"]["selector"].get("matchLabels"), labels):
            bad(where, "selector does not match the pod template's labels")
        sa = pod.get("serviceAccountName")
        if sa and ("ServiceAccount", sa) not in objs:
            bad(where, "no ServiceAccount " + sa)
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            if "configMap" in v and not configmap(v["configMap"]["name"]) and not v["configMap"].get("optional"):
                bad(where, "volume %s: no ConfigMap %s" % (v["name"], v["configMap"]["name"]))
            if "secret" in v and ("Secret", v["secret"]["secretName"]) not in objs and v["secret"]["secretName"] not in external_keys:
                bad(where, "volume %s: no Secret %s" % (v["name"], v["secret"]["secretName"]))
        if len(pod.get("containers", [])) != 1:
            bad(where, "expected one container")
            continue
        c = pod["containers"][0]
        # Environment: literal values, references, and the ConfigMaps/Secrets of envFrom.
        env = {}
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef:
                cm = configmap(ef["configMapRef"]["name"])
                if cm is None:
                    if not ef["configMapRef"].get("optional"):
                        bad(where, "envFrom: no ConfigMap " + ef["configMapRef"]["name"])
                    continue
                for k, v in (cm.get("data") or {}).items():
                    check_env_name("ConfigMap/" + cm["metadata"]["name"], k)
                    env[k] = v
            if "secretRef" in ef:
                sname = ef["secretRef"]["name"]
                data = secret_data(sname)
                if data is None:
                    if sname not in external_keys and not ef["secretRef"].get("optional"):
                        bad(where, "envFrom: no Secret " + sname)
                    continue
                for k in data:
                    check_env_name("Secret/" + sname, k)
                    env[k] = data[k]
        for e in c.get("env", []):
            check_env_name(where, e["name"])
            if "value" in e:
                env[e["name"]] = e["value"]
                continue
            ref = e.get("valueFrom", {})
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                data = secret_data(r["name"])
                if data is None:
                    if r["name"] in external_keys:
                        if not r.get("optional"):
                            external_keys[r["name"]].add(r["key"])
                    elif not r.get("optional"):
                        bad(where, "env %s: no Secret %s" % (e["name"], r["name"]))
                elif r["key"] not in data:
                    if not r.get("optional"):
                        bad(where, "env %s: Secret %s has no key %s" % (e["name"], r["name"], r["key"]))
                else:
                    env[e["name"]] = data[r["key"]]
            elif "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                cm = configmap(r["name"])
                if cm is None or r["key"] not in (cm.get("data") or {}):
                    if not r.get("optional"):
                        bad(where, "env %s: no key %s in ConfigMap %s" % (e["name"], r["key"], r["name"]))
                else:
                    env[e["name"]] = cm["data"][r["key"]]
        # Mounted files: ConfigMaps as directories, never through subPath.
        mounts = {}
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"])
            if v is None:
                bad(where, "volumeMount %s: no such volume" % m["name"])
                continue
            if "configMap" in v:
                if m.get("subPath") or m.get("subPathExpr"):
                    bad(where, "ConfigMap %s is mounted with subPath: an update never reaches the pod (no live reload)" % v["configMap"]["name"])
                mounts[m["mountPath"].rstrip("/")] = configmap(v["configMap"]["name"])

        def mounted_file(var):
            path = env.get(var)
            if not path:
                bad(where, "%s is not set" % var)
                return None
            cm = mounts.get(os.path.dirname(path))
            key = os.path.basename(path)
            if cm is None:
                bad(where, "%s=%s is not in a directory where a ConfigMap is mounted" % (var, path))
                return None
            if key not in (cm.get("data") or {}):
                bad(where, "%s=%s: ConfigMap %s has no key %s" % (var, path, cm["metadata"]["name"], key))
                return None
            return cm["metadata"]["name"], cm["data"][key]

        config_cm, config_text = mounted_file("PETSTORE_CONFIG") or (None, None)
        flags_cm, flags_text = mounted_file("PETSTORE__FLAGS__FILE") or (None, None)
        if flags_text is not None:
            with open(os.path.join(args.repo, "config", "flags.json")) as f:
                if flags_text != f.read():
                    bad("ConfigMap/" + flags_cm, "its flags.json differs from config/flags.json: cp config/flags.json deploy/k8s/base/flags.json")
            try:
                json.loads(flags_text)["flags"]
            except (ValueError, KeyError, TypeError) as e:
                bad("ConfigMap/" + flags_cm, "flags.json is not a flagd definition: %s" % e)
        # The configuration as the service will read it.
        effective = known.defaults
        env_name = env.get("PETSTORE_ENV")
        if env_name is not None:
            overlay = os.path.join(args.repo, "config", env_name + ".yaml")
            if not os.path.exists(overlay):
                bad(where, "PETSTORE_ENV=%s: no file config/%s.yaml in the image" % (env_name, env_name))
            else:
                with open(overlay) as f:
                    effective = merge(effective, yaml.safe_load(f))
        if config_text is not None:
            try:
                data = yaml.safe_load(config_text) or {}
            except yaml.YAMLError as e:
                bad("ConfigMap/" + config_cm, "petstore.yaml does not parse: %s" % e)
                data = {}
            if not isinstance(data, dict):
                bad("ConfigMap/" + config_cm, "petstore.yaml is not a mapping")
                data = {}
            for path in leaves(data):
                check_key("ConfigMap/%s petstore.yaml" % config_cm, path, "key")
            effective = merge(effective, data)
        for k, v in env.items():
            if k.startswith("PETSTORE__"):
                set_path(effective, env_path(k), v)

        # The process: `serve <name>` on services.<name>.port, reachable from outside the pod.
        if c.get("args", [])[:1] != ["serve"] or len(c.get("args", [])) != 2 or c["args"][1] not in SERVICES:
            bad(where, "args %s: expected [serve, <one of %s>]" % (c.get("args"), ", ".join(SERVICES)))
            continue
        service = c["args"][1]
        port = get_path(effective, ("services", service, "port"))
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if str(ports.get("http")) != str(port):
            bad(where, "container port http=%s but services.%s.port is %s" % (ports.get("http"), service, port))
        if get_path(effective, ("http", "host")) != "0.0.0.0":
            bad(where, "http.host is %s: a container must listen on 0.0.0.0" % get_path(effective, ("http", "host")))
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            got = get_path(c, (probe, "httpGet", "path"))
            if got != path:
                bad(where, "%s should GET %s, not %s" % (probe, path, got))
        if int(pod.get("terminationGracePeriodSeconds", 30)) <= 30:
            bad(where, "terminationGracePeriodSeconds must exceed the service's own 30 s shutdown grace")

        # Replicas: shared state, and no more consumers than partitions.
        hpa = hpas.get(name)
        replicas = dep["spec"].get("replicas", 1)
        most = hpa["spec"]["maxReplicas"] if hpa else replicas
        least = hpa["spec"].get("minReplicas", 1) if hpa else replicas
        if least < 2:
            bad(where, "runs %s replica(s): the services run 2 or more (competing consumers)" % least)
        if most > 1:
            if effective.get("storage") != "postgres":
                bad(where, "storage is %s: replicas must share PostgreSQL" % effective.get("storage"))
            messaging = effective.get("messaging", {})
            backends = {messaging.get("default_backend")}
            for ch, conf in messaging.get("channels", {}).items():
                backends.add(conf.get("backend") or get_path(messaging, ("backend_selection", conf.get("pattern"))) or messaging.get("default_backend"))
            if "memory" in backends:
                bad(where, "a channel is on the memory bus: replicas (and services) would not share it")
        partitions = {ch: int(get_path(effective, ("messaging", "channels", ch, "partitions"), 3)) for ch in CONSUMES[service]}
        fewest = min(partitions.values())
        if most > fewest:
            what = "autoscaler maxReplicas" if hpa else "replicas"
            bad(where, "%s %d > %d partitions of %s: consumers beyond the partitions idle" % (
                what, most, fewest, min(partitions, key=partitions.get)))

        # Production refuses the development secret and needs an OIDC issuer.
        if effective.get("environment") == "production":
            auth = effective.get("auth", {})
            if not auth.get("oidc_issuer_url"):
                bad(where, "environment: production without auth.oidc_issuer_url (PETSTORE__AUTH__OIDC_ISSUER_URL)")
            if auth.get("hs256_secret") == DEVELOPMENT_SECRET:
                bad(where, "environment: production with the development HS256 secret")

    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        where = "%s/%s" % (kind, name)
        if kind == "Service":
            sel = d["spec"].get("selector", {})
            targets = [x for x in deployments if matches(sel, x["spec"]["template"]["metadata"].get("labels", {}))]
            if len(targets) != 1:
                bad(where, "selector matches %d Deployments" % len(targets))
                continue
            c = targets[0]["spec"]["template"]["spec"]["containers"][0]
            names = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for p in d["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                if isinstance(tp, str) and tp not in names:
                    bad(where, "targetPort %s is no port of Deployment/%s" % (tp, targets[0]["metadata"]["name"]))
                elif isinstance(tp, int) and tp not in names.values():
                    bad(where, "targetPort %s is no port of Deployment/%s" % (tp, targets[0]["metadata"]["name"]))
        elif kind == "Ingress":
            for rule in d["spec"].get("rules", []):
                for p in rule.get("http", {}).get("paths", []):
                    svc = p["backend"]["service"]
                    s = objs.get(("Service", svc["name"]))
                    if s is None:
                        bad(where, "path %s: no Service %s" % (p["path"], svc["name"]))
                        continue
                    port = svc["port"]
                    ok = any(port.get("number") == sp["port"] or port.get("name") == sp.get("name") for sp in s["spec"]["ports"])
                    if not ok:
                        bad(where, "path %s: Service %s has no port %s" % (p["path"], svc["name"], port))
        elif kind == "HorizontalPodAutoscaler":
            ref = d["spec"]["scaleTargetRef"]
            if ("Deployment", ref["name"]) not in objs:
                bad(where, "no Deployment " + ref["name"])
            elif "replicas" in objs[("Deployment", ref["name"])]["spec"]:
                bad(where, "Deployment/%s sets replicas: every apply would reset what the autoscaler chose" % ref["name"])
        elif kind == "PodDisruptionBudget":
            sel = d["spec"]["selector"].get("matchLabels", {})
            targets = [x for x in deployments if matches(sel, x["spec"]["template"]["metadata"].get("labels", {}))]
            if len(targets) != 1:
                bad(where, "selector matches %d Deployments" % len(targets))

    if problems:
        print("\n".join("[k8s] " + p for p in dict.fromkeys(problems)), file=sys.stderr)
        return 1
    for name, keys in sorted(external_keys.items()):
        present = ("Secret", name) in objs
        if not present:
            notes.append("Secret %s is the operator's (not rendered); the Deployments need its keys: %s" % (name, ", ".join(sorted(keys))))
    placeholders = sorted(set(re.findall(r"[a-z0-9.-]+\.invalid\b", open(args.rendered).read())))
    if placeholders:
        notes.append("placeholders to replace before applying: " + ", ".join(placeholders))
    print("[k8s] %s: %d objects; %d configuration keys and %d PETSTORE__ variables known to the project; references, mounts, ports and partitions consistent" % (
        args.overlay, len(docs), len(checked_keys), len(checked_env)), file=sys.stderr)
    for n in notes:
        print("[k8s] %s: note: %s" % (args.overlay, n), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
