"""The report of `mtcp-loop bench compare`: the table, the markdown section written by
``--write-doc PATH`` (between generated markers, hand-written text around it survives a rewrite)
and the plots (matplotlib, into img/ next to that file)."""
from __future__ import annotations

import os
import sys

from .bench_compare import BASELINE, CONFIGS, TARGETS, _find, _fmt_cpu, _fmt_split, _fmt_value

SECTION = "## Side-by-side comparison (mtcp-loop bench compare)"
BEGIN, END = "<!-- bench-compare:begin (generated) -->", "<!-- bench-compare:end -->"

WL_TITLE = {"short": "64 B short conns (loadgen)", "short_kclient": "64 B short conns (kclient)",
            "http_keepalive": "aiohttp keep-alive (wrk)", "http_close": "aiohttp Connection: close (wrk)",
            "bulk_up": "bulk client->server", "bulk_down": "bulk server->client",
            "latency": "64 B ping-pong latency", "idle": "idle conns: native (mtcp) / socket slab (kernel)", "scaling": "scaling cores=2/cores=1"}
WL_ORDER = list(WL_TITLE)


def table_rows(res) -> list:
    rows = []
    for wl in WL_ORDER:
        for c in [c for c in res["cells"] if c["workload"] == wl]:
            val = _fmt_value(c)
            if wl == "latency":
                val = f"p50 {c['p50_us']:.0f} / p99 {c['p99_us']:.0f} / p99.9 {c['p999_us']:.0f} us"
            if wl == "idle":
                parts = []
                if c.get("native_bytes_per_conn") is not None:
                    parts.append(f"native {c['native_bytes_per_conn']:,.0f} B")
                parts.append(f"RSS {c['rss_bytes_per_conn']:,.0f} B")
                parts.append(f"kernel socket slab {max(0.0, c['slab_bytes_per_conn']):,.0f} B")
                val = ", ".join(parts) + f" ({c['server_open']:,} conns)"
            if wl == "scaling":
                val = f"{c['value']:.2f}x ({c['driver']}: {c['cores1']:,.0f} -> {c['cores2']:,.0f})"
            ratio = c.get("ratio_to_uvloop")
            tgt = c.get("target", "")
            met = c.get("target_met")
            verdict = "" if met is None else ("met" if met else "MISSED")
            eff = c.get("cpu_per_op_ratio_to_uvloop")
            rows.append([WL_TITLE[wl], c["config"], val, _fmt_cpu(c),
                         "" if ratio is None else f"{ratio:.2f}x",
                         "" if not eff or wl in ("latency", "idle") else f"{1 / eff:.2f}x", tgt, verdict,
                         f"{_fmt_split(c, 'cpu0')} | {_fmt_split(c, 'cpu1')}" if c.get("cpu_split") else ""])
    return rows


HEAD = ["workload", "configuration", "result", "server CPU/op", "vs uvloop+kernel", "per-core capacity vs uvloop",
        "target", "verdict",
        "cpu0 | cpu1 (user/sys/softirq %)"]


def print_table(res, out=None):
    out = out or sys.stdout
    rows = table_rows(res)
    w = [max(len(str(x)) for x in col) for col in zip(HEAD, *rows)] if rows else [len(h) for h in HEAD]
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(HEAD)), file=out)
    print("  ".join("-" * w[i] for i in range(len(HEAD))), file=out)
    for r in rows:
        print("  ".join(str(x).ljust(w[i]) for i, x in enumerate(r)), file=out)
    if res.get("ceiling"):
        print("\nceiling (bench rings): frames/s and the connection rate they allow at the measured frames/conn",
              file=out)
        for k, v in res["ceiling"].items():
            print(f"  {k:7s} rx {v['rx_fps']:>10,} fps  tx {v['tx_fps']:>10,} fps  frames/conn "
                  f"{v['frames_per_conn']['to_server']}+{v['frames_per_conn']['from_server']}  -> "
                  f"{v['conn_per_s_ceiling']:>9,} conn/s ceiling; measured {v['measured_conn_per_s']:,.0f} "
                  f"({100 * (v['share_of_ceiling'] or 0):.1f}%)", file=out)
    if res.get("tuning"):
        print("\nkernel baseline tuning (inside the namespaces): " +
              "; ".join(f"{side}: " + ", ".join(f"{k}={v}" for k, v in kv.items())
                        for side, kv in res["tuning"].items()), file=out)
    for e in res.get("errors", []):
        print(f"error: {e['config']} / {e['step']}: {e['error'][-300:]}", file=out)


