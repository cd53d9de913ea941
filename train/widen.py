"""Widen a trained model's recurrent layers without changing what it computes (Net2WiderNet, Chen et
al. 2016), so that a bigger model starts training from a smaller one's accuracy instead of from
scratch:

    python -m train.widen assets/models/ds2-small --rnn-hidden 384 --out ~/.cache/ds2/runs/w384-init

Each new unit copies an old unit of the same layer: the same incoming weights and biases in every
gate, the same BatchNorm statistics where the layer's output is normalised. Everything that reads a
copied unit (its own layer's recurrent weights, the next layer's input weights, the output layer)
splits the old unit's weight among the unit and its copies, so sums over them are unchanged and the
widened model gives the same outputs (to rounding) in training and in eval mode. The split is
uneven and random (seeded): copies then get different gradients and grow apart in training instead
of staying identical forever.
"""

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from ds2.checkpoint import CheckpointError, load_model, save_model
from ds2.model import DeepSpeech2


def _plan(old: int, new: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit k of the wider layer copies old unit source[k]; share[k] is its part of that unit's
    outgoing weight (the shares of one old unit's copies sum to 1)."""
    extra = new - old
    picks = [torch.randperm(old, generator=generator)[:min(old, extra - done)] for done in range(0, extra, old)]
    source = torch.cat([torch.arange(old), *picks])
    weight = 1 + torch.rand(new, generator=generator, dtype=torch.float64)  # in [1, 2): at most 2:1 uneven
    total = torch.zeros(old, dtype=torch.float64).index_add_(0, source, weight)
    return source, weight / total[source]


def _widen_rnn(state: dict, prefix: str, old: int, in_plan, plan) -> None:
    """One nn.GRU/nn.LSTM's weights in `state`: each gate's rows follow the unit plan, input columns
    are split by the previous layer's plan (None: the input is not widened), recurrent columns by
    this layer's."""
    source = plan[0]
    gates = state[prefix + "weight_hh_l0"].shape[0] // old
    rows = torch.cat([g * old + source for g in range(gates)])
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        state[prefix + name] = state[prefix + name][rows]
    if in_plan is not None:
        state[prefix + "weight_ih_l0"] = _split_columns(state[prefix + "weight_ih_l0"], in_plan)
    state[prefix + "weight_hh_l0"] = _split_columns(state[prefix + "weight_hh_l0"], plan)


def _split_columns(weight: torch.Tensor, plan) -> torch.Tensor:
    """The weights that read a widened input: each copy gets its share of its unit's column."""
    source, share = plan
    return (weight[:, source] * share.to(weight.dtype)).contiguous()


def _widen_norm(state: dict, prefix: str, source) -> None:
    """A BatchNorm over a widened input: each copy gets its unit's statistics and affine weights."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        state[prefix + name] = state[prefix + name][source]


def widen(model: DeepSpeech2, hidden: int, seed: int = 0) -> DeepSpeech2:
    """A copy of `model` with `hidden` units in each recurrent layer (at least its own), computing the same."""
    old = model.config.rnn_hidden
    if hidden < old:
        raise ValueError(f"rnn_hidden {hidden} is narrower than the model's {old}: widening only adds units")
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()  # a fresh dict: widened entries are replaced, never changed in place
    plan = None  # how the previous layer's output was widened (None: the conv features, kept)
    for i, layer in enumerate(model.rnns):
        if layer.norm is not None:
            _widen_norm(state, f"rnns.{i}.norm.", plan[0])
        new_plan = _plan(old, hidden, generator)  # both directions alike: their outputs are summed
        for direction in ("rnn", "rnn_reverse"):
            if getattr(layer, direction) is not None:
                _widen_rnn(state, f"rnns.{i}.{direction}.", old, plan, new_plan)
        plan = new_plan
    if model.lookahead is not None:  # depthwise: each copy keeps its unit's filter
        state["lookahead.conv.weight"] = state["lookahead.conv.weight"][plan[0]]
    _widen_norm(state, "output_norm.", plan[0])
    state["fc.weight"] = _split_columns(state["fc.weight"], plan)
    wide = DeepSpeech2(replace(model.config, rnn_hidden=hidden))
    wide.load_state_dict(state)
    return wide.train(model.training)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="a model folder (e.g. assets/models/ds2-small or RUN/best)")
    parser.add_argument("--rnn-hidden", type=int, required=True, help="units per recurrent layer in the result")
    parser.add_argument("--out", required=True, help="where to write the widened model folder (fp32)")
    parser.add_argument("--seed", type=int, default=0, help="seed for which units are copied and the splits")
    args = parser.parse_args(argv)
    try:
        model, features, meta = load_model(Path(args.src).expanduser())
        wide = widen(model, args.rnn_hidden, args.seed)
    except (CheckpointError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    meta = {k: v for k, v in meta.items() if k not in ("weights_dtype", "parameters")}
    save_model(Path(args.out).expanduser(), wide, features,
               {**meta, "widened_from": args.src, "widen_seed": args.seed, "parameters": wide.num_parameters})
    print(f"wrote {args.out}: {model.config.rnn_hidden} -> {args.rnn_hidden} recurrent units, "
          f"{model.num_parameters:,} -> {wide.num_parameters:,} parameters")


if __name__ == "__main__":
    main()
