#!/usr/bin/env python3
"""The OCI image of the module, in the format Istio pulls (`oci://`): one layer holding
`plugin.wasm`, built with umoci and copied with skopeo (Debian packages).

    image.py build                 target/oci (an OCI image layout), image tokengate:<version>
    image.py push REGISTRY         e.g. registry.example.com/team; REGISTRY_FLAGS may add skopeo flags
    image.py test                  pushes into a local docker-registry on loopback, pulls it back
                                   and compares the module's digest (run by `make test`)
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Build outputs are in Cargo's target directory: $CARGO_TARGET_DIR when set, else target/.
TARGET = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
WASM = os.path.join(TARGET, "wasm32-wasip1", "release", "tokengate.wasm")
LAYOUT = os.path.join(ROOT, "target", "oci")
NAME = "tokengate"


def version():
    for line in open(os.path.join(ROOT, "Cargo.toml")):
        if line.startswith("version = "):
            return line.split('"')[1]
    return "dev"


def run(*argv):
    subprocess.run(argv, check=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def build():
    if not os.path.exists(WASM):
        sys.exit("%s is missing: run make build" % WASM)
    tag = version()
    shutil.rmtree(LAYOUT, ignore_errors=True)
    bundle = tempfile.mkdtemp(prefix="tokengate-oci-")
    shutil.rmtree(bundle)
    run("umoci", "init", "--layout", LAYOUT)
    run("umoci", "new", "--image", "%s:%s" % (LAYOUT, tag))
    run("umoci", "unpack", "--rootless", "--image", "%s:%s" % (LAYOUT, tag), bundle)
    shutil.copyfile(WASM, os.path.join(bundle, "rootfs", "plugin.wasm"))
    run("umoci", "repack", "--image", "%s:%s" % (LAYOUT, tag), bundle)
    run("umoci", "config", "--image", "%s:%s" % (LAYOUT, tag),
        "--config.label", "org.opencontainers.image.title=tokengate",
        "--config.label", "org.opencontainers.image.description=tokengate proxy-wasm filter (plugin.wasm)")
    run("umoci", "gc", "--layout", LAYOUT)
    shutil.rmtree(bundle, ignore_errors=True)
    layers = manifest(LAYOUT, tag)["layers"]
    print("built %s:%s: %d layer holding plugin.wasm (sha256 %s)" % (LAYOUT, tag, len(layers), sha256(WASM)))


def manifest(layout, tag):
    index = json.load(open(os.path.join(layout, "index.json")))
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            digest = m["digest"].split(":", 1)[1]
            return json.load(open(os.path.join(layout, "blobs", "sha256", digest)))
    sys.exit("no image %s in %s" % (tag, layout))


def push(registry, extra=()):
    tag = version()
    dest = "docker://%s/%s:%s" % (registry.rstrip("/"), NAME, tag)
    run("skopeo", "--insecure-policy", "copy", *extra, "oci:%s:%s" % (LAYOUT, tag), dest)
    print("pushed %s (in Istio: url: oci://%s/%s:%s)" % (dest, registry.rstrip("/"), NAME, tag))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test():
    build()
    work = os.path.join(ROOT, "target", "registry-test")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    port = free_port()
    config = os.path.join(work, "config.yml")
    with open(config, "w") as f:
        f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
                "http:\n  addr: 127.0.0.1:%d\n" % (os.path.join(work, "data"), port))
    registry = subprocess.Popen(["docker-registry", "serve", config], stdout=open(os.path.join(work, "registry.log"), "w"),
                                stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/v2/" % port, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("the local registry did not start; see %s/registry.log" % work)
        push("127.0.0.1:%d" % port, ["--dest-tls-verify=false"])
        pulled = os.path.join(work, "pulled")
        tag = version()
        run("skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
            "docker://127.0.0.1:%d/%s:%s" % (port, NAME, tag), "oci:%s:%s" % (pulled, tag))
        layers = manifest(pulled, tag)["layers"]
        if len(layers) != 1:
            sys.exit("the pulled image has %d layers; Istio needs one" % len(layers))
        blob = os.path.join(pulled, "blobs", "sha256", layers[0]["digest"].split(":", 1)[1])
        with tarfile.open(blob) as tar:
            names = [m.name.lstrip("./") for m in tar.getmembers() if m.isfile()]
            if names != ["plugin.wasm"]:
                sys.exit("the layer holds %s; Istio needs plugin.wasm alone" % names)
            tar.extract(next(m for m in tar.getmembers() if m.isfile()), work, filter="data")
        got, want = sha256(os.path.join(work, "plugin.wasm")), sha256(WASM)
        if got != want:
            sys.exit("digest mismatch: pulled %s, built %s" % (got, want))
        print("image test: pushed to and pulled from a local registry; one layer, plugin.wasm sha256 %s matches" % got)
    finally:
        registry.terminate()
        registry.wait(timeout=10)


def main():
    args = sys.argv[1:]
    if args == ["build"]:
        build()
    elif len(args) == 2 and args[0] == "push":
        push(args[1], os.environ.get("REGISTRY_FLAGS", "").split())
    elif args == ["test"]:
        test()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