def markdown(res) -> str:
    m = res["machine"]
    p = res["params"]
    lines = [BEGIN, "",
             f"Run: `{res['command'].strip()}` on {res['date']} — machine: {m['nproc']} CPUs "
             f"({m['cpu_model']}), kernel {m['kernel']}, Python {m['python']}, {m['mem_gb']} GB"
             f"{' — QUICK run (smoke figures)' if res['quick'] else ''}; total {res.get('elapsed_s', 0):.0f} s.",
             "",
             f"Server pinned to {res['pinning']['server']}, load generator to {res['pinning']['client']}. "
             f"Short connections: loadgen {p['conc']} in flight, {p['short_s']} s after {p['warm_s']} s warm-up; "
             f"kclient {p['kconc']} in flight; wrk 1 thread, {p['http_conc']} connections, {p['http_s']} s; "
             f"bulk {p['bulk_bytes'] >> 20} MiB each way; ping-pong {p['ping_s']} s; "
             f"idle {p['idle_conns']:,} connections."
             + (f" Every configuration ran {res.get('repeat')} times (alternating order); the table shows "
                f"medians, the JSON every run." if res.get("repeat", 1) > 1 else ""), "",
             "| " + " | ".join(h.replace("|", "/") for h in HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in table_rows(res):
        lines.append("| " + " | ".join(str(x).replace("|", "/") for x in r) + " |")
    if res.get("ceiling"):
        lines += ["", "Ceiling (`mtcp-loop bench rings`, raw frame rate) and the connection rate it allows at the "
                  "measured frames per connection:", "",
                  "| backend | RX frames/s | TX frames/s | frames/conn (to/from server) | conn/s ceiling | measured | share |",
                  "|---|---|---|---|---|---|---|"]
        for k, v in res["ceiling"].items():
            lines.append(f"| {k} | {v['rx_fps']:,} | {v['tx_fps']:,} | {v['frames_per_conn']['to_server']} / "
                         f"{v['frames_per_conn']['from_server']} | {v['conn_per_s_ceiling']:,} | "
                         f"{v['measured_conn_per_s']:,.0f} | {100 * (v['share_of_ceiling'] or 0):.1f}% |")
    if res.get("tuning"):
        lines += ["", "Kernel baseline tuning (set inside the namespaces, never the root namespace): " +
                  "; ".join(f"{side}: " + ", ".join(f"`{k}={v}`" for k, v in kv.items())
                            for side, kv in res["tuning"].items()) + "."]
    if res.get("errors"):
        lines += ["", "Cells that failed in this run:", ""]
        lines += [f"- {e['config']} / {e['step']}: `{e['error'][-200:].strip()}`" for e in res["errors"]]
    imgs = res.get("plots") or []
    if imgs:
        lines += [""] + [f"![{os.path.basename(i)}](img/{os.path.basename(i)})" for i in imgs]
    lines += ["", END]
    return "\n".join(lines)


def write_doc(res, path):
    body = markdown(res)
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if SECTION not in text:
        if not text:
            text = "# Benchmarks\n"
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{body}\n"
    elif BEGIN in text and END in text:
        a = text.index(BEGIN)
        b = text.index(END) + len(END)
        text = text[:a] + body + text[b:]
    else:
        i = text.index(SECTION) + len(SECTION)
        text = text[:i] + "\n\n" + body + "\n" + text[i:]
    with open(path, "w") as f:
        f.write(text)


def plots(res, outdir) -> list:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(outdir, exist_ok=True)
    made = []
    groups = [("short", "short_kclient", "http_keepalive", "http_close"), ("bulk_up", "bulk_down", "latency", "idle")]
    for gi, group in enumerate(groups):
        fig, axes = plt.subplots(1, len(group), figsize=(4.2 * len(group), 4))
        for ax, wl in zip(axes, group):
            cells = [c for c in res["cells"] if c["workload"] == wl]
            if not cells:
                ax.set_visible(False)
                continue
            names = [c["config"].replace("+kernel", "\n+kernel").replace("mtcp ", "mtcp\n") for c in cells]
            vals = [c["value"] for c in cells]
            colors = ["#999999" if c["loop"] != "mtcp" else "#2a7ab9" for c in cells]
            ax.bar(range(len(cells)), vals, color=colors)
            ax.set_xticks(range(len(cells)))
            ax.set_xticklabels(names, fontsize=7)
            ax.set_title(WL_TITLE[wl], fontsize=9)
            ax.set_ylabel(cells[0]["unit"] + (" (lower is better)" if wl in ("latency", "idle") else ""), fontsize=8)
            base = _find(res, wl, BASELINE)
            t = TARGETS.get(wl)
            if base and t and t[2] in ("ratio", "inv_ratio"):
                ax.axhline(base["value"] * t[1], color="#d62728", ls="--", lw=1, label=f"target {t[0]}")
                ax.legend(fontsize=7)
            elif t and t[2] == "max_value":
                ax.axhline(t[1], color="#d62728", ls="--", lw=1, label=f"target {t[0]}")
                ax.legend(fontsize=7)
        fig.suptitle(f"mtcp-loop bench compare — {res['date']}{' (quick)' if res['quick'] else ''}", fontsize=10)
        fig.tight_layout()
        path = os.path.join(outdir, f"compare_{'throughput' if gi == 0 else 'bulk_latency_memory'}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    # server CPU per operation
    wls = ["short", "short_kclient", "http_keepalive", "http_close"]
    cfgs = [c for c in CONFIGS if any(x["config"] == c for x in res["cells"])]
    if cfgs:
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / max(1, len(cfgs))
        for i, cfg in enumerate(cfgs):
            vals = [(_find(res, wl, cfg) or {}).get("server_cpu_us_per_op") or 0 for wl in wls]
            ax.bar([x + i * width for x in range(len(wls))], vals, width, label=cfg)
        ax.set_xticks([x + width * (len(cfgs) - 1) / 2 for x in range(len(wls))])
        ax.set_xticklabels([WL_TITLE[w] for w in wls], fontsize=8)
        ax.set_ylabel("server CPU us per connection / request (lower is better)", fontsize=8)
        ax.legend(fontsize=7)
        ax.set_title("Server CPU per operation (user+sys of the server processes)", fontsize=9)
        fig.tight_layout()
        path = os.path.join(outdir, "compare_cpu_per_op.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made
