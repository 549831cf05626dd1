//! Micro-benchmarks of the per-request read path of a shard: load the current
//! [`Snapshot`], route the request, pick a server.
//!
//! Why these and not an end-to-end number: the data plane's rule is "no
//! per-request allocation, clock read or shared atomic" (ARCHITECTURE.md,
//! "Rules").
//! The snapshot read is the one place a shard touches memory another thread
//! writes, so it is measured three ways — the `arc_swap::Cache` reader when
//! nothing changed (the hot case), the same reader while a publisher thread
//! swaps in a new snapshot every millisecond (reload/health churn), and
//! `ArcSwap::load_full` (what a shard would pay without the cache: a
//! reference-count increment and decrement on a shared line). Routing and
//! selection are pure code and are measured on structures built exactly as
//! the control thread builds them (`Snapshot::build` from a parsed config).
//!
//! Keep it quick: `cargo bench --bench snapshot -- --warm-up-time 1
//! --measurement-time 3` runs in well under two minutes. Results and the
//! machine note live in `bench/SNAPSHOT.md`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use ringlb::lb::{hash_bytes, ShardState};
use ringlb::snapshot::{Snapshot, SnapshotCell};

/// One listener with host and path routes; four upstreams of eight servers,
/// one per balancing method. Addresses are never connected to.
fn config_text() -> String {
    let mut s = String::from(
        r#"
[runtime]
workers = 1

[[listener]]
listen = "127.0.0.1:18080"
upstream = "rr"

[[listener.route]]
host = "api.example.com"
upstream = "lc"

[[listener.route]]
host = "*.example.com"
path_prefix = "/static"
upstream = "hash"

[[listener.route]]
path_prefix = "/v1"
upstream = "r2"

[[listener.route]]
path_prefix = "/v1/admin"
upstream = "lc"
"#,
    );
    for (name, balance) in [
        ("rr", "round_robin"),
        ("lc", "least_conn"),
        ("hash", "hash"),
        ("r2", "random_two"),
    ] {
        s.push_str(&format!("\n[upstream.{name}]\nbalance = \"{balance}\"\n"));
        if balance == "hash" {
            s.push_str("hash_key = \"uri\"\n");
        }
        for i in 0..8 {
            s.push_str(&format!(
                "[[upstream.{name}.server]]\naddress = \"127.0.0.1:{}\"\n",
                20000 + i
            ));
        }
    }
    s
}

fn snapshot(generation: u64) -> Snapshot {
    let config = ringlb::config::parse_str(&config_text(), "bench").expect("bench config parses");
    Snapshot::build(Arc::new(config), generation, None, false)
}

/// A cheap snapshot for the publisher thread (no Maglev table to fill), so
/// the measurement is about the reader, not the builder hogging a core.
fn small_snapshot(generation: u64) -> Snapshot {
    let config = ringlb::config::parse_str(
        "[runtime]\nworkers = 1\n[[listener]]\nlisten = \"127.0.0.1:18080\"\nupstream = \"rr\"\n[upstream.rr]\n[[upstream.rr.server]]\naddress = \"127.0.0.1:20000\"\n",
        "bench",
    )
    .expect("small config parses");
    Snapshot::build(Arc::new(config), generation, None, false)
}

