"""Security figures of the adversarial suite (issue 4) → docs/security.md.

Tests call :func:`record` to store their figures as JSON in
``target/security/<section>.json`` (git-ignored, one entry per check, newest
run wins). :func:`generate` turns every such file, plus
``target/security/fuzz.json`` written by the Rust fuzz/property runs if it
exists, into ``docs/security.md``.

It is also a pytest plugin (loaded from tests/e2e/conftest.py): at the end of
a session in which any figures were recorded, the report is regenerated.
Standalone: ``.venv/bin/python tests/e2e/security_report.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[2]
FIG_DIR = Path(os.environ.get("CREDBROKER_SECURITY_DIR") or REPO / "target" / "security")
REPORT = Path(os.environ.get("CREDBROKER_SECURITY_REPORT") or REPO / "docs" / "security.md")
SECTION_ORDER = ["hostile", "faults", "crash", "secrets", "fuzz"]
SECTION_TITLES = {
    "hostile": "Hostile local callers (raw HTTP against the running binary)",
    "faults": "Upstream faults (fault-injecting proxy in front of moto and oidc-provider)",
    "crash": "Crash safety of the refresh token and state files",
    "secrets": "Secrets in logs across failures",
    "fuzz": "Fuzzing and property tests (Rust)",
}


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def record(section: str, key: str, *, title: str, tried: int | None = None, ok: int | None = None,
           unit: str = "", verdict: str = "pass", figures: dict[str, Any] | None = None,
           findings: Iterable[str] = (), notes: Iterable[str] = ()) -> Path:
    """Store one check's figures.

    ``tried``/``ok``: e.g. probes tried / refused as expected, faults injected /
    survived, kills / kills without lockout. ``verdict``: ``pass``, ``finding``
    (the suite passes but the daemon deviates from its stated behaviour; see
    ``findings``) or ``fail``.
    """
    FIG_DIR.mkdir(parents=True, exist_ok=True)
    path = FIG_DIR / f"{section}.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    doc.setdefault("section", section)
    entries = doc.setdefault("entries", {})
    entries[key] = _jsonable({
        "title": title, "tried": tried, "ok": ok, "unit": unit, "verdict": verdict,
        "recorded_at": _now_iso(), "figures": figures or {}, "findings": list(findings),
        "notes": list(notes),
    })
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(", ", ": "))
    else:
        text = str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 400 else text[:400] + "…"


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        head = out.stdout.strip() or "unknown"
        return head + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _binary_info() -> str:
    binary = Path(os.environ.get("CREDBROKER_BIN") or REPO / "target" / "debug" / "credbroker")
    try:
        mtime = dt.datetime.fromtimestamp(binary.stat().st_mtime, dt.timezone.utc)
        return f"`{binary.relative_to(REPO) if binary.is_relative_to(REPO) else binary}` built {mtime:%Y-%m-%d %H:%M} UTC"
    except OSError:
        return "binary not found"


def _load_sections() -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {}
    if not FIG_DIR.is_dir():
        return sections
    for path in sorted(FIG_DIR.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        sections[path.stem] = doc
    return sections


def _render_fuzz(doc: Any) -> list[str]:
    """fuzz.json is written by another part of the suite; render what it has."""
    out: list[str] = []
    if not isinstance(doc, dict):
        return ["```", json.dumps(doc, indent=2)[:4000], "```"]
    scalars = {k: v for k, v in doc.items() if not isinstance(v, (dict, list))}
    if scalars:
        out += ["| Key | Value |", "|---|---|"]
        out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in scalars.items()]
        out.append("")
    for key, value in doc.items():
        if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            cols: list[str] = []
            for row in value:
                cols += [c for c in row if c not in cols]
            out += [f"**{key}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            out += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in value]
            out.append("")
        elif isinstance(value, dict):
            if value and all(isinstance(v, dict) for v in value.values()):
                cols = []
                for row in value.values():
                    cols += [c for c in row if c not in cols]
                out += [f"**{key}**", "", "| name | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
                out += [f"| {_cell(name)} | " + " | ".join(_cell(row.get(c)) for c in cols) + " |"
                        for name, row in value.items()]
            else:
                out += [f"**{key}**", "", "| Key | Value |", "|---|---|"]
                out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in value.items()]
            out.append("")
        elif isinstance(value, list):
            out += [f"**{key}**: {_cell(value)}", ""]
    return out


def generate(report: Path = REPORT) -> Path:
    sections = _load_sections()
    fuzz = sections.pop("fuzz", None)
    names = [s for s in SECTION_ORDER if s in sections] + sorted(s for s in sections if s not in SECTION_ORDER)
    lines = [
        "# credbroker security figures",
        "",
        "<!-- Generated by tests/e2e/security_report.py from target/security/*.json; do not edit by hand. -->",
        "",
        f"Generated {_now_iso()} on {platform.node() or 'unknown host'} "
        f"({os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}); "
        f"git {_git_head()}; {_binary_info()}.",
        "",
        "Produced by the adversarial suite (`tests/e2e/test_hostile.py`, `test_faults.py`, `test_crash.py`) "
        "against the built binary, with moto standing in for AWS and oidc-provider (refresh-token rotation "
        "and reuse detection) for the identity provider. Every figure below was measured in the run on the "
        "date given in its row; `CREDBROKER_LONG=1` runs the longer crash loops.",
        "",
        "## Summary",
        "",
        "| Area | Check | Tried | OK | Result | Recorded |",
        "|---|---|---:|---:|---|---|",
    ]
    findings: list[tuple[str, str]] = []
    for name in names:
        for key, e in sections[name].get("entries", {}).items():
            unit = f" {e.get('unit')}" if e.get("unit") else ""
            tried = "–" if e.get("tried") is None else f"{e['tried']}{unit}"
            ok = "–" if e.get("ok") is None else str(e["ok"])
            verdict = {"pass": "pass", "finding": "**finding**", "fail": "**FAIL**"}.get(e.get("verdict"),
                                                                                       e.get("verdict"))
            lines.append(f"| {name} | {_cell(e.get('title', key))} | {tried} | {ok} | {verdict} | "
                         f"{e.get('recorded_at', '')} |")
            findings += [(f"{name}/{key}", f) for f in e.get("findings", [])]
    if fuzz is not None:
        lines.append(f"| fuzz | see below (`target/security/fuzz.json`) | – | – | – | – |")
    lines.append("")
    lines += ["## Findings", ""]
    if findings:
        lines += ["Deviations of the daemon from its stated behaviour, found by this suite "
                  "(the tests that show them are marked `xfail(strict=True)` or recorded as findings):", ""]
        lines += [f"- **{where}**: {text}" for where, text in findings]
    else:
        lines.append("None in this run.")
    lines.append("")
    for name in names:
        lines += [f"## {SECTION_TITLES.get(name, name)}", ""]
        for key, e in sections[name].get("entries", {}).items():
            lines += [f"### {e.get('title', key)}", "", f"`{name}/{key}`, recorded {e.get('recorded_at')}.", ""]
            figs = e.get("figures") or {}
            tables = {k: v for k, v in figs.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
            scalars = {k: v for k, v in figs.items() if k not in tables}
            if scalars:
                lines += ["| Figure | Value |", "|---|---|"]
                lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in scalars.items()]
                lines.append("")
            for tname, rows in tables.items():
                cols: list[str] = []
                for row in rows:
                    cols += [c for c in row if c not in cols]
                lines += [f"**{tname}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
                lines.append("")
            for f in e.get("findings", []):
                lines.append(f"- **Finding:** {f}")
            for n in e.get("notes", []):
                lines.append(f"- {n}")
            if e.get("findings") or e.get("notes"):
                lines.append("")
    if fuzz is not None:
        lines += [f"## {SECTION_TITLES['fuzz']}", "", "From `target/security/fuzz.json`.", ""]
        lines += _render_fuzz(fuzz)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines).rstrip() + "\n")
    return report


# ---------------------------------------------------------------------------
# pytest plugin
# ---------------------------------------------------------------------------

_SESSION_START = [0.0]


def pytest_sessionstart(session: Any) -> None:
    _SESSION_START[0] = time.time()


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if not FIG_DIR.is_dir():
        return
    fresh = [p for p in FIG_DIR.glob("*.json") if p.stem != "fuzz" and p.stat().st_mtime >= _SESSION_START[0]]
    if fresh:
        path = generate()
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"security report: {path} (from {len(fresh)} figure file(s) in {FIG_DIR})")


if __name__ == "__main__":
    print(generate())
    sys.exit(0)
