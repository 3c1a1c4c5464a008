"""The demo's results for a person: a compact console summary and one self-contained HTML page.

    python -m models.report demo_out                 # print the summary, write demo_out/report.html
    python -m models.report demo_out --no-html       # the summary only

Reads from the folder (not recursively for the JSON files):

* every ``*.json`` holding ``{"task", "metric", "results": {method: {"per_seed", "seeds", "mean", "std"}}}``
  (``python -m models.compare --json``): one results table per task;
* the ``*.json`` holding ``{"machine", "rows"}`` (``benchmarks/summary.py --json``): the CPU speed table;
* the plots of each task's runs: ``<stem>/<method>_s<seed>/*.png`` beside ``<stem>.json`` (``models.compare
  --out <stem>``; a ``"out"`` key in the JSON overrides the folder), the first seed of each method (decision
  boundaries, curves, segmentation panels), plus any PNG directly in ``<stem>/``.

The page embeds the PNGs (base64), so it can be moved or mailed alone.
"""
from __future__ import annotations

import argparse
import base64
import glob
import html
import json
import os
from typing import Dict, List, Optional

METRIC_NAMES = {"target_acc": "target accuracy (%)", "miou": "target mIoU (%)"}
SPEED_HEAD = ["op", "mode", "shape", "uda_ops ms", "x eager", "x compile", "x official"]
RESULT_HEAD = ["method", "mean ± std", "per seed"]
PLOT_ORDER = ("boundary.png", "samples.png", "curves.png")  # within a run folder; others after, by name


def _fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def load(root: str) -> Dict[str, object]:
    """``{"bench": summary dict or None, "tasks": [{"name", "json", "res", "plots": [(title, path)]}]}``."""
    bench, tasks = None, []
    for path in sorted(glob.glob(os.path.join(root, "*.json"))):
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(d, dict):
            continue
        if "rows" in d and "machine" in d:
            bench = d
        elif "task" in d and isinstance(d.get("results"), dict):
            name = os.path.splitext(os.path.basename(path))[0]
            tasks.append({"name": name, "json": path, "res": d, "plots": plots(path, d)})
    return {"bench": bench, "tasks": tasks}


def plots(json_path: str, res: dict) -> List[tuple]:
    """(title, path) of the plots of a compare run: per method, its first seed's run folder."""
    folder = res.get("out") or os.path.splitext(json_path)[0]  # "out": as models.compare was given it
    if not os.path.isdir(folder):
        return []
    out = [(os.path.basename(p), p) for p in sorted(glob.glob(os.path.join(folder, "*.png")))]
    for m, r in res["results"].items():
        for s in r.get("seeds") or [0]:
            run = os.path.join(folder, f"{m}_s{s}")
            if os.path.isdir(run):
                pngs = sorted(glob.glob(os.path.join(run, "*.png")),
                              key=lambda p: (PLOT_ORDER.index(os.path.basename(p))
                                             if os.path.basename(p) in PLOT_ORDER else len(PLOT_ORDER), p))
                out += [(f"{m}, seed {s}: {os.path.basename(p)[:-4]}", p) for p in pngs]
                break
    return out


def speed_rows(bench: dict) -> List[List[str]]:
    return [[r["op"], r["mode"], "x".join(str(v) for v in r.get("shape", [])), _fmt(r.get("uda_ops_ms"), ".3f"),
             _fmt(r.get("x_eager"), ".1f"), _fmt(r.get("x_compile"), ".2f"), _fmt(r.get("x_official"), ".1f")]
            for r in bench["rows"]]


def result_rows(res: dict) -> List[List[str]]:
    return [[m, f"{r['mean']:.1f} ± {r['std']:.1f}", " ".join(f"{v:.1f}" for v in r["per_seed"])]
            for m, r in res["results"].items()]


def _seeds(res: dict) -> str:
    seeds = next((r.get("seeds") for r in res["results"].values() if r.get("seeds")), None)
    return f"seeds {','.join(str(s) for s in seeds)}" if seeds else ""


def text_table(head: List[str], rows: List[List[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summary(data: Dict[str, object]) -> str:
    """The compact console summary: the CPU speed table, then one results table per task."""
    parts = []
    b = data["bench"]
    if b is not None:
        m = b["machine"]
        parts.append(f"CPU speed (median ms of uda_ops; x = speed-up over eager / torch.compile / the official "
                     f"formulas) on {m.get('device', '?')}, {m.get('threads', '?')} thread(s), torch "
                     f"{m.get('torch', '?')}, {m.get('date', '?')}\n" + text_table(SPEED_HEAD, speed_rows(b))
                     + (f"\n{m['warning']}" if m.get("warning") else ""))  # benchmarks/summary.py: busy machine
    for t in data["tasks"]:
        res = t["res"]
        what = METRIC_NAMES.get(res.get("metric"), res.get("metric", ""))
        parts.append(f"{res['task']}: {what}, {_seeds(res)}\n" + text_table(RESULT_HEAD, result_rows(res)))
    if not parts:
        parts.append("no results found")
    return "\n\n".join(parts)


def _html_table(head: List[str], rows: List[List[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _img(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(os.path.basename(path))}">'


CSS = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0 1.5em}"
       "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}"
       "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}img{max-width:100%}"
       "figcaption{font-size:90%;color:#444}")


def write_html(data: Dict[str, object], path: str) -> str:
    body = ["<h1>uda_ops demo</h1>"]
    b = data["bench"]
    if b is not None:
        m = b["machine"]
        body.append(f"<h2>CPU speed</h2><p>{html.escape(str(m.get('device', '?')))}, {m.get('threads', '?')} "
                    f"thread(s), torch {html.escape(str(m.get('torch', '?')))}, {m.get('date', '?')}. Median ms of "
                    "uda_ops; x = its speed-up over the eager reference, torch.compile of it, and the official "
                    "repositories' formulas, measured in the same run.</p>"
                    + (f"<p><strong>{html.escape(m['warning'])}</strong></p>" if m.get("warning") else "")
                    + _html_table(SPEED_HEAD, speed_rows(b)))
    for t in data["tasks"]:
        res = t["res"]
        what = METRIC_NAMES.get(res.get("metric"), res.get("metric", ""))
        body.append(f"<h2>{html.escape(str(res['task']))}</h2><p>{html.escape(what)}, {_seeds(res)} "
                    f"(<code>{html.escape(os.path.basename(t['json']))}</code>)</p>"
                    + _html_table(RESULT_HEAD, result_rows(res)))
        for title, p in t["plots"]:
            body.append(f"<figure>{_img(p)}<figcaption>{html.escape(title)}</figcaption></figure>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("<!DOCTYPE html><html><head><meta charset='utf-8'><title>uda_ops demo</title>"
                f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
    return path


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default="demo_out", help="folder with the compare / benchmark JSON files")
    ap.add_argument("--html", default=None, help="the page to write (default ROOT/report.html)")
    ap.add_argument("--no-html", action="store_true")
    args = ap.parse_args(argv)
    data = load(args.root)
    print(summary(data))
    if not args.no_html:
        path = write_html(data, args.html or os.path.join(args.root, "report.html"))
        print(f"\nreport: {path}")
    return data


if __name__ == "__main__":
    main()
