"""A read-only status page for an operator: rounds, rejections, model versions, held-out metrics, epsilon.

``/`` is one self-contained HTML page (a table and inline SVG plots, no script, no outside
resource; every value HTML-escaped, since rejection reasons quote what devices sent) and
``/status.json`` the same for scripts: its ``rounds`` are the lines of ``metrics.jsonl``. Off by
default; it binds 127.0.0.1 unless ``status_host`` says otherwise, answers GET and HEAD only,
and never changes coordinator state.
"""
from __future__ import annotations

import html
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from simulation.coordinator.store import CoordinatorStore

log = logging.getLogger("fedbeat.coordinator")
REFRESH_S = 5
PLOTTED = (("macro_f1", "macro-F1"), ("accuracy", "accuracy"), ("loss", "loss"))


def read_metrics(state_dir: Path) -> list[dict]:
    """The complete lines of metrics.jsonl (a line being appended is left for the next read)."""
    path = Path(state_dir) / "metrics.jsonl"
    text = path.read_text() if path.is_file() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line]


def coordinator_status(state_dir: Path, store: CoordinatorStore) -> dict:
    """Everything the page shows, as JSON-ready data."""
    rounds = read_metrics(state_dir)
    current = store.current_round()
    open_round = None
    if current is not None:
        round_index, version, deadline = current
        open_round = {"round": round_index, "model_version": version, "selected": store.selected_count(round_index),
                      "reported": store.report_count(round_index), "deadline_in_s": round(max(0.0, deadline - time.time()), 1)}
    reasons = store.rejections_by_reason()  # the open round's; closed ones are in their records
    for record in rounds:
        reasons.update(record.get("rejections_by_reason", {}))
    epsilons = [r["epsilon"] for r in rounds if "epsilon" in r]
    return {"rounds": rounds, "open_round": open_round, "rejections_by_reason": dict(sorted(reasons.items())),
            "model_versions": [r["model_version"] for r in rounds if not r.get("abandoned")],
            "epsilon_spent": epsilons[-1] if epsilons else None, "generated": time.time()}


def _plot(rounds: list[dict], key: str, label: str, width: int = 360, height: int = 160) -> str:
    """An inline SVG line of eval[key] over rounds."""
    points = [(r["round"], r["eval"][key]) for r in rounds if "eval" in r and key in r["eval"]]
    if len(points) < 2:
        return f"<figure><figcaption>{label}: not enough evaluated rounds yet</figcaption></figure>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    low, high = (0.0, 1.0) if key != "loss" else (min(ys), max(ys) or 1.0)
    span_x, span_y = (max(xs) - min(xs)) or 1, (high - low) or 1.0
    pad = 30
    coords = " ".join(f"{pad + (x - min(xs)) / span_x * (width - 2 * pad):.1f},{height - pad - (y - low) / span_y * (height - 2 * pad):.1f}" for x, y in points)
    return (f'<figure><svg role="img" aria-label="{label} over rounds" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#bbb"/>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{coords}"/>'
            f'<text x="{pad}" y="{height - 8}" font-size="11">round {min(xs)}</text>'
            f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">round {max(xs)}</text>'
            f'<text x="{pad - 4}" y="{pad + 4}" font-size="11" text-anchor="end">{high:.3g}</text>'
            f'<text x="{pad - 4}" y="{height - pad}" font-size="11" text-anchor="end">{low:.3g}</text>'
            f'<text x="{pad}" y="{pad - 8}" font-size="11">{label}</text><text x="{width - pad}" y="{pad - 8}" font-size="11" text-anchor="end">last {ys[-1]:.3f}</text>'
            f'</svg><figcaption>held-out {label} over rounds</figcaption></figure>')


def _cell(record: dict, column: str):
    """A round's value in the table; an abandoned round shows why, where its record says."""
    if column == "abandoned" and record.get("abandoned"):
        return record.get("abandoned_reason", True)
    return record.get(column, "")


def render_html(status: dict) -> str:
    """The page: open round, rounds table, rejections by reason, metric plots."""
    e = lambda value: html.escape(str(value), quote=True)  # noqa: E731
    columns = ("round", "model_version", "invited", "reported", "dropped", "late", "rejected", "abandoned")
    rows = []
    for record in reversed(status["rounds"]):
        cells = [e(_cell(record, c)) for c in columns]
        cells.append(e(f"{record['eval']['macro_f1']:.3f}") if "eval" in record else "")
        cells.append(e(f"{record['epsilon']:.2f}") if "epsilon" in record else "")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{e(c)}</th>" for c in (*columns, "held-out macro-F1", "epsilon"))
    reasons = "".join(f"<tr><td>{e(reason)}</td><td>{count}</td></tr>" for reason, count in status["rejections_by_reason"].items()) or '<tr><td colspan="2">none</td></tr>'
    current = status["open_round"]
    now = (f"round {e(current['round'])} open: model {e(current['model_version'])}, {e(current['selected'])} selected, "
           f"{e(current['reported'])} reported, deadline in {e(current['deadline_in_s'])} s") if current else "no open round"
    epsilon = "" if status["epsilon_spent"] is None else f"<p>privacy spent: epsilon {e(round(status['epsilon_spent'], 3))}</p>"
    plots = "".join(_plot(status["rounds"], key, label) for key, label in PLOTTED)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}"><title>fedbeat coordinator</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}figure{{display:inline-block;margin:0 1em 0 0}}</style>
</head><body><h1>fedbeat coordinator</h1><p id="open-round">{now}</p>{epsilon}
<section class="plots">{plots}</section>
<h2>Rounds</h2><table id="rounds"><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>
<h2>Rejections by reason</h2><table id="rejections"><tbody>{reasons}</tbody></table>
<p><a href="/status.json">status.json</a></p></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    snapshot: Callable[[], dict]
    server_version = "fedbeat-status"

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/status.json":
            self._send(200, json.dumps(self.snapshot()).encode(), "application/json")
        elif path == "/":
            self._send(200, render_html(self.snapshot()).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain")

    do_HEAD = do_GET

    def _refuse(self) -> None:
        self._send(405, b"read-only\n", "text/plain")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        log.debug("status page: " + format, *args)


class StatusServer:
    """The page on its own port and thread; ``port`` is the one bound (0 in the config picks one)."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict]):
        handler = type("StatusHandler", (_Handler,), {"snapshot": staticmethod(snapshot)})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="status-page", daemon=True)

    def start(self) -> "StatusServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
