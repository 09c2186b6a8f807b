"""Grade reports: their shape, their signature, and what is built from them (CSV, table, summary).

Trusts a report only when its HMAC checks out with the key derived from the instructor tree: a
report edited, forged by a submission or graded against another tree is kept with a flag; a file
in ``--out`` that is not a report is named and skipped. Names are written escaped.
"""
import csv
import hashlib
import hmac
import json
import statistics
import sys

from grading.trees import escaped_name, printable


def points_sum(points):
    """A sum of points, rounded to 6 decimals: a parametrized test's points are shared by its
    cases (1/3 each, say), and their float sum must still read 38, not 37.99999999999999."""
    return round(sum(points), 6)


def make_report(name, rows, notes, exercises, extra=None, flags=()):
    return {
        "submission": name,
        **(extra or {}),
        "points": {e: points_sum(r["earned"] for r in rows if r["exercise"] == e) for e in exercises},
        "max_points": {e: points_sum(r["points"] for r in rows if r["exercise"] == e) for e in exercises},
        "total": points_sum(r["earned"] for r in rows),
        "max_total": points_sum(r["points"] for r in rows),
        "flags": list(dict.fromkeys(flags)),
        "notes": {e: n["note"] for e, n in notes.items() if n["note"]},
        "tampered": {e: n["tampered"] for e, n in notes.items() if n.get("tampered")},
        "seconds": {e: n["seconds"] for e, n in notes.items()},
        "tests": rows,
    }


def _report_mac(report, key):
    body = {k: v for k, v in report.items() if k != "integrity"}
    return hmac.new(key, json.dumps(body, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def sign_report(report, key):
    """Add ``integrity``: an HMAC of the whole report keyed by the instructor tree."""
    report["integrity"] = _report_mac(report, key)
    return report


def report_is_intact(report, key):
    mac = report.get("integrity")
    return isinstance(mac, str) and hmac.compare_digest(mac, _report_mac(report, key))


def read_report(path):
    """The report in ``path`` if it is one (a dict with a name, points and totals), else the
    reason it is not: ``(report or None, problem)``."""
    try:
        report = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        return None, f"{type(error).__name__}: {str(error)[:100]}"
    if not (isinstance(report, dict) and isinstance(report.get("submission"), str)
            and isinstance(report.get("points"), dict)
            and all(isinstance(report.get(k), (int, float)) for k in ("total", "max_total"))):
        return None, "not a grade report"
    return report, ""


def load_reports(out, key=None):
    """Every report in ``out`` (the CSV is rebuilt from these, so nothing is lost), and the
    problems met: ``(reports, problems)``. A file that is not a report is named and skipped; a
    report whose integrity check fails (edited, or graded against another instructor tree)
    is kept with a flag saying so."""
    reports, problems = [], []
    for path in sorted(out.glob("*.json")):
        report, problem = read_report(path)
        if report is None:
            problems.append(f"{escaped_name(path.name)}: {problem}")
            continue
        if key is not None and not report_is_intact(report, key):
            report = {**report, "flags": [*_as_list(report.get("flags")),
                                          "report fails its integrity check (edited, or graded "
                                          "against another instructor tree): grade it again"]}
        reports.append(report)
    return sorted(reports, key=lambda r: r["submission"]), problems


def _as_list(value):
    return [str(v) for v in value] if isinstance(value, list) else []


def _fmt(x):
    try:
        return f"{round(float(x), 2):g}"
    except (TypeError, ValueError):
        return "?"


def write_csv(reports, exercises, path):
    """One row per submission, sorted by name, with its sandbox and flags; written to a
    temporary file, then renamed."""
    partial = path.with_suffix(".csv.partial")
    with open(partial, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["submission", *exercises, "total", "max_total", "sandbox", "flags"])
        for report in sorted(reports, key=lambda r: r["submission"]):
            writer.writerow([printable(report["submission"]),
                             *(_fmt(report["points"].get(e, 0)) for e in exercises),
                             _fmt(report["total"]), _fmt(report["max_total"]),
                             printable(report.get("sandbox", "")),
                             printable("; ".join(_as_list(report.get("flags")))[:2000])])
    partial.replace(path)


def write_json(report, path):
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=2))
    partial.replace(path)


def print_table(reports, exercises, stream=sys.stdout):
    width = max([10] + [len(printable(r["submission"])) for r in reports])
    columns = [*exercises, "total"]
    print(f'{"submission":<{width}}  ' + "  ".join(f"{c:>16}" for c in columns), file=stream)
    for report in reports:
        cells = [f'{_fmt(report["points"].get(e, 0))}/{_fmt(report.get("max_points", {}).get(e, 0))}'
                 for e in exercises]
        cells.append(f'{_fmt(report["total"])}/{_fmt(report["max_total"])}')
        print(f'{printable(report["submission"]):<{width}}  ' + "  ".join(f"{c:>16}" for c in cells),
              file=stream)
        for exercise, note in (report.get("notes") or {}).items():
            print(f"{'':<{width}}  ! {exercise}: {printable(note)}", file=stream)
        for flag in _as_list(report.get("flags")):
            print(f"{'':<{width}}  FLAG {printable(flag)}", file=stream)


def print_summary(reports, exercises, stream=sys.stdout, slowest=5):
    """Count, mean and distribution (min, quartiles, max) of points per exercise; slowest runs;
    flagged submissions."""
    print(f"\n{len(reports)} submissions", file=stream)
    for exercise in [*exercises, "total"]:
        scores = sorted(float(r["total"] if exercise == "total" else r["points"].get(exercise, 0))
                        for r in reports)
        if not scores:
            continue
        quartiles = statistics.quantiles(scores, n=4, method="inclusive") if len(scores) > 1 else scores * 3
        print(f"  {exercise:<18} mean {statistics.mean(scores):6.2f}   min {_fmt(scores[0])}  "
              f"q1 {_fmt(quartiles[0])}  median {_fmt(quartiles[1])}  q3 {_fmt(quartiles[2])}  "
              f"max {_fmt(scores[-1])}", file=stream)
    timed = sorted(reports, key=lambda r: -float(r.get("wall_seconds", 0) or 0))
    print("  slowest: " + ", ".join(f'{printable(r["submission"])} ({_fmt(r.get("wall_seconds", 0))} s)'
                                    for r in timed[:slowest]), file=stream)
    flagged = [r for r in reports if _as_list(r.get("flags"))]
    print(f"  flagged: {len(flagged)}" + "".join(
        f"\n    {printable(r['submission'])}: {printable(_as_list(r['flags'])[0])}"
        + (f" (+{len(_as_list(r['flags'])) - 1} more)" if len(_as_list(r["flags"])) > 1 else "")
        for r in flagged), file=stream)
