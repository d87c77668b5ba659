#!/usr/bin/env python3
"""Removes the proxy-wasm callbacks tokengate does not use from the built module's exports.

    trim_exports.py MODULE.wasm

Envoy calls a module's callback only when the module exports it, and every call into V8 costs
CPU: a Rust proxy-wasm module exports all of the SDK's callbacks (response headers and body,
log, done, ...), whose defaults do nothing, so every request paid for four or more empty calls
into the VM (about 1.2 us per request in `make bench`). The SDK gives no way to leave them out,
so `make build` removes them from the export section after linking. The functions stay in the
code; only the names go, and Envoy then skips those callbacks exactly as it does for a module
that never had them.

KEEP is every export tokengate needs. A callback implemented later in src/ must be added here,
or Envoy will never call it (`make test` would show it). The module is rewritten in place
(atomically) and a second run changes nothing.
"""

import os
import sys

KEEP = {
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_http_call_response",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    # Frees the request context (and forgets a parked request whose client went away).
    "proxy_on_delete",
}

EXPORT_SECTION = 7


def uleb(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def encode_uleb(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def trim(module):
    if module[:8] != b"\0asm\x01\0\0\0":
        sys.exit("not a WebAssembly module (version 1)")
    out = bytearray(module[:8])
    at = 8
    kept, dropped = [], []
    while at < len(module):
        section = module[at]
        size, body_at = uleb(module, at + 1)
        body = module[body_at:body_at + size]
        at = body_at + size
        if section == EXPORT_SECTION:
            count, i = uleb(body, 0)
            entries = []
            for _ in range(count):
                start = i
                name_len, i = uleb(body, i)
                name = body[i:i + name_len].decode()
                i += name_len + 1  # the name, then the export kind
                _, i = uleb(body, i)  # the index
                (kept if name in KEEP else dropped).append(name)
                if name in KEEP:
                    entries.append(body[start:i])
            body = encode_uleb(len(entries)) + b"".join(entries)
        out += bytes([section]) + encode_uleb(len(body)) + body
    missing = KEEP - set(kept)
    if missing:
        sys.exit("the module does not export %s: is it a tokengate build?" % ", ".join(sorted(missing)))
    return bytes(out), dropped


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    module = open(path, "rb").read()
    trimmed, dropped = trim(module)
    if dropped:
        tmp = path + ".trim"
        with open(tmp, "wb") as f:
            f.write(trimmed)
        os.chmod(tmp, os.stat(path).st_mode)
        os.replace(tmp, path)
        print("%s: removed %d unused exports (%s)" % (path, len(dropped), ", ".join(sorted(dropped))))


if __name__ == "__main__":
    main()
