#!/usr/bin/env bash
# One fuzzing campaign per target, one at a time, at the lowest CPU priority:
#   bash fuzz/campaign.sh [SECONDS] [TARGET...]        (default 600 s, every target)
# Each run starts from fuzz/seeds/<t> + fuzz/corpus-min/<t> (committed), grows
# fuzz/corpus/<t> (ignored), then minimises it back into fuzz/corpus-min/<t>
# with libFuzzer's -set_cover_merge=1 (smallest set keeping every feature);
# when that is still over MAX_FILES (default 350) inputs, with
# -use_counters=0 too (every edge kept, hit-count variety dropped), so the
# committed corpora stay a few hundred small files.
# Crashes land in fuzz/artifacts/<t>/; copy them to fuzz/regressions/<t>/ so
# `cargo test --test fuzz_corpus` replays them on stable.
# Logs: fuzz/logs/<t>.log (the last "#N DONE cov: ... ft: ..." line and the
# final stats are what fuzz/README.md quotes).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config http1_request http1_response chunked vrrp_packet proxy_protocol)
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "corpus-min/$t" "artifacts/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    cp -n corpus-min/"$t"/* "corpus/$t/" 2>/dev/null || true
    echo "== $t: ${secs}s, $(ls "corpus/$t" | wc -l) inputs to start ($(date -u +%H:%M:%S))"
    nice -n 19 cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1 || echo "   $t exited non-zero (crash?), see logs/$t.log"
    grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|Test unit written|SUMMARY|panicked" "logs/$t.log" | tail -5 || true
    for extra in "" "-use_counters=0"; do
        rm -rf "corpus-min/$t.new" && mkdir -p "corpus-min/$t.new"
        # shellcheck disable=SC2086
        nice -n 19 "target/x86_64-unknown-linux-gnu/release/$t" -set_cover_merge=1 $extra \
            "corpus-min/$t.new" "corpus/$t" >"logs/$t.cmin.log" 2>&1
        (($(ls "corpus-min/$t.new" | wc -l) <= ${MAX_FILES:-350})) && break
    done
    rm -rf "corpus-min/$t" && mv "corpus-min/$t.new" "corpus-min/$t"
    echo "   corpus-min/$t: $(ls "corpus-min/$t" | wc -l) files, $(du -sh "corpus-min/$t" | cut -f1)"
done
