;; The least a proxy-wasm HTTP filter can be: `make bench` measures it as the floor under
;; every Wasm row (what Envoy spends on any Wasm filter: a context per request, a call into V8
;; per exported callback), next to native jwt_authn. It exports the callbacks tokengate keeps
;; per request (context create, request headers, delete) and does nothing in them.
;; Built with wat2wasm (Debian's wabt), which `make bench` installs.
(module
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  ;; Envoy asks the module for memory to hand data over; a bump allocator is enough here.
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $at))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_context_create") (param i32 i32))
  ;; 0: Continue.
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_delete") (param i32))
)