fn bench_snapshot_load(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");

    let cell = SnapshotCell::new(snapshot(1));
    let mut reader = cell.reader();
    g.bench_function("reader_load_unchanged", |b| {
        b.iter(|| black_box(reader.load().generation))
    });

    g.bench_function("load_full_unchanged", |b| {
        b.iter(|| black_box(cell.load_full().generation))
    });

    // The slow path: every load finds a new snapshot (publish happens in the
    // untimed setup; the timed part refreshes the cache and drops the old
    // snapshot, which the reader held the last reference to). Per-iteration
    // batches add timer overhead of a few tens of ns: read it as an upper bound.
    let cell = SnapshotCell::new(small_snapshot(1));
    let mut reader = cell.reader();
    let mut generation = 1;
    g.bench_function("reader_load_changed", |b| {
        b.iter_batched(
            || {
                generation += 1;
                cell.publish(small_snapshot(generation));
            },
            |()| black_box(reader.load().generation),
            BatchSize::PerIteration,
        )
    });

    // A publisher swapping in a new snapshot every millisecond.
    let cell = SnapshotCell::new(small_snapshot(1));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let cell = cell.clone();
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut generation = 1;
            let mut published = 0u64;
            while !stop.load(Ordering::Relaxed) {
                generation += 1;
                cell.publish(small_snapshot(generation));
                published += 1;
                thread::sleep(Duration::from_millis(1));
            }
            published
        })
    };
    let mut reader = cell.reader();
    g.bench_function("reader_load_publisher_1ms", |b| {
        b.iter(|| black_box(reader.load().generation))
    });
    g.bench_function("load_full_publisher_1ms", |b| {
        b.iter(|| black_box(cell.load_full().generation))
    });
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().expect("publisher thread");
    assert!(published > 0, "publisher never published");
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let snap = snapshot(1);
    let router = &snap.listeners[0].router;
    // Sanity: the routes resolve as configured (indexes follow config order).
    let idx = |name: &str| {
        snap.upstreams
            .iter()
            .position(|u| &*u.config.name == name)
            .expect("upstream")
    };
    let cases: [(&str, &[u8], &[u8], usize); 4] = [
        ("exact_host", b"api.example.com:8080", b"/x?y=1", idx("lc")),
        (
            "wildcard_path",
            b"www.example.com",
            b"/static/app.js",
            idx("hash"),
        ),
        ("path_prefix", b"other.test", b"/v1/admin/users", idx("lc")),
        ("default", b"other.test", b"/index.html", idx("rr")),
    ];
    let mut g = c.benchmark_group("route");
    for (name, host, target, want) in cases {
        assert_eq!(router.route(Some(host), target), Some(want), "{name}");
        g.bench_function(name, |b| {
            b.iter(|| black_box(router.route(Some(black_box(host)), black_box(target))))
        });
    }
    g.finish();
}

fn bench_pick(c: &mut Criterion) {
    let snap = snapshot(1);
    let now = Instant::now();
    let mut g = c.benchmark_group("pick_8_servers");
    for name in ["rr", "lc", "hash", "r2"] {
        let up = snap
            .upstreams
            .iter()
            .find(|u| &*u.config.name == name)
            .expect("upstream");
        assert_eq!(up.servers.len(), 8);
        let mut st = ShardState::new(&up.selector, 7);
        let label = match name {
            "rr" => "round_robin",
            "lc" => "least_conn",
            "hash" => "hash",
            _ => "random_two",
        };
        // What a shard does per request: pick with the snapshot's
        // availability and slow-start closures, then start/finish.
        let mut key = 0u64;
        g.bench_function(label, |b| {
            b.iter(|| {
                key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let i = up
                    .selector
                    .pick(
                        &mut st,
                        black_box(key),
                        |i| !up.servers[i].available,
                        |i| up.weight_permille(i, now),
                    )
                    .expect("a server");
                st.on_start(i);
                st.on_finish(i);
                black_box(i)
            })
        });
    }
    g.finish();
}

/// The whole per-request selection path: load snapshot, route, hash the key
/// (for `hash`), pick.
fn bench_request_path(c: &mut Criterion) {
    let cell = SnapshotCell::new(snapshot(1));
    let mut reader = cell.reader();
    let snap = cell.load_full();
    let mut states: Vec<ShardState> = snap
        .upstreams
        .iter()
        .map(|u| ShardState::new(&u.selector, 3))
        .collect();
    drop(snap);
    let now = Instant::now();
    let target: &[u8] = b"/static/app.js";
    c.bench_function("request_path/load_route_hash_pick", |b| {
        b.iter(|| {
            let snap = reader.load();
            let ui = snap.listeners[0]
                .router
                .route(Some(black_box(b"www.example.com")), black_box(target))
                .expect("route");
            let up = &snap.upstreams[ui];
            let key = hash_bytes(target);
            let si = up
                .selector
                .pick(
                    &mut states[ui],
                    key,
                    |i| !up.servers[i].available,
                    |i| up.weight_permille(i, now),
                )
                .expect("a server");
            black_box(si)
        })
    });
}

criterion_group!(
    benches,
    bench_snapshot_load,
    bench_route,
    bench_pick,
    bench_request_path
);
criterion_main!(benches);
