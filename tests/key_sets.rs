#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Key sets of any size in a real Envoy with two workers: a large remote set costs bounded
//! memory (measured from `/proc`, against the same Envoy with the IdP's own keys only), its
//! first keys verify, a refetch never stalls requests, a set past its memory bound is refused
//! while the previous keys stay in use, and a second provider with inline keys keeps
//! answering throughout.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokengate_testkit::devidp::{Endpoint, RunningIdp};
use tokengate_testkit::envoy::{write_ecds, EnvoyOptions};
use tokengate_testkit::idp::{self, PROJECT};
use tokengate_testkit::mint::{self, claims, SigningKey};
use tokengate_testkit::{expect, Envoy};

const INLINE_ISSUER: &str = "https://inline.test";
/// The bound the issue sets for Envoy's growth from a large key set, with a wide margin: the
/// filter before these bounds grew by about 1.5 GiB for 1,800 keys.
const MAX_GROWTH_MIB: u64 = 64;

/// A remote provider served by `idp` (its `remote_jwks` merged with `remote`, its own members
/// with `provider`) and an inline provider signed by `inline`.
fn config(idp: &RunningIdp, inline: &SigningKey, remote: Value, provider: Value) -> Value {
    let mut remote_jwks =
        json!({"cluster": "idp", "uri": format!("{}/oauth/v2/keys", idp.issuer())});
    for (k, v) in remote.as_object().unwrap() {
        remote_jwks[k] = v.clone();
    }
    let mut zitadel = json!({
        "issuer": idp.issuer(),
        "zitadel": {"project_id": PROJECT},
        "remote_jwks": remote_jwks
    });
    for (k, v) in provider.as_object().unwrap() {
        zitadel[k] = v.clone();
    }
    json!({
        "providers": {
            "zitadel": zitadel,
            "inline": {"issuer": INLINE_ISSUER, "jwks": mint::jwks(&[inline])}
        },
        "default": "authenticated"
    })
}

fn start(idp: &RunningIdp, inline: &SigningKey, remote: Value, provider: Value) -> Envoy {
    Envoy::start_with(
        EnvoyOptions::new(&config(idp, inline, remote, provider))
            .cluster("idp", idp.port())
            .concurrency(2),
    )
}

fn inline_token(key: &SigningKey) -> String {
    key.sign(&claims(INLINE_ISSUER, &[], json!({"jti": random_id()})))
}

/// A new id on every call: tokens are never cache hits, kids never known.
fn random_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        tokengate_testkit::now(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A token of the remote provider's issuer signed by a key it never published: every such
/// `kid` asks for a refetch.
fn unknown_kid_token(idp: &RunningIdp) -> String {
    let stranger = SigningKey::es256(&format!("unknown-{}", random_id()));
    stranger.sign(&claims(idp.issuer(), &[], json!({})))
}

/// A key of the large set, published as its `index`-th retired key, that signs tokens of
/// the remote provider: a key deep in the set, not the IdP's own one listed first.
fn key_deep_in_the_set(idp: &RunningIdp, index: usize) -> SigningKey {
    let key = SigningKey::es256(&format!("deep-{}", index));
    idp.idp().publish_among_retired(index, key.jwk());
    key
}

fn remote_token(idp: &RunningIdp, key: &SigningKey) -> String {
    key.sign(&claims(
        idp.issuer(),
        &[PROJECT],
        json!({"jti": random_id()}),
    ))
}

/// Lets every VM load what was published (their ticks are at most a second apart) and the
/// allocator settle, then reads Envoy's resident memory.
fn settled_rss_kib(envoy: &Envoy) -> u64 {
    std::thread::sleep(Duration::from_millis(2500));
    envoy.rss_kib()
}

/// Sends inline-provider requests from another thread until the returned guard is dropped,
/// counting the ones that did not pass.
struct InlineTraffic<'a> {
    stop: &'a AtomicBool,
    sent: &'a AtomicU64,
    failed: &'a AtomicU64,
}

impl InlineTraffic<'_> {
    fn run(&self, envoy: &Envoy, key: &SigningKey) {
        while !self.stop.load(Ordering::SeqCst) {
            let r = envoy.get_with_token("/", &inline_token(key));
            self.sent.fetch_add(1, Ordering::SeqCst);
            if r.status != 200 {
                eprintln!("inline provider answered {}: {}", r.status, r.body);
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Stops the inline traffic when dropped, also when an assertion fails in the body.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `body` while a thread keeps asking with inline-provider tokens; every one must pass.
fn with_inline_traffic(envoy: &Envoy, key: &SigningKey, body: impl FnOnce()) {
    let (stop, sent, failed) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    let traffic = InlineTraffic {
        stop: &stop,
        sent: &sent,
        failed: &failed,
    };
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| traffic.run(envoy, key));
        body();
    });
    assert!(sent.load(Ordering::SeqCst) > 0);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "the inline provider failed {} of {} requests",
        failed.load(Ordering::SeqCst),
        sent.load(Ordering::SeqCst)
    );
}

