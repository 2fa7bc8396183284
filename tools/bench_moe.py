"""Issue 17's MoE goal: a top-2 mixture of 8 experts against a dense model of 2 experts, simulated makespan.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_moe.py
    python tools/bench_moe.py --tokens 1 --targets edge-soc
    python tools/bench_moe.py --tokens 1 --d-model 256 --hidden 1024    # experts of 2 MiB each

Both models are ``tools/make_models.py``'s ``moe`` (the builder of ``models/moe.onnx``: d_model 64, hidden
128 unless given, seeded fan-in-scaled weights) with other token and expert counts: the MoE routes with
Softmax, TopK and OneHot and weights each expert's output by its gate (zero for the experts a token did not
choose), the dense model sums its 2 experts with no router. Each is built with CP-SAT, simulated on seeded
random inputs and validated against onnxruntime. The MoE's experts are predicated (hetc.ir.predicates): the
figure is its expected simulated makespan over the build's seeded inputs (``summary["predicated"]``), beside
the mean over every choice of the router's (``uniform_us``: each timed without data, the other experts
skipped) and the worst case every gate on. The goal is a ratio of at most 1.3: an MoE that computes only the experts its router picks
costs about what its 2 chosen experts cost. With 16 tokens every expert is chosen by some token, so nothing
is skipped there.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_models  # noqa: E402

from hetc.api import BuildOptions, build  # noqa: E402

GOAL = 1.3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="1,16", help="comma-separated token counts (1: a decode step)")
    ap.add_argument("--targets", default="edge-soc,multi-npu")
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=make_models.MOE["d_model"])
    ap.add_argument("--hidden", type=int, default=make_models.MOE["hidden"], help="each expert's hidden width")
    args = ap.parse_args(argv)
    size = dict(d_model=args.d_model, hidden=args.hidden)
    print(f"| tokens | target | MoE {args.experts} experts top-{args.top_k}: expected sim µs (range) | every choice: "
          f"mean (range) | worst case sim µs | dense {args.top_k} experts sim µs | ratio expected / dense (goal <= "
          f"{GOAL}) | validation |\n|---|---|---|---|---|---|---|---|")
    for tokens in (int(t) for t in args.tokens.split(",")):
        for target in args.targets.split(","):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # the accelerators' idle warnings of a tiny model
                routed = build(make_models.moe(tokens, args.experts, args.top_k, name=f"moe{args.experts}", **size),
                               BuildOptions(target=target, validate=True))
                dense = build(make_models.moe(tokens, args.top_k, None, name=f"dense{args.top_k}", **size),
                              BuildOptions(target=target, validate=True))
            predicated = routed.summary.get("predicated")
            if predicated is None:   # no expert predicated (nothing to skip): the one simulation is the figure
                expected = worst = routed.sim.makespan_ns / 1000
                spread = every = ""
            else:
                expected, worst = predicated["expected_us"], predicated["worst_case_us"]
                spread = f" ({predicated['min_us']:,.1f}-{predicated['max_us']:,.1f})"
                every = (f"{predicated['uniform_us']:,.1f} ({predicated['uniform_min_us']:,.1f}-"
                         f"{predicated['uniform_max_us']:,.1f})")
            dense_us = dense.sim.makespan_ns / 1000
            verdict = "pass" if routed.validation.passed and dense.validation.passed else "FAIL"
            print(f"| {tokens} | {target} | {expected:,.1f}{spread} | {every or '-'} | {worst:,.1f} | {dense_us:,.1f} "
                  f"| {expected / dense_us:.2f} | {verdict} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
