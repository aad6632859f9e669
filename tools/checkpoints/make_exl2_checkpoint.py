#!/usr/bin/env python3
"""Turn a Hugging Face float checkpoint (Llama/Qwen2 layout) into an EXL2-
layout directory as exllamav2's converter lays it out (issue 20), with the
round-to-nearest packer of exl2_format.py instead of exllamav2's calibrated
GPTQ: the fixture the EXL2 loader is tested on. Deterministic: the same input
and options give the same bytes.

Output (after exllamav2/conversion/compile.py):
  output.safetensors   per decoder linear <module>.q_weight, .q_scale,
                       .q_scale_max, .q_groups, .q_invperm (and .bias when the
                       source has one); every other tensor copied unchanged
                       (embeddings, norms; an unquantized lm_head).
  config.json          the source's, plus quantization_config {quant_method:
                       "exl2", version, bits, head_bits, calibration {rows,
                       length, dataset}} as exllamav2 writes it (bits: the
                       achieved average bits per weight of the decoder
                       linears; calibration: none, this is RTN).
  everything else      copied (tokenizer files, generation_config.json).
Optionally --reference-out: a safetensors file of the dequantized weights
(<module>.weight, F32 [out, in]) that the loader must reproduce bit for bit.

Bit mix: --layouts "SPEC;SPEC;..." is cycled over the decoder linears in
order (layer by layer; q, k, v, o, gate, up, down). SPEC is
"bits:proportion,...@group_size" with widths in decreasing order, e.g.
"5:0.1,4:0.9@64" (exllamav2's QParams). The default cycle puts all six widths
(8, 6, 5, 4, 3, 2) into one matrix and covers every width in mixes like
exllamav2's tables. The input rows get a deterministic act-order permutation
(decreasing column norm) unless --no-perm.

Usage: make_exl2_checkpoint.py SRC_DIR OUT_DIR [--layouts ...] [--head-bits N]
       [--reference-out FILE] [--no-perm]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exl2_format  # noqa: E402
import quant_formats  # noqa: E402

DEFAULT_LAYOUTS = (
    "8:0.125,6:0.125,5:0.125,4:0.125,3:0.25,2:0.25@32",  # every width in one matrix
    "4:0.1,3:0.9@128",
    "5:0.1,4:0.9@64",
    "6:0.1,5:0.9@128",
    "8:0.15,6:0.85@32",
    "3:0.1,2:0.9@64",
    "8:1.0@128",
)
# exllamav2's qparams_headoptions (conversion/qparams.py): head bits -> layout.
HEAD_LAYOUTS = {
    2: "4:0.3,2:0.7@32", 3: "4:0.15,3:0.85@32", 4: "6:0.15,4:0.85@32",
    5: "6:0.15,5:0.85@128", 6: "8:0.15,6:0.85@128", 8: "8:1.0@128",
}
EXL2_VERSION = "0.3.2"  # the exllamav2 release whose layout this follows
PROJ_ORDER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
LINEAR_RE = re.compile(r"^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.weight$")


def parse_spec(spec):
    """'5:0.1,4:0.9@64' -> ([(5, 0.1), (4, 0.9)], 64)."""
    layout, _, gs = spec.strip().partition("@")
    if not gs:
        raise ValueError(f"layout {spec!r} needs '@group_size'")
    return exl2_format.parse_layout(layout), int(gs)


def ordered_linears(tensors):
    found = []
    for name in tensors:
        m = LINEAR_RE.match(name)
        if m:
            found.append((int(m.group(1)), PROJ_ORDER.index(m.group(2)), name[:-len(".weight")]))
    return [n for _, _, n in sorted(found)]


def convert(src, out, layouts=DEFAULT_LAYOUTS, head_bits=0, reference_out=None, use_perm=True):
    specs = [parse_spec(s) for s in layouts]
    if not specs:
        raise ValueError("no layouts")
    config, tensors = quant_formats.load_checkpoint(src)
    os.makedirs(out, exist_ok=True)
    quant_formats._copy_side_files(src, out)

    linears = ordered_linears(tensors)
    if not linears:
        raise ValueError(f"{src}: no decoder linears found")
    targets = [(name, specs[i % len(specs)]) for i, name in enumerate(linears)]
    if head_bits:
        if head_bits not in HEAD_LAYOUTS:
            raise ValueError(f"head bits must be one of {sorted(HEAD_LAYOUTS)}")
        if "lm_head.weight" not in tensors:
            raise ValueError("--head-bits: the source has no lm_head.weight (tied embeddings)")
        targets.append(("lm_head", parse_spec(HEAD_LAYOUTS[head_bits])))

    out_tensors = {}
    reference = {}
    used = set()
    bits_total = 0.0
    weights_total = 0
    for name, (layout, gs) in targets:
        w = tensors[name + ".weight"].to_f32()
        bias = tensors[name + ".bias"].to_f32() if name + ".bias" in tensors else None
        perm = exl2_format.act_order_perm(w) if use_perm else None
        q = exl2_format.quantize_rtn(w, layout, gs, perm=perm, bias=bias)
        for k, v in q.items():
            out_tensors[f"{name}.{k}"] = v
        if reference_out:
            reference[name + ".weight"] = exl2_format.dequantize(q, w.shape[0], key=name)
        if name != "lm_head":
            bits_total += exl2_format.bits_per_weight(q, w.shape[0]) * w.size
            weights_total += w.size
        used.update(b for b, _ in layout)
    done = {n + ".weight" for n, _ in targets} | {n + ".bias" for n, _ in targets}
    for k, v in tensors.items():
        if k not in done:
            out_tensors[k] = v
    quant_formats.write_safetensors(os.path.join(out, "output.safetensors"), out_tensors)

    bpw = bits_total / weights_total
    config = dict(config)
    config["quantization_config"] = {
        "quant_method": "exl2",
        "version": EXL2_VERSION,
        "bits": round(bpw, 4),
        "head_bits": head_bits if head_bits else 16,
        "calibration": {"rows": 0, "length": 0,
                        "dataset": "(none: round-to-nearest, tools/checkpoints/make_exl2_checkpoint.py)"},
    }
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(config, indent=4))
    if reference_out:
        quant_formats.write_safetensors(reference_out, reference)
    return {"bits_per_weight": bpw, "widths": sorted(used), "linears": len(targets)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--layouts", default=";".join(DEFAULT_LAYOUTS),
                    help="';'-separated SPECs 'bits:prop,...@group', cycled over the decoder linears")
    ap.add_argument("--head-bits", type=int, default=0, help="quantize lm_head too (exllamav2's head options)")
    ap.add_argument("--reference-out", help="write the dequantized weights (F32) here")
    ap.add_argument("--no-perm", action="store_true", help="identity row permutation")
    args = ap.parse_args(argv)
    try:
        info = convert(args.src, args.out, [s for s in args.layouts.split(";") if s.strip()],
                       args.head_bits, args.reference_out, not args.no_perm)
    except (ValueError, OSError, KeyError) as e:
        print(f"make_exl2_checkpoint: {e}", file=sys.stderr)
        return 1
    print(f"{info['linears']} linears, widths {info['widths']}, {info['bits_per_weight']:.4f} bits per weight")
    return 0


if __name__ == "__main__":
    sys.exit(main())
