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
import importlib.metadata
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

FUNCTIONS_FILES = [module.replace(".", "/") + ".py" for module in FUNCTIONS]

_ROUTING, _LOSS = "contrastive_prompts.core.routing.", "contrastive_prompts.core.loss."
_LAST_AXIS = "the tensor is (B, N): axis +1 is its last axis, -1"
_CPU_KERNEL = (
    "on the CPU, where the tests run, torch's bfloat16 softmax computes in float32 and rounds "
    "once, as the explicit promotion does (the promotion is for other devices' kernels)"
)
EQUIVALENT = {
    _ROUTING + "x_load_balance_loss__mutmut_3": _LAST_AXIS,
    _ROUTING + "x_label_routing_loss__mutmut_23": _LAST_AXIS,
    _ROUTING + "x_label_routing_loss__mutmut_42": (
        "moving the table to the labels' device: on one device the move does nothing"
    ),
    _ROUTING + "x_label_routing_loss__mutmut_53": _LAST_AXIS,
    _ROUTING + "x_topk_route__mutmut_33": _LAST_AXIS,
    _ROUTING + "x_topk_route__mutmut_47": _CPU_KERNEL,
    _ROUTING + "x_topk_route__mutmut_49": _CPU_KERNEL,
    _ROUTING + "x_topk_route__mutmut_50": _LAST_AXIS,
    _ROUTING + "x_topk_route__mutmut_60": "topk's default dimension is the last",
    _ROUTING + "x_topk_route__mutmut_61": _LAST_AXIS,
    _ROUTING + "x_topk_route__mutmut_69": _LAST_AXIS,
    _ROUTING + "x_topk_route__mutmut_80": _LAST_AXIS,
    _LOSS + "x__layer_distances__mutmut_4": (
        "zip(strict=None): both lists of maps come from one features module, of one length"
    ),
    _LOSS + "x__layer_distances__mutmut_7": "zip without strict: as above",
    _LOSS + "x__layer_distances__mutmut_8": "zip(strict=False): as above",
    _LOSS + "x__layer_distances__mutmut_21": "F.normalize's default dimension is 1, the channels",
    _LOSS + "x__layer_distances__mutmut_26": "F.normalize's default dimension is 1, the channels",
}
"""Survivors that compute what the original does for every input the function accepts, and why:
no test can tell them apart."""


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
    parser.add_argument("--json", help="write the summary here too")
    args = parser.parse_args()
    if args.names:
        print(" ".join(names()))
        return
    from mutmut.stats import status_by_exit_code  # mutmut's own reading of its exit codes

    per_function: dict[str, collections.Counter[str]] = {}
    survivors = []
    for module, functions in FUNCTIONS.items():
        meta = Path("mutants", *module.split(".")).with_suffix(".py.meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for function in functions:
            prefix = f"{module}.x_{function}__mutmut_"
            counts = collections.Counter(
                status_by_exit_code[code] for key, code in codes.items() if key.startswith(prefix)
            )
            per_function[f"{module}.{function}"] = counts
            for key, code in sorted(codes.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1])):
                if key.startswith(prefix) and code == 0:
                    survivors.append(
                        {"mutant": key, "change": change(key), "equivalent": EQUIVALENT.get(key)}
                    )
    total = sum(per_function.values(), collections.Counter())
    gaps = [s for s in survivors if s["equivalent"] is None]
    core = subprocess.run(  # the last commit that changed what was mutated
        ["git", "log", "-1", "--format=%H", "--", *FUNCTIONS_FILES],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    figures = {
        "config": {
            "mutmut": importlib.metadata.version("mutmut"),
            "core_commit": core,
            "functions": list(per_function),
        },
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
