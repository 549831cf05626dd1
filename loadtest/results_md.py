#!/usr/bin/env python3
"""Write loadtest/results/README.md from scenarios.sh's SUMMARY line.

    results_md.py SUMMARY_FILE OUT.md "machine note" "end load"
"""
import json
import sys

ORDER = ["steady", "crash", "proxy-dies", "planned", "planned-keepalive", "backend-down", "reload", "flap"]
STACK = {"ringlb": "ringlb", "keepalived": "nginx + keepalived"}
WHAT = {
    "steady": "no fault: the baseline",
    "crash": "master's link down + `kill -9` of its VRRP process",
    "proxy-dies": "master's data plane stops, node and VRRP stay up (ringlb: shards stalled by SIGUSR2; nginx killed, keepalived's `check_nginx` interval 2 s)",
    "planned": "SIGTERM to the master's ringlb / keepalived",
    "planned-keepalive": "the same, the load from 20 keep-alive clients (each reuses its connection, no retries)",
    "backend-down": "`kill -9` of one of the master's two backends",
    "reload": "server list changed under load (SIGHUP to ringlb / nginx master)",
    "flap": "master link down/up every 2 s for 10 s",
}


def ms(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def main():
    line = open(sys.argv[1]).read().strip()
    data = json.loads(line.split(" ", 1)[1])
    note, end_load = sys.argv[3], sys.argv[4]
    runs = sorted(data["runs"], key=lambda r: (ORDER.index(r["scenario"]) if r["scenario"] in ORDER else 99, r["stack"] != "ringlb"))
    out = []
    out.append("# HA scenario results\n")
    out.append(f"Run: `{data['header']}`; load at the end: {end_load}.\n")
    if note:
        out.append(f"Machine: {note}\n")
    out.append(
        "Command: `CARGO_TARGET_DIR=target-fi cargo build --release --features fault-injection && "
        "sudo bash loadtest/scenarios.sh` (all scenarios, both stacks). Method and definitions: "
        "[`../README.md`](../README.md#scenariossh--every-ha-scenario-both-stacks-one-command).\n"
    )
    out.append(f"All scenarios passed (every check, every ringlb target): **{'yes' if data['all_pass'] else 'NO'}**.\n")
    loaded = data.get("host_too_loaded", [])
    if loaded:
        out.append(
            "Host too loaded for the timing to mean anything in: " + ", ".join(loaded)
            + " (the load generator itself started requests more than 20 ms late, or ringlb logged "
            "that its shards were kept waiting for a CPU: the host, not the system under test, set those numbers).\n"
        )
    out.append("| scenario | stack | pass | failed (by kind) | outage ms | VIP move ms | p50 / p99 / p99.9 / max ms | two masters | target | client late max ms | shards starved | load at start |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        if "requests" not in r:
            out.append(f"| {r['scenario']} | {STACK.get(r['stack'], r['stack'])} | **did not run** | | | | | | | | | |")
            continue
        kinds = ", ".join(f"{k} {c}" for k, c in sorted(r["failures"].items())) or "none"
        target = ""
        if "target" in r:
            target = f"{r['target']}: {'met' if r['target_met'] else '**missed**'}"
        out.append(
            f"| [{r['scenario']}]({r['scenario']}-{r['stack']}.txt) | {STACK.get(r['stack'], r['stack'])} | "
            f"{'yes' if r['pass'] else '**NO** (' + (', '.join(k for k, v in r['checks'].items() if not v) or 'target') + ')'} | "
            f"{r['failed']} of {r['requests']} ({kinds}) | {ms(r['outage_ms'])} | {ms(r['vip_move_ms'])} | "
            f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['p999_ms']:.2f} / {r['max_ms']:.1f} | {r['two_masters']} | {target} | "
            f"{ms(r.get('client_late_max_ms'))}{'' if r.get('timing_valid', True) else ' (too loaded)'} | {r.get('shards_starved', '-') if r['stack'] == 'ringlb' else '-'} | {r.get('load_start') or '-'} |"
        )
    out.append("")
    out.append("Plots (per scenario, both stacks on the same axes: requests per 10 ms answered / failed "
               "around the fault, and the latency percentile curve from the intended send time):\n")
    for sc in ORDER:
        if any(r["scenario"] == sc for r in runs):
            out.append(f"- **{sc}** — {WHAT[sc]}: [{sc}.svg]({sc}.svg)")
    out.append("")
    out.append("Per run: `SCENARIO-STACK.txt` (the summary), `SCENARIO-STACK.json` (the report: "
               "summary, 10 ms timeline, percentile curve); `summary.json.line` is the script's last line.")
    out.append("")
    out.append("Earlier runs (with the first load generator, which stalled the host): [history.md](history.md).")
    open(sys.argv[2], "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
