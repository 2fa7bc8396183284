"""Figures of a conformance run (``tools/conformance.py``): the console summary and ``docs/conformance.md``."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

Result = dict[str, Any]
DEVICES = ("npu", "dsp", "cpu")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def union_pass(r: Result) -> bool:
    return bool(r["ort"]) or bool(r["ref"])


def counts(results: list[Result], kind: str | None = None) -> dict[str, int]:
    rs = [r for r in results if kind is None or (r["kind"] == "node") == (kind == "node")]
    return {
        "cases": len(rs),
        "hetc": sum(r["hetc"] == "pass" for r in rs),
        "ort": sum(bool(r["ort"]) for r in rs),
        "ref": sum(bool(r["ref"]) for r in rs),
        "union": sum(union_pass(r) for r in rs),
        "excluded": sum(r["hetc"] == "excluded" for r in rs),
        "missed": sum(union_pass(r) and r["hetc"] != "pass" for r in rs),
        "hetc_only": sum(r["hetc"] == "pass" and not union_pass(r) for r in rs),
    }


def kernel_coverage(results: list[Result]) -> dict[str, Counter]:
    """op -> {device: number of passing cases in which a node of that op ran on that device}."""
    coverage: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        if r["hetc"] != "pass":
            continue
        seen = {entry for placement in r["placements"].values() for entry in placement}
        for entry in seen:
            op, _, engine = entry.rpartition("@")
            coverage[op][engine] += 1
    return dict(sorted(coverage.items()))


def failures_by_reason(results: list[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r["hetc"] not in ("pass", "excluded"):
            groups[r["reason"]].append(r)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def exclusions_by_reason(results: list[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r["hetc"] == "excluded":
            groups[r["reason"]].append(r)
    return dict(groups)


def _line(label: str, c: dict[str, int]) -> str:
    return (f"{label:<8} {c['cases']:>6} {c['hetc']:>6} {c['ort']:>6} {c['ref']:>6} {c['union']:>6} "
            f"{c['excluded']:>6} {c['missed']:>7} {c['hetc_only']:>6}")


def table(results: list[Result]) -> str:
    header = f"{'':<8} {'cases':>6} {'hetc':>6} {'ort':>6} {'ref':>6} {'ort|ref':>6} {'excl':>6} {'missed':>7} {'hetc+':>6}"
    return "\n".join([header, _line("node", counts(results, "node")), _line("model", counts(results, "model")),
                      _line("all", counts(results))])


def summarize(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [table(results), "",
             "hetc: passes; ort / ref: onnxruntime / onnx.reference pass; ort|ref: either passes; excl: excluded; "
             "missed: either passes but hetc does not; hetc+: hetc passes, neither reference does", ""]
    for reason, rs in failures_by_reason(results).items():
        lines.append(f"{len(rs):>5}  {reason}   e.g. {', '.join(r['name'] for r in rs[:3])}")
    lines.append(f"wall {meta['wall_s']} s with {meta['jobs']} job(s)")
    return "\n".join(lines)


def _coverage_table(results: list[Result]) -> str:
    rows = ["| op | npu | dsp | cpu |", "|---|---:|---:|---:|"]
    for op, by_device in kernel_coverage(results).items():
        rows.append(f"| {op} | " + " | ".join(str(by_device.get(d, "")) for d in DEVICES) + " |")
    return "\n".join(rows)


def _names(rs: list[Result], limit: int = 40) -> str:
    names = ", ".join(f"`{r['name']}`" for r in rs[:limit])
    return names + (f" and {len(rs) - limit} more" if len(rs) > limit else "")


def write_docs(results: list[Result], meta: dict[str, Any], exclusions: dict[str, str]) -> str:
    node, allc = counts(results, "node"), counts(results)
    coverage = kernel_coverage(results)
    on = {d: sorted(op for op, c in coverage.items() if c.get(d)) for d in DEVICES}
    missed = [r for r in results if union_pass(r) and r["hetc"] != "pass"]
    ort_missed = [r for r in results if r["ort"] and r["hetc"] != "pass"]
    out = [
        "# ONNX backend conformance",
        "",
        "`hetc.backend` makes hetc an ONNX backend (`onnx.backend.base.Backend`): `prepare(model, "
        "target=\"edge-soc\", scheduler=\"cpsat\")` compiles the model into a bundle (saved in a temporary "
        "directory and loaded back), `rep.run(inputs)` simulates it functionally and returns the outputs in "
        "graph-output order. `tools/conformance.py` runs every official ONNX case through it and through "
        "onnxruntime and `onnx.reference`, and compares each with the expected outputs by ONNX's own rule "
        "(`Runner.assert_similar_outputs`: same shapes and dtypes, `allclose` at the case's rtol/atol, "
        "1e-3/1e-7 unless the case says otherwise).",
        "",
        "Regenerate this page (about " + f"{meta['wall_s'] / 60:.0f}" + " minutes with 2 jobs on a 2-core machine):",
        "",
        "```",
        "python tools/conformance.py --jobs 2 --write-docs",
        "```",
        "",
        f"Run: onnx {meta['onnx']}, onnxruntime {meta['onnxruntime']}, target `{meta['target']}`, CP-SAT "
        f"limited to {meta['time_limit_s']:g} s per case; "
        + ("each case whose nodes all have NPU (DSP) kernels is also run pinned to that device "
           "(`single:npu`, `single:dsp`), and passes only if every run passes. " if meta["pinned"] else "")
        + f"Wall time {meta['wall_s']:.0f} s with {meta['jobs']} job(s).",
        "",
        "How a case runs: the whole pipeline (import, passes, schedule, memory plan, codegen), the bundle saved "
        "and loaded back, then the functional simulation on the case's inputs. Inputs with dynamic dimensions "
        "take the shapes of the first run's arrays. A shape that depends on the *value* of a small integer "
        "input (Reshape targets, reduction axes, window lengths given as inputs) makes the backend freeze that "
        "input into the bundle as a constant; another value compiles another bundle. Sequences, optionals, "
        "string tensors and the run-time-shaped results of Unique and friends are host values, which the "
        "host CPU holds in its heap (docs/frontend.md, \"Host values\"); the backend takes and returns them "
        "as ONNX's runner does (lists, None, arrays of str). onnxruntime runs each "
        "model with its IR version capped at 13 (the newest it reads), which changes no semantics.",
        "",
        "## Counts",
        "",
        "```",
        table(results),
        "```",
        "",
        "*hetc*: cases hetc passes; *ort* / *ref*: cases onnxruntime / onnx.reference pass; *ort|ref*: either; "
        "*excl*: excluded for hetc (below); *missed*: either reference passes, hetc does not; *hetc+*: hetc passes, "
        "neither reference does. *node* is `collect_testcases()`; *model* the wheel's `simple`, "
        "`pytorch-converted`, `pytorch-operator` and `light` cases.",
        "",
        f"Node cases: hetc passes **{node['hetc']} of {node['cases']}**; onnxruntime {node['ort']}, "
        f"onnx.reference {node['ref']}, either {node['union']}. All cases: hetc {allc['hetc']} of "
        f"{allc['cases']}, either reference {allc['union']}; {_count(allc['missed'], 'case')} that a reference "
        "passes missed by hetc.",
        "",
        f"Against onnxruntime alone (hetc's CPU path runs it node by node): of the {allc['ort']} cases it passes, "
        f"hetc passes {allc['ort'] - len(ort_missed)}; of the {_count(len(ort_missed), 'other')}, "
        f"{sum(r['hetc'] == 'excluded' for r in ort_missed)} excluded and "
        f"{sum(r['hetc'] != 'excluded' for r in ort_missed)} failing. hetc passes "
        f"{sum(r['hetc'] == 'pass' and not r['ort'] for r in results)} cases onnxruntime does not (its CPU "
        "fallback goes to onnx.reference when onnxruntime refuses a node, and its own kernels follow ONNX).",
        "",
        "## Kernel coverage",
        "",
        "Number of passing cases in which a node of each op ran on each device (any run of the case).",
        "",
        f"- NPU ran {len(on['npu'])} op types, DSP {len(on['dsp'])}, CPU {len(on['cpu'])}.",
        "",
        _coverage_table(results),
        "",
        "## Failures by reason",
        "",
    ]
    failures = failures_by_reason(results)
    if not failures:
        out += ["None.", ""]
    for reason, rs in failures.items():
        both = sum(union_pass(r) for r in rs)
        out += [f"### {reason} ({len(rs)}; a reference passes {both})", "", _names(rs), ""]
    out += ["## Missed cases (a reference passes, hetc does not)", ""]
    out.append(_names(missed, limit=200) if missed else "None.")
    out += ["", "## Exclusions", "",
            "Listed with their reason in `tests/conformance_exclusions.jsonc`; not compiled by hetc.", ""]
    for reason, rs in sorted(exclusions_by_reason(results).items(), key=lambda kv: -len(kv[1])):
        both = sum(union_pass(r) for r in rs)
        out += [f"- **{reason}** ({len(rs)}; a reference passes {both}): {_names(rs, limit=12)}"]
    out.append("")
    return "\n".join(out)
