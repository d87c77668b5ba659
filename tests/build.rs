#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! `make build` with `CARGO_TARGET_DIR` set: the module is built, finished (its unused exports
//! trimmed) and read where Cargo puts it, and that module is the one Envoy runs.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};
use tokengate_testkit::mint::{self, claims};
use tokengate_testkit::{expect, Envoy, SigningKey};

const MODULE: &str = "wasm32-wasip1/release/tokengate.wasm";

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Copies (not hard links: a rebuild there must not write into the normal build) what a
/// release build of the module reads from the target directory `from`: the wasm build and the
/// host build scripts and proc macros. Cargo finds it all fresh in the new place, which saves a
/// full release build (minutes on a small machine). The finished module itself is left out, so
/// `make build` has to put it there.
fn seed(from: &Path, to: &Path) {
    for dir in ["wasm32-wasip1", "release"] {
        if from.join(dir).is_dir() {
            let status = Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(from.join(dir))
                .arg(to)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "cp -a {} failed",
                from.join(dir).display()
            );
        }
    }
    let _ = std::fs::remove_file(to.join(MODULE));
}

/// A scratch directory, removed when the test ends (it holds a copy of the build).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn make_build_honours_cargo_target_dir() {
    let root = tokengate_testkit::repo_root();
    let normal = tokengate_testkit::target_dir();
    let scratch = Scratch(
        root.join("target/e2e")
            .join(format!("cargo-target-dir-{}", std::process::id())),
    );
    let dir = &scratch.0;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let started = Instant::now();
    seed(&normal, dir);
    let seeded = started.elapsed();
    let normal_module_before = modified(&normal.join(MODULE));

    // As a user who sets CARGO_TARGET_DIR globally runs it (not as a make variable; an outer
    // make's flags, when make test runs this, must not reach the inner one).
    let out = Command::new("make")
        .args(["--no-print-directory", "build"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", dir)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "make build failed:\n{output}");
    eprintln!(
        "seeding {} took {:.1} s, make build {:.1} s",
        dir.display(),
        seeded.as_secs_f64(),
        (started.elapsed() - seeded).as_secs_f64()
    );

    let module = dir.join(MODULE);
    assert!(
        module.exists(),
        "make build did not put the module in CARGO_TARGET_DIR ({}):\n{output}",
        module.display()
    );
    // The module there is the finished one: trimming it again removes nothing.
    let copy = dir.join("trim-check.wasm");
    std::fs::copy(&module, &copy).unwrap();
    let trim = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(root.join("dev/trim_exports.py"))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(trim.status.success(), "{trim:?}");
    assert!(
        std::fs::read(&copy).unwrap() == std::fs::read(&module).unwrap(),
        "make build left the module in CARGO_TARGET_DIR untrimmed (it trimmed another one):\n{}\n{output}",
        String::from_utf8_lossy(&trim.stdout)
    );
    assert_eq!(
        modified(&normal.join(MODULE)),
        normal_module_before,
        "make build with CARGO_TARGET_DIR set rewrote the module in {}:\n{output}",
        normal.display()
    );

    // And Envoy runs it. (The only test in this binary: setting the variable races nothing.)
    std::env::set_var("TOKENGATE_WASM", &module);
    let key = SigningKey::es256("k");
    let envoy = Envoy::start(&json!({
        "providers": {"main": {"issuer": "https://i.test", "audiences": ["api"], "jwks": mint::jwks(&[&key])}},
        "default": "authenticated"
    }));
    expect::passed(&envoy.get_with_token(
        "/",
        &key.sign(&claims("https://i.test", &["api"], json!({}))),
    ));
    assert_eq!(envoy.get("/", &[]).status, 401);
    drop(envoy);
    eprintln!(
        "the whole test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