/// Warms up the Envoy with a large key set and the one with the IdP's own keys (each verifies
/// a token of each provider), then asserts Envoy's RSS growth from the large set stays under
/// [`MAX_GROWTH_MIB`].
fn assert_growth_bounded(
    (large, large_idp): (&Envoy, &RunningIdp),
    (small, small_idp): (&Envoy, &RunningIdp),
    inline: &SigningKey,
    what: &str,
) {
    warm_up(large, large_idp, inline);
    warm_up(small, small_idp, inline);
    let (large_kib, small_kib) = (settled_rss_kib(large), settled_rss_kib(small));
    eprintln!(
        "RSS: {} KiB with {}, {} KiB with the IdP's own keys",
        large_kib, what, small_kib
    );
    let growth = large_kib.saturating_sub(small_kib) / 1024;
    assert!(
        growth < MAX_GROWTH_MIB,
        "Envoy grew by {} MiB for {}",
        growth,
        what
    );
}

fn warm_up(envoy: &Envoy, idp: &RunningIdp, inline: &SigningKey) {
    expect::passed(&envoy.get_with_token("/", &idp::token(idp, "svc-reader")));
    expect::passed(&envoy.get_with_token("/", &inline_token(inline)));
}

#[test]
fn a_set_of_1800_keys_is_read_up_to_max_keys_and_costs_little_memory() {
    let inline = SigningKey::es256("inline-1");
    let (large_idp, small_idp) = (idp::start(), idp::start());
    // Without kids, 1,800 minimal JWKs fit the default max_bytes (248 KiB).
    large_idp.idp().publish_retired_es256(1800, false);
    // The 61st key of the set (with a kid, among kid-less ones) is read: max_keys is 100.
    let deep = key_deep_in_the_set(&large_idp, 59);
    let small = start(&small_idp, &inline, json!({}), json!({}));
    let large = start(&large_idp, &inline, json!({}), json!({}));
    with_inline_traffic(&large, &inline, || {
        assert_growth_bounded(
            (&large, &large_idp),
            (&small, &small_idp),
            &inline,
            "a set of 1,800 keys",
        );
        for _ in 0..4 {
            expect::passed(&large.get_with_token("/", &remote_token(&large_idp, &deep)));
        }
        // An unknown kid is checked against kid-less keys (16 at most) and refused, without
        // a refetch: nothing to stall on.
        assert_never_stalled(&large, &large_idp, Duration::from_secs(2), Refetch::No);
    });
    // The IdP's own key comes first; the 1,702 JWKs after the first 100 are not read.
    assert_eq!(
        large.counter("wasmcustom.tokengate.jwks.zitadel.keys_over_max"),
        1702
    );
    assert!(large.log().contains("not read (max_keys)"));
    let memory = large.stat("wasmcustom.tokengate.jwks.zitadel.key_memory_bytes");
    assert!(
        memory > 0 && memory < 3 * 1024 * 1024,
        "key memory of 100 keys in three VMs: {} bytes",
        memory
    );
}

#[test]
fn ten_thousand_keys_with_raised_bounds_stay_bounded_and_a_refetch_never_stalls() {
    let inline = SigningKey::es256("inline-1");
    let (large_idp, small_idp) = (idp::start(), idp::start());
    large_idp.idp().publish_retired_es256(10_000, true);
    let deep = key_deep_in_the_set(&large_idp, 7_000);
    let raised = json!({
        "max_bytes": 4 * 1024 * 1024,
        "timeout_ms": 2000,
        "unknown_kid_refetch_seconds": 1
    });
    let all_keys = json!({"max_keys": 20_000});
    let small = start(&small_idp, &inline, raised.clone(), all_keys.clone());
    let large = start(&large_idp, &inline, raised, all_keys);
    with_inline_traffic(&large, &inline, || {
        assert_growth_bounded(
            (&large, &large_idp),
            (&small, &small_idp),
            &inline,
            "a set of 10,000 keys",
        );
        for _ in 0..4 {
            expect::passed(&large.get_with_token("/", &remote_token(&large_idp, &deep)));
        }
        // Unknown kids ask for refetches of the same 2 MB body.
        assert_never_stalled(&large, &large_idp, Duration::from_secs(2), Refetch::Yes);
    });
    assert_eq!(
        large.counter("wasmcustom.tokengate.jwks.zitadel.keys_over_max"),
        0
    );
    assert!(large.log().contains("fetched 10002 key(s)"));
}

/// Whether tokens with unknown kids make the filter refetch the set.
#[derive(PartialEq)]
enum Refetch {
    /// The set's keys carry kids: an unknown one asks for a refetch.
    Yes,
    /// The set holds keys without kid: an unknown kid is tried against them and refused.
    No,
}

