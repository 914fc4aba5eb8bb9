"""The pet store's benchmarks on this machine (run through dev/bench.sh).

Starts the distributed topology on loopback — the six services as `petstore serve <name>`
processes (release build), the nginx gateway in front of them on :8080 (dev/gateway/nginx.conf
with the compose host names pointed at 127.0.0.1), PostgreSQL (a fresh database), Redis (a
fresh key prefix) and the broker the saga rides (`--broker nats|kafka`, fresh topic names) —
then measures, in this order:

  idle     CPU of the whole stack (services, gateway, broker, PostgreSQL, Redis) over 20 s of
           doing nothing, as a share of the machine, and each service's resident memory;
  single   one saga at a time (50 of them): what a single saga costs end to end;
  saga     order sagas open loop at --rate for --duration (petstore-load saga);
  catalog  GET /pets?limit=20 through the gateway, closed loop (petstore-load catalog).

Rate limits are raised out of the way (the benchmark measures the system, not its quotas)
and enough pets are listed first (`petstore seed-pets`) for every saga to complete. Each
figure is printed, and at the end as BENCHMARKS.md table rows with the date, the commit, the
machine and the exact command.
"""

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

from local_gateway import local_gateway_conf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
SERVICES = [("inventory", 8084), ("order", 8081), ("payment", 8082), ("delivery", 8083),
            ("notification", 8085), ("orchestrator", 8086)]
GATEWAY = "http://127.0.0.1:8080"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS = []


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def fail(message):
    log(f"FAILED: {message}")
    sys.exit(1)


