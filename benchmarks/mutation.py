"""Mutation testing of a sample of the core: does a small mistake in the code turn a test red?

mutmut (``pip install -e ".[mutation]"``; its settings are under ``[tool.mutmut]`` in
pyproject.toml) copies the package into ``mutants/``, makes one small change at a time in the
functions named below (an operator, a constant, an argument, a keyword) and runs the tests that
reach the function. A mutant is *killed* when a test fails, *survived* when every test passes.
This script summarises a finished run per function and lists each survivor with its change and
why it may survive: a change that computes the same thing for every input the function accepts
(an *equivalent* mutant) is no gap in the tests; any other survivor is one, and a test was added
for it.

    mutmut run --max-children 1 $(python benchmarks/mutation.py --names)   # about an hour
    python benchmarks/mutation.py --json benchmarks/results/mutation_core.json
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
from pathlib import Path

FUNCTIONS = {
    "contrastive_prompts.core.routing": (
        "topk_route", "load_balance_loss", "label_routing_loss",
    ),
    "contrastive_prompts.core.loss": ("_layer_distances", "contrastive_prompt_loss"),
}  # fmt: skip
"""The sample: the routing of a prompt layer, its two training terms and the contrastive loss."""

EQUIVALENT = {
    "probs.shape[-1] -> probs.shape[+1]": "probs is (B, N): its last axis is axis 1",
    "experts.to(labels.device) -> experts.to(None)": (
        "on one device the move does nothing; the tests run on the CPU"
    ),
    "zip(..., strict=True) -> zip(..., strict=None)": (
        "both lists of feature maps come from the same features module: always of one length"
    ),
}
"""Why a survivor computes what the original does, by the change it makes."""

STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout", -24: "timeout"}


def names() -> list[str]:
    """mutmut's selectors for the sample's mutants."""
    return [f"{module}.x_{name}*" for module, fs in FUNCTIONS.items() for name in fs]


def change(mutant: str) -> list[str]:
    """The lines a mutant changes, as ``mutmut show`` prints them (``-`` old, ``+`` new)."""
    shown = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", mutant], capture_output=True, text=True
    ).stdout.splitlines()
    return [
        line.strip() for line in shown if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", action="store_true", help="print the selectors and stop")
    parser.add_argument("--equivalent", nargs="*", default=[], metavar="MUTANT=REASON_KEY")
    parser.add_argument("--json", help="write the summary here too")
    args = parser.parse_args()
    if args.names:
        print(" ".join(names()))
        return
    reasons = dict(item.split("=", 1) for item in args.equivalent)
    unknown = sorted(set(reasons.values()) - set(EQUIVALENT))
    if unknown:
        raise SystemExit(f"--equivalent: expected reasons among {sorted(EQUIVALENT)}, got {unknown}")
    per_function: dict[str, collections.Counter[str]] = {}
    survivors = []
    for module, functions in FUNCTIONS.items():
        meta = Path("mutants", *module.split(".")).with_suffix(".py.meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for function in functions:
            prefix = f"{module}.x_{function}__mutmut_"
            counts = collections.Counter(
                STATUS.get(code, "not run" if code is None else f"exit {code}")
                for key, code in codes.items()
                if key.startswith(prefix)
            )
            per_function[f"{module}.{function}"] = counts
            for key, code in sorted(codes.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1])):
                if key.startswith(prefix) and code == 0:
                    reason = reasons.get(key.rsplit(".", 1)[1])
                    survivors.append({
                        "mutant": key, "change": change(key),
                        "equivalent": EQUIVALENT[reason] if reason else None,
                    })  # fmt: skip
    total = sum(per_function.values(), collections.Counter())
    gaps = [s for s in survivors if s["equivalent"] is None]
    figures = {
        "functions": {name: dict(sorted(c.items())) for name, c in per_function.items()},
        "total": dict(sorted(total.items())),
        "survivors": survivors,
        "gaps": len(gaps),
    }
    print("| function | " + " | ".join(sorted(total)) + " |")
    print("|---|" + "---:|" * len(total))
    for name, counts in per_function.items():
        print(f"| `{name}` | " + " | ".join(str(counts[s]) for s in sorted(total)) + " |")
    for s in survivors:
        print(s["mutant"], s["change"], s["equivalent"] or "A GAP IN THE TESTS")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
