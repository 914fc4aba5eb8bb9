#!/usr/bin/env python3
"""The compose deployment without Docker: dev/compose-smoke.sh's engine.

Reads the compose file as `docker-compose config` resolves it (with dev/compose/no-keycloak.yml:
the demo signs its own development tokens), then starts what compose would start, as local
processes on this machine:

- every petstore service with exactly the environment and command compose gives it, the files
  compose mounts into it, and its published port; the compose service names in that
  environment and those files (postgres, kafka, nats, ...) are pointed at 127.0.0.1, where
  dev/infra.sh runs the same servers on the same ports, and the database is a fresh one;
- PostgreSQL's init scripts (the roles and schemas compose's postgres container makes);
- the gateway from dev/gateway/nginx.conf (Debian's nginx) on its published port;
- Prometheus with monitoring/prometheus.yml's jobs and rules, scraping the services;
- an OTLP/HTTP sink where Jaeger would be, so traces are exported (and dropped).

Then it runs `dev/demo.sh --target compose all` through the gateway and, after it, evaluates
every PromQL expression of every dashboard panel and alert rule through Prometheus's HTTP API:
each must evaluate without error, and the saga, HTTP and bus panels must return data.

A misspelled variable, config key, port or route in the compose file fails it: the service
refuses to start (naming the key), a port is not where compose publishes it, or the gateway
routes the demo into a 404.
"""

import glob
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import yaml

from local_gateway import local_gateway_conf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "compose-smoke")
BIN = os.environ.get("PETSTORE_BIN", os.path.join(ROOT, "target", "debug", "petstore"))
COMPOSE_FILES = ["docker-compose.enhanced.yml", "dev/compose/no-keycloak.yml"]
SERVER_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PROMETHEUS_PORT = 19090
# Where a compose service's own servers are on this machine: dev/infra.sh runs them on the
# ports compose uses inside its network.
LOCAL = "127.0.0.1"

processes = []


def log(message):
    print(f"[compose-smoke] {message}", file=sys.stderr, flush=True)


def fail(message):
    log(f"FAILED: {message}")
    sys.exit(1)


