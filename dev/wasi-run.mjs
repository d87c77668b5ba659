// Runs a wasm32-wasip1 test binary in Node's V8 (the engine Envoy runs the filter in), as
// cargo's runner: `make unit-wasm` tests the code paths only the Wasm build has (SIMD).
// Usage: node --single-threaded-gc dev/wasi-run.mjs BINARY.wasm [ARGS...]
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, env } from "node:process";
import process from "node:process";

const [binary, ...args] = argv.slice(2);
const wasi = new WASI({ version: "preview1", args: [binary, ...args], env, preopens: { "/": "/" }, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(binary));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
