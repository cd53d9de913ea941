"""Copy a trained checkpoint into a shippable model folder, weights stored in fp16.

    python -m train.export ~/.cache/ds2/runs/small/best assets/models/ds2-small

fp16 storage halves the file; weights are widened back to fp32 on load, so inference is unchanged
but for the rounding of each weight (measure the WER of the exported folder, not the checkpoint).
"""

import argparse
import json

from ds2.checkpoint import load_model, save_model


def export(src, dst, half: bool = True, meta: dict | None = None) -> None:
    model, features, old_meta = load_model(src)
    save_model(dst, model, features, {**old_meta, **(meta or {}), "parameters": model.num_parameters,
                                      "weights_dtype": "float16" if half else "float32"}, half=half)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="a model folder, e.g. RUN_DIR/best")
    parser.add_argument("dst", help="where to write model.safetensors and config.json")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 weights")
    parser.add_argument("--meta", default="{}", help="JSON object merged into config.json's meta")
    args = parser.parse_args(argv)
    export(args.src, args.dst, half=not args.fp32, meta=json.loads(args.meta))


if __name__ == "__main__":
    main()