def compose_config():
    args = ["docker-compose"]
    for f in COMPOSE_FILES:
        args += ["-f", f]
    text = subprocess.run(args + ["config"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return yaml.safe_load(text)


class Localizer:
    """Rewrites compose-network addresses to this machine: `<service>:<port>` → 127.0.0.1,
    and the database compose's postgres creates → this run's fresh one."""

    def __init__(self, services, database, fresh):
        names = "|".join(sorted((re.escape(s) for s in services), key=len, reverse=True))
        self.host = re.compile(rf"(?<![\w.-])({names})(?=:\d)")
        self.database = re.compile(rf"(:5432/){re.escape(database)}\b")
        self.fresh = fresh

    def __call__(self, text):
        return self.database.sub(rf"\g<1>{self.fresh}", self.host.sub(LOCAL, text))


def mounts_of(service):
    """Bind mounts as (host path, container path)."""
    found = []
    for volume in service.get("volumes", []) or []:
        if isinstance(volume, dict) and volume.get("type") == "bind":
            found.append((volume["source"], volume["target"]))
        elif isinstance(volume, str) and ":" in volume:
            source, target = volume.split(":")[:2]
            found.append((os.path.join(ROOT, source), target))
    return found


def localized_copy(source, name, localize):
    """A copy of a mounted file or directory with its text localized."""
    target = os.path.join(OUT, "mounts", name)
    if os.path.isdir(source):
        shutil.copytree(source, target)
        files = [os.path.join(d, f) for d, _, fs in os.walk(target) for f in fs]
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy(source, target)
        files = [target]
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except UnicodeDecodeError:
            continue
        with open(path, "w") as f:
            f.write(localize(text))
    return target


def published_port(service):
    for port in service.get("ports", []) or []:
        if isinstance(port, dict):
            return int(port["published"]), int(port["target"])
        host, _, container = str(port).rpartition(":")
        return int(host or container), int(container)
    return None


def physical(channel):
    """The JetStream stream of a channel, as the NATS backend names it (letters in lower case,
    digits and `-` kept, `.` → `_`)."""
    return "".join(c if c.islower() or c.isdigit() or c == "-" else "_" if c == "." else "" for c in channel)


def fresh_nats(channels):
    """Deletes the JetStream streams of `channels` (and their dead letters) that earlier runs
    left: compose's NATS starts empty. Plain NATS protocol over a socket: no client needed."""
    import socket

    wanted = {physical(c) for c in channels} | {physical(c + ".dlq") for c in channels}
    with socket.create_connection((LOCAL, 4222), timeout=5) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # INFO
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.smoke 1\r\n')

        def request(subject, body=b""):
            sock.sendall(b"PUB %s _INBOX.smoke %d\r\n%s\r\n" % (subject.encode(), len(body), body))
            while True:
                line = reader.readline()
                if line.startswith(b"PING"):
                    sock.sendall(b"PONG\r\n")
                elif line.startswith(b"MSG"):
                    size = int(line.split()[-1])
                    payload = reader.read(size + 2)[:size]
                    return json.loads(payload or b"{}")
                elif line.startswith(b"-ERR"):
                    raise RuntimeError(line.decode())

        names = request("$JS.API.STREAM.NAMES", b"{}").get("streams") or []
        for name in names:
            if name in wanted:
                request(f"$JS.API.STREAM.DELETE.{name}")
                log(f"deleted the NATS stream {name} an earlier run left")


def fresh_cache(prefix):
    """Deletes the cache entries under `prefix` that earlier runs left (RESP over a socket)."""
    import socket

    def command(sock, reader, *args):
        sock.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        line = reader.readline()
        if line.startswith(b"*"):
            return [reader.readline() and reader.readline().rstrip(b"\r\n") for _ in range(int(line[1:]))]
        return line

    with socket.create_connection((LOCAL, 6379), timeout=5) as sock:
        reader = sock.makefile("rb")
        keys = command(sock, reader, b"KEYS", prefix.encode() + b"*")
        if keys:
            command(sock, reader, b"DEL", *keys)
            log(f"deleted {len(keys)} cache entries an earlier run left")


def psql(database_url, sql, stop_on_error=True):
    subprocess.run(
        ["psql", "-q", "-v", f"ON_ERROR_STOP={1 if stop_on_error else 0}", database_url],
        input=sql, text=True, check=True, capture_output=not stop_on_error,
    )


def start(name, args, env, log_path, cwd=ROOT):
    out = open(log_path, "ab")
    process = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    processes.append((name, process))
    return process


def stop_all():
    for _, process in reversed(processes):
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 35
    for _, process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_http(url, what, process=None, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(0.3)
    return False


class OtlpSink(http.server.BaseHTTPRequestHandler):
    """Where Jaeger's OTLP/HTTP receiver would be: accepts and drops spans."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def gateway_conf(source, localize):
    """dev/gateway/nginx.conf for a local nginx: upstreams localized, files under OUT."""
    with open(source) as f:
        return local_gateway_conf(localize(f.read()), OUT, f"{OUT}/gateway-access.log")


def prometheus_conf(source, localize, services):
    """monitoring/prometheus.yml with its targets localized, rules by absolute path, and a 2 s
    scrape interval (the run is a few minutes long; the dashboards' rate windows need several
    samples)."""
    with open(source) as f:
        config = yaml.safe_load(localize(f.read()))
    config["global"]["scrape_interval"] = "2s"
    config["global"]["evaluation_interval"] = "2s"
    config["global"]["scrape_timeout"] = "2s"
    base = os.path.dirname(source)
    config["rule_files"] = [os.path.join(base, r) for r in config.get("rule_files", [])]
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                if not target.startswith(LOCAL):
                    fail(f"prometheus job {job['job_name']}: target {target} is not a compose service")
    return yaml.safe_dump(config)


def expressions():
    """(where, title, expr) of every dashboard panel target and alert rule."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "monitoring/grafana/dashboards/*.json"))):
        with open(path) as f:
            dashboard = json.load(f)
        stack = list(dashboard.get("panels", []))
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((os.path.basename(path), panel.get("title", ""), target["expr"]))
    for path in sorted(glob.glob(os.path.join(ROOT, "monitoring/rules/*.yml"))):
        with open(path) as f:
            rules = yaml.safe_load(f)
        for group in rules.get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("alert") or rule.get("record")
                found.append((os.path.basename(path), name, str(rule["expr"])))
    return found


def grafana_to_promql(expr):
    """Grafana's variables as Grafana would fill them for "All" over a few minutes."""
    for variable, value in (("$__rate_interval", "1m"), ("$__interval", "10s"), ("$__range", "5m")):
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def query(expr):
    url = f"http://{LOCAL}:{PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


# The dashboard panels that must show data after the demo: those of sagas, HTTP and the bus.
# A panel shows data when any of its queries returns a series. Alert rules are conditions:
# empty is their healthy answer; they only have to evaluate.
MUST_SHOW = re.compile(r"petstore_(saga|sagas|http|messages_(published|consumed)|message_handler)_")
# Panels of those that are empty while nothing goes wrong — the demo's drills fail payments and
# handlers, not HTTP requests, and no step outlives its timeout.
EMPTY_WHEN_HEALTHY = {"5xx ratio by service", "Step timeouts"}


def check_panels():
    failures, empty = [], {}
    shown = {}
    for where, title, expr in expressions():
        answer = query(grafana_to_promql(expr))
        if answer.get("status") != "success":
            failures.append(f"{where} / {title}: {answer.get('error')}\n    {expr}")
            continue
        key = (where, title)
        has_data = bool(answer["data"]["result"])
        shown[key] = shown.get(key, False) or has_data
        if where.endswith(".json") and MUST_SHOW.search(expr) and title not in EMPTY_WHEN_HEALTHY:
            empty.setdefault(key, True)
    no_data = [f"{w} / {t}" for (w, t) in empty if not shown.get((w, t))]
    log(f"{len(expressions())} PromQL expressions evaluated; {sum(shown.values())} panels and rules with data")
    return failures, no_data


def warm_up(base, env):
    """One order through the saga before the demo. The test broker (tansu) answers a consumer
    group's first join only after about half of `session.timeout.ms` — 22 s at librdkafka's
    default, which compose keeps — so the services' Kafka consumers take that long to get
    their partitions; a real Kafka assigns them at once. The demo starts when they have."""
    token = subprocess.run([BIN, "token", "--sub", "warm-up", "--role", "customer"], env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    with urllib.request.urlopen(f"{base}/pets?available=true&limit=1", timeout=10) as r:
        pet = json.load(r)["items"][0]["pet_id"]
    body = json.dumps({"pet_id": pet, "payment_method": "declined_card", "shipping_address": {
        "street": "1 Warm-up Way", "city": "Springfield", "postal_code": "1", "country": "US"}}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{base}/orders", body, headers), timeout=30) as r:
        order = json.load(r)["order_id"]
    started = time.time()
    while time.time() - started < 180:
        try:
            request = urllib.request.Request(f"{base}/orders/{order}/status", headers=headers)
            with urllib.request.urlopen(request, timeout=10) as r:
                if json.load(r)["status"] in ("completed", "compensated", "failed"):
                    log(f"warm-up order through the saga in {time.time() - started:.0f} s")
                    return
        except urllib.error.HTTPError:
            pass
        time.sleep(0.5)
    fail("the warm-up order's saga did not end in 180 s")


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    config = compose_config()
    services = config["services"]
    petstore = {n: s for n, s in services.items() if s.get("image", "").startswith("petstore")}
    if not petstore:
        fail("no petstore service in the compose file")
    database = services["postgres"]["environment"]["POSTGRES_DB"]
    fresh = f"smoke_{int(time.time())}_{os.getpid()}"
    localize = Localizer(services, database, fresh)
    server = SERVER_URL.rsplit("/", 1)[0]

    log(f"database {fresh} with the compose postgres container's init scripts")
    psql(SERVER_URL, f"CREATE DATABASE {fresh}")
    try:
        for source, target in mounts_of(services["postgres"]):
            if target == "/docker-entrypoint-initdb.d":
                for script in sorted(glob.glob(os.path.join(source, "*.sql"))):
                    with open(script) as f:
                        sql = re.sub(rf"\bDATABASE {re.escape(database)}\b", f"DATABASE {fresh}", f.read())
                    # The roles are the cluster's: left from an earlier run, CREATE ROLE fails
                    # and the rest of the script still applies.
                    psql(f"{server}/{fresh}", sql, stop_on_error=False)
        return run(services, petstore, localize, f"{server}/{fresh}")
    finally:
        stop_all()
        subprocess.run(["psql", "-q", SERVER_URL, "-c", f"DROP DATABASE IF EXISTS {fresh} WITH (FORCE)"],
                       capture_output=True)


def run(services, petstore, localize, database_url):
    sink = http.server.ThreadingHTTPServer((LOCAL, 4318), OtlpSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()

    # Servers as compose's fresh containers have them (Kafka: dev/compose-smoke.sh restarted it).
    with open(next(s for s, t in mounts_of(next(iter(petstore.values()))) if os.path.isdir(s)) + "/petstore.yaml") as f:
        petstore_config = yaml.safe_load(f)
    messaging = petstore_config.get("messaging", {})
    nats_channels = [c for c, v in messaging.get("channels", {}).items() if (v or {}).get("backend") == "nats"]
    if nats_channels:
        fresh_nats(nats_channels)
    fresh_cache(petstore_config.get("cache", {}).get("key_prefix", "petstore:"))

    combined = os.path.join(OUT, "services.log")
    envs, ports = {}, {}
    for name, service in sorted(petstore.items()):
        env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
        copies = {}
        for i, (source, target) in enumerate(mounts_of(service)):
            copies[target] = localized_copy(source, f"{name}-{i}", localize)
        for key, value in (service.get("environment") or {}).items():
            value = localize("" if value is None else str(value))
            for target, copy in copies.items():
                if value == target or value.startswith(target + "/"):
                    value = copy + value[len(target):]
            env[key] = value
        published = published_port(service)
        if published is None:
            fail(f"{name}: publishes no port")
        if published[0] != published[1]:
            fail(f"{name}: published port {published[0]} is not the port it listens on ({published[1]})")
        ports[name] = published[0]
        envs[name] = env
        command = service.get("command") or []
        log(f"starting {name}: petstore {' '.join(command)} on :{published[0]}")
        start(name, [BIN, *command], env, combined)
    for name, port in ports.items():
        process = next(p for n, p in processes if n == name)
        if not wait_http(f"http://{LOCAL}:{port}/ready", name, process):
            with open(combined, errors="replace") as f:
                tail = [line for line in f if f'"{name}"' in line or "Error" in line][-15:]
            fail(f"{name} is not ready on :{port}:\n" + "".join(tail))
    log("every service is ready")

    gateway = services["gateway"]
    conf_source = next(s for s, t in mounts_of(gateway) if t.endswith("nginx.conf"))
    conf = os.path.join(OUT, "nginx.conf")
    with open(conf, "w") as f:
        f.write(gateway_conf(conf_source, localize))
    gateway_port = published_port(gateway)[0]
    nginx = start("gateway", ["nginx", "-c", conf, "-p", OUT, "-g", "daemon off;"], os.environ.copy(),
                  os.path.join(OUT, "gateway.log"))
    if not wait_http(f"http://{LOCAL}:{gateway_port}/health", "gateway", nginx, limit=20):
        fail("the gateway did not start: " + open(os.path.join(OUT, "gateway.log")).read())

    prometheus = services["prometheus"]
    prom_source = next(s for s, t in mounts_of(prometheus) if t.endswith("prometheus.yml"))
    prom_conf = os.path.join(OUT, "prometheus.yml")
    with open(prom_conf, "w") as f:
        f.write(prometheus_conf(prom_source, localize, petstore))
    prom = start("prometheus", ["prometheus", f"--config.file={prom_conf}", f"--storage.tsdb.path={OUT}/tsdb",
                                f"--web.listen-address={LOCAL}:{PROMETHEUS_PORT}"],
                 os.environ.copy(), os.path.join(OUT, "prometheus.log"))
    if not wait_http(f"http://{LOCAL}:{PROMETHEUS_PORT}/-/ready", "prometheus", prom, limit=30):
        fail("Prometheus did not start: see " + os.path.join(OUT, "prometheus.log"))

    order = envs["order"]
    demo_env = {**os.environ, **{k: v for k, v in order.items() if k.startswith("PETSTORE")}}
    demo_env.update({
        "PETSTORE_BIN": BIN,
        "PETSTORE_LOG": combined,
        "METRICS_URLS": " ".join(f"http://{LOCAL}:{p}" for p in ports.values()),
        # The order service's configuration (in demo_env) is what the rebuild needs.
        "REBUILD_CMD": f"{BIN} rebuild-projections",
    })
    warm_up(f"http://{LOCAL}:{gateway_port}", demo_env)
    log(f"dev/demo.sh --target compose all, through the gateway on :{gateway_port}")
    demo = subprocess.run(["dev/demo.sh", "--target", "compose", "--base-url", f"http://{LOCAL}:{gateway_port}", "all"],
                          cwd=ROOT, env=demo_env)
    if demo.returncode != 0:
        fail("the demo failed against the compose deployment")
    for name, process in processes:
        if process.poll() is not None:
            fail(f"{name} exited during the demo")

    time.sleep(6)  # three scrapes after the demo's last request
    failures, no_data = check_panels()
    for failure in failures:
        log(f"PromQL error: {failure}")
    for panel in no_data:
        log(f"no data: {panel}")
    if failures or no_data:
        fail(f"{len(failures)} expressions failed, {len(no_data)} saga/HTTP/bus panels without data")
    log("the compose deployment passed the demo; every dashboard and alert expression evaluates")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:
        fail(f"{' '.join(map(str, e.cmd))}: exit {e.returncode}\n{e.stderr or ''}")
