"""`qvl-harness families`: the vision families, and what each matrix cell's transformers runs of them."""

from __future__ import annotations

from pathlib import Path

from harness.env.matrix import load_matrix
from harness.families import registry


def register(sub) -> None:
    p = sub.add_parser(
        "families",
        help="the vision families and what each matrix cell runs of them",
        description="Examples: qvl-harness families; qvl-harness families --cell u2025-01-05",
    )
    p.add_argument("--cell", action="append", default=[], help="only this cell, family by family (repeatable)")
    p.add_argument("--file", type=Path, help="matrix file (default: matrix.toml of the checkout)")
    p.set_defaults(func=cmd_families)


def cmd_families(args) -> int:
    matrix = load_matrix(args.file)
    cells = matrix.select(args.cell)  # an unknown cell is one line before anything is printed
    every = registry.families()
    print(f"{'family':12} {'transformers':13} {'class':36} {'vision modules':36} sizes")
    for fam in every:
        print(
            f"{fam.id:12} {'>=' + fam.since:13} {fam.model_class:36} {', '.join(fam.vision_modules):36} "
            f"{' '.join(fam.hub_names)}"
        )
    print()
    for cell in cells:
        plan = registry.plan(cell.pins["transformers"])
        if not args.cell:
            skipped = ", ".join(f"{f.id} (needs >= {f.since})" for f in plan.not_run) or "-"
            print(
                f"{cell.name:14} transformers {plan.transformers:9} runs: {' '.join(f.id for f in plan.runs)}"
                f"; not run: {skipped}"
            )
            continue
        print(f"cell {cell.name} (transformers {plan.transformers}):")
        for fam in every:
            print(f"  {fam.id:12} {_cell_line(fam, plan)}")
    return 0


def _cell_line(fam, plan: registry.Plan) -> str:
    if fam not in plan.runs:
        return plan.reason(fam).split(" (this run")[0]
    cast = fam.pixel_cast(plan.transformers)
    if cast is None:
        return "runs; its pixel cast for this release is not declared"
    return f"runs; pixels cast to {cast.target}" + (" (uint8 when 4-bit)" if cast.uint8_when_4bit else "")