def start(name, argv, env, out):
    with open(out, "wb") as logfile:
        proc = subprocess.Popen(argv, env=env, stdout=logfile, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
    PROCS.append((name, proc))
    return proc


def stop_all():
    for _, proc in reversed(PROCS):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 15
    for _, proc in PROCS:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()


def ready(url, proc, limit):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(0.2)
    return False


def psql(sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", SERVER_URL, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def config(args, database, prefix):
    """The PETSTORE_CONFIG layer over config/distributed.yaml."""
    if args.broker == "kafka":
        # Test-broker settings (tansu answers an empty fetch only after fetch.wait.max.ms);
        # the product's defaults suit a real Kafka.
        broker = {"default_backend": "kafka",
                  "kafka": {"brokers": os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092"),
                            "client": {"fetch.wait.max.ms": "10"}}}
    else:
        broker = {"default_backend": "nats", "nats": {"url": os.environ.get("NATS_URL", "nats://127.0.0.1:4222")}}
    quota = {"requests": 1000000, "per": "1s", "burst": 1000000}
    return {
        "log": {"level": "warn", "format": "json"},
        "http": {"host": "127.0.0.1"},
        "database": {"url": f"postgres://postgres@127.0.0.1:5432/{database}"},
        "cache": {"backend": "redis", "redis_url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
                  "key_prefix": f"{prefix}:"},
        "rate_limits": {"authenticated": quota, "anonymous": quota, "routes": {"POST /orders": quota}},
        "messaging": dict(broker, topic_prefix=f"{prefix}."),
    }


def gateway_conf(out):
    """dev/gateway/nginx.conf for a local nginx: the service host names pointed at 127.0.0.1,
    one worker, files under `out`."""
    text = open(os.path.join(ROOT, "dev/gateway/nginx.conf")).read()
    names = "|".join(name for name, _ in SERVICES)
    text = re.sub(rf"\b({names}):(\d+)", r"127.0.0.1:\2", text)
    return "worker_processes 1;\n" + local_gateway_conf(text, out, "off")


def pids_of(names):
    found = []
    for name in names:
        result = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
        found += [int(p) for p in result.stdout.split()]
    return found


def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def components(args):
    """Every process of the stack, by component."""
    parts = {name: [proc.pid] for name, proc in PROCS if name in dict(SERVICES)}
    parts["gateway"] = [proc.pid for name, proc in PROCS if name == "gateway"] + pids_of(["nginx"])
    parts["broker"] = pids_of(["tansu"] if args.broker == "kafka" else ["nats-server"])
    parts["postgres"] = pids_of(["postgres"])
    parts["redis"] = pids_of(["redis-server"])
    return {k: sorted(set(v)) for k, v in parts.items()}


def cpu_start(args):
    """Where each component's CPU time stands now."""
    parts = components(args)
    return parts, {k: sum(ticks(p) for p in pids) for k, pids in parts.items()}, time.time()


def cpu_since(start_state):
    """Each component's CPU since `cpu_start`, as a share of the whole machine."""
    parts, before, started = start_state
    capacity = (time.time() - started) * CLK_TCK * os.cpu_count()
    return {k: 100.0 * (sum(ticks(p) for p in pids) - before[k]) / capacity for k, pids in parts.items()}


def describe(share, top=None):
    ranked = sorted(share.items(), key=lambda kv: -kv[1])[:top]
    return f"{sum(share.values()):.1f} % (" + ", ".join(f"{k} {v:.1f}" for k, v in ranked) + ")"


def load(args, mode, extra, name):
    out = os.path.join(args.out, f"{name}.json")
    argv = [os.path.join(args.bin, "petstore-load"), mode, "--url", GATEWAY, "--json", out, "--quiet"] + extra
    log("$ " + " ".join(argv[:1] + [mode] + extra))
    result = subprocess.run(argv, cwd=ROOT, env=args.env)
    if not os.path.exists(out):
        fail(f"petstore-load {mode} wrote no figures (exit {result.returncode})")
    figures = json.load(open(out))
    figures["exit"] = result.returncode
    figures["command"] = "petstore-load " + " ".join([mode] + extra)
    return figures


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=["nats", "kafka"], default="nats")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", default="60s")
    parser.add_argument("--scenarios", default="idle,single,saga,catalog")
    parser.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    parser.add_argument("--pets", type=int, help="pets to list first (default: enough for every saga)")
    parser.add_argument("--hold", action="store_true",
                        help="keep the stack up after the scenarios, for profiling, until interrupted")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    seconds = int(re.fullmatch(r"(\d+)s", args.duration).group(1)) if re.fullmatch(r"\d+s", args.duration) else 60
    pets = args.pets or int(args.rate * seconds * 1.05) + 200
    args.out = tempfile.mkdtemp(prefix="petstore-bench.")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    commit += "+changes" if dirty else ""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    database = prefix
    psql(f"CREATE DATABASE {database}")
    conf = os.path.join(args.out, "bench.yaml")
    with open(conf, "w") as f:
        json.dump(config(args, database, prefix), f)  # JSON is YAML
    env = dict(os.environ, PETSTORE_ENV="distributed", PETSTORE_CONFIG=conf)
    env.pop("RUST_LOG", None)
    args.env = env
    petstore = os.path.join(args.bin, "petstore")
    rows = []
    try:
        for name, port in SERVICES:
            proc = start(name, [petstore, "serve", name], env, os.path.join(args.out, f"{name}.log"))
            if not ready(f"http://127.0.0.1:{port}/ready", proc, 60):
                fail(f"{name} is not ready on :{port}: " + open(os.path.join(args.out, f"{name}.log")).read()[-2000:])
        conf_path = os.path.join(args.out, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(gateway_conf(args.out))
        gateway = start("gateway", ["nginx", "-c", conf_path, "-p", args.out, "-g", "daemon off;"], env,
                        os.path.join(args.out, "gateway.log"))
        if not ready(f"{GATEWAY}/health", gateway, 20):
            fail("the gateway did not start: " + open(os.path.join(args.out, "gateway.log")).read())
        log(f"stack up ({args.broker}); figures and logs in {args.out}")

        token = subprocess.run([petstore, "token", "--sub", "bench-ops", "--role", "admin"], env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        # One saga first: Kafka consumer groups join on first use.
        load(args, "saga", ["--concurrency", "1", "--count", "3", "--mix", "credit_card=1"], "warmup")

        if "idle" in scenarios:
            # Settled: start-up work (consumer joins, first flag and backlog rounds) is over.
            time.sleep(15)
            start_state = cpu_start(args)
            time.sleep(20)
            idle = describe(cpu_since(start_state))
            rss = {name: rss_mb(proc.pid) for name, proc in PROCS if name in dict(SERVICES)}
            memory = ", ".join(f"{k} {v:.0f}" for k, v in rss.items())
            log(f"idle: {idle} of the machine; RSS MB: {memory}")
            rows.append(("idle stack, 20 s", "—", f"CPU {idle}; RSS MB {memory}"))

        if "single" in scenarios:
            f = load(args, "saga", ["--concurrency", "1", "--count", "50", "--mix", "credit_card=1"], "single")
            rows.append(("one saga at a time (50)", f["command"],
                         f"POST→end p50 {f['p50_ms']:.1f} / p99 {f['p99_ms']:.1f} ms; saga p50 {f['saga_p50_ms']:.1f} ms"))

        if "saga" in scenarios:
            log(f"listing {pets} pets")
            seed = subprocess.run([petstore, "seed-pets", "--count", str(pets), "--prefix", prefix, "--concurrency",
                                   "32", "--url", GATEWAY, "--token", token], env=env, cwd=ROOT)
            if seed.returncode != 0:
                fail("seed-pets failed")
            rate = f"{args.rate:g}"
            start_state = cpu_start(args)
            f = load(args, "saga", ["--rate", rate, "--duration", args.duration, "--mix", "credit_card=1"], "saga")
            busy = describe(cpu_since(start_state), top=5)
            rows.append((f"sagas open loop at {rate}/s for {args.duration}", f["command"],
                         f"**{f['completed_per_s']:.0f} completed/s**; POST→end p50 {f['p50_ms']:.0f} / p99 "
                         f"{f['p99_ms']:.0f} / max {f['max_ms']:.0f} ms; lost {f['lost']}; errors "
                         f"{sum(f['errors'].values())}; CPU {busy}"))

        if "catalog" in scenarios:
            f = load(args, "catalog", ["--concurrency", "32", "--duration", "20s", "--path", "/pets?limit=20"],
                     "catalog")
            per_s = f["requests_per_s"]
            rows.append(("GET /pets?limit=20 through the gateway, 32 in flight", f["command"],
                         f"{per_s:.0f} req/s; p50 {f['p50_ms']:.1f} / p99 {f['p99_ms']:.1f} ms"))
        if args.hold:
            log(f"holding the stack up (gateway {GATEWAY}); Ctrl-C or SIGTERM ends it")
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    finally:
        stop_all()
        subprocess.run(["psql", "-q", SERVER_URL, "-c", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    today = datetime.date.today().isoformat()
    command = "dev/bench.sh " + " ".join(sys.argv[1:])
    print(f"\n<!-- {command} · {today} · {commit} · {machine()} · saga on {args.broker} -->")
    print("| scenario | load | result |")
    print("|---|---|---|")
    for scenario, cmd, result in rows:
        print(f"| {scenario} | `{cmd}` | {result} |" if cmd != "—" else f"| {scenario} | — | {result} |")


if __name__ == "__main__":
    main()