/// For six seconds, tokens with unknown kids and valid ones: the unknown kids are refused
/// (after at least one refetch, or without any, as `refetch` says), no request is held up for
/// longer than the callout `timeout`, and every valid token passes.
fn assert_never_stalled(envoy: &Envoy, idp: &RunningIdp, timeout: Duration, refetch: Refetch) {
    let fetches = idp.idp().hits(Endpoint::Keys);
    let refused_with = match refetch {
        Refetch::Yes => "no signing key has kid",
        Refetch::No => "the signature is invalid",
    };
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(6) {
        let sent = Instant::now();
        let r = envoy.get_with_token("/", &unknown_kid_token(idp));
        slowest = slowest.max(sent.elapsed());
        expect::invalid_token(&r, refused_with);
        let sent = Instant::now();
        expect::passed(&envoy.get_with_token("/", &idp::token(idp, "svc-reader")));
        slowest = slowest.max(sent.elapsed());
    }
    let refetched = idp.idp().hits(Endpoint::Keys) > fetches;
    assert_eq!(
        refetched,
        refetch == Refetch::Yes,
        "unknown kids refetched the set: {}",
        refetched
    );
    assert!(
        slowest < timeout,
        "a request took {:?} (callout timeout {:?})",
        slowest,
        timeout
    );
}

#[test]
fn a_set_past_its_memory_bound_is_refused_and_the_previous_keys_stay() {
    let inline = SigningKey::es256("inline-1");
    let idp = idp::start();
    let envoy = start(
        &idp,
        &inline,
        json!({"max_bytes": 4 * 1024 * 1024}),
        json!({"max_keys": 10_000, "max_key_memory_bytes": 262_144}),
    );
    warm_up(&envoy, &idp, &inline);
    idp.idp().publish_retired_es256(3000, true);
    with_inline_traffic(&envoy, &inline, || {
        // An unknown kid fetches the grown set, which is refused whole.
        let r = envoy.get_with_token("/", &unknown_kid_token(&idp));
        expect::invalid_token(&r, "no signing key has kid");
        assert_eq!(
            envoy.counter("wasmcustom.tokengate.jwks.zitadel.fetch_failure.oversized"),
            1
        );
        for _ in 0..20 {
            expect::passed(&envoy.get_with_token("/", &idp::token(&idp, "svc-reader")));
        }
    });
    assert!(envoy.log().contains("max_key_memory_bytes"));
}

#[test]
fn the_key_memory_gauge_counts_each_vm_once_across_configuration_updates() {
    let inline = SigningKey::es256("inline-1");
    let idp = idp::start();
    let with_default = |default: &str| {
        let mut c = config(&idp, &inline, json!({}), json!({}));
        c["default"] = json!(default);
        c.to_string()
    };
    let dir = tokengate_testkit::repo_root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let ecds = dir.join(format!("ecds-keys-{}.json", std::process::id()));
    write_ecds(&ecds, &with_default("authenticated"));
    let mut options = EnvoyOptions::raw("{}")
        .cluster("idp", idp.port())
        .concurrency(2);
    options.ecds = Some(ecds.clone());
    let envoy = Envoy::start_with(options);
    warm_up(&envoy, &idp, &inline);
    let gauge = || envoy.stat("wasmcustom.tokengate.jwks.zitadel.key_memory_bytes");
    std::thread::sleep(Duration::from_millis(2500));
    let before = gauge();
    assert!(before > 0);
    for (i, default) in ["deny", "authenticated", "deny"].into_iter().enumerate() {
        write_ecds(&ecds, &with_default(default));
        let reloads =
            || envoy.counter("extension_config_discovery.http_filter.tokengate.config_reload");
        let deadline = Instant::now() + Duration::from_secs(10);
        while reloads() < i as u64 + 2 {
            assert!(Instant::now() < deadline, "update {} did not apply", i + 1);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        gauge(),
        before,
        "the same keys in the same VMs after three updates"
    );
    let _ = std::fs::remove_file(&ecds);
}

#[test]
fn a_token_is_tried_against_at_most_16_keys_and_its_kids_key_first() {
    // 17 keys without kid, then one with: in the real filter, a forged token costs at most 16
    // signature checks however many kid-less keys the set holds.
    let unnamed: Vec<SigningKey> = (0..17).map(|_| SigningKey::es256("")).collect();
    let named = SigningKey::es256("named");
    let mut all: Vec<&SigningKey> = unnamed.iter().collect();
    all.push(&named);
    let envoy = Envoy::start(&json!({
        "providers": {"main": {"issuer": INLINE_ISSUER, "jwks": mint::jwks(&all)}},
        "default": "authenticated"
    }));
    let token = |key: &SigningKey| key.sign(&claims(INLINE_ISSUER, &[], json!({})));
    expect::passed(&envoy.get_with_token("/", &token(&named)));
    expect::passed(&envoy.get_with_token("/", &token(&unnamed[15])));
    expect::invalid_token(
        &envoy.get_with_token("/", &token(&unnamed[16])),
        "signature",
    );
}
