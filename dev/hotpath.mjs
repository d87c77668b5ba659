// Runs dev/hotpath (built for wasm32-wasip1) in Node's V8, the engine Envoy
// runs the filter in. Usage: node --single-threaded-gc dev/hotpath.mjs MODULE.wasm DIR
// (Node 20 can crash at exit after wasm work with concurrent GC threads.)
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv } from "node:process";
import process from "node:process";

const [module, dir] = argv.slice(2);
const wasi = new WASI({ version: "preview1", args: ["hotpath", "/bench"], preopens: { "/bench": dir }, returnOnExit: true });
const wasm = await WebAssembly.compile(await readFile(module));
const instance = await WebAssembly.instantiate(wasm, wasi.getImportObject());
process.exitCode = wasi.start(instance);
