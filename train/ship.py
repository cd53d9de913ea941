"""Which model of a training run ships? The rule and the candidates written in its config, measured.

    python -m train.ship train/configs/small-s48.toml --json ~/.cache/ds2/runs/small-s48/ship.json

The config's `[ship]` table holds the rule and the candidates, written before the run (`train.fit`
ignores it):

    [ship]
    baseline = "~/.cache/ds2/runs/small-s42/soup3ls"  # the model to beat: the bundled one, in fp32
    no_worse = ["librispeech-dev.jsonl"]              # dev parts whose WER and CER may not get worse
    max_errors = { "an4-dev.jsonl" = 34, "digits-dev.jsonl" = 77 }  # word errors allowed on these parts
    p_worse = 0.95        # and no part worse beyond chance: paired bootstrap p_worse below this
    shifts_ms = [0, 10, 20]  # optional: dev decoded at each start shift, errors summed (default [0])
    candidates = { avg = ["init", 1, 2, 3], tail = [1, 2, 3] }      # means of model folders

A member of a mean is "init" (the config's `init`), an epoch number N (OUT_DIR/epochs/00N) or a
model folder (long lists read better in a `[ship.candidates]` table). Every epoch folder the run
kept is a candidate too. The means are written to
OUT_DIR/NAME (`train.average`), then the baseline and every candidate decode each of the config's dev
manifests greedily, as `train.fit` measures dev. A candidate passes when its pooled dev WER is below
the baseline's, it has no more word or character errors on the `no_worse` parts, no more word errors
than `max_errors` allows, and on no part a paired bootstrap (`train.compare`) finds it worse with
p_worse at or above `p_worse`. With `shifts_ms`, every model decodes each dev utterance once per
start shift (its first milliseconds dropped, as `ds2 evaluate --start-ms` does) and the counts
above, `max_errors` included, are the sums: a stride-3 network's dev errors move by about as much
between phases of its frame grid as between two training cycles, so one pass can pick by chance.
Of those that pass, the lowest pooled dev WER is the pick (the first listed on a tie); nothing is
exported: `python -m train.export PICK assets/models/...` does that.
A candidate's network may differ from the baseline's (a widened model against its narrower
start); its features and output classes may not. Test sets are not touched. `--only NAME ...`
measures just those candidates, such as the ones that exist before the run.
"""

import argparse
import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ds2.audio import start_samples
from ds2.checkpoint import CheckpointError
from ds2.data import ManifestError
from ds2.training import ConfigError, TrainConfig


RUN_FOLDERS = ("best", "epochs", "swa", "tb")  # what train.fit writes into OUT_DIR: no mean may replace it


@dataclass
class ShipRule:
    baseline: str
    no_worse: list = field(default_factory=list)
    max_errors: dict = field(default_factory=dict)
    p_worse: float = 0.95
    candidates: dict = field(default_factory=dict)
    resamples: int = 10_000
    shifts_ms: list = field(default_factory=lambda: [0])

    @classmethod
    def load(cls, path) -> "ShipRule":
        """The [ship] table of a training config."""
        table = tomllib.loads(Path(path).read_text()).get("ship")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: no [ship] table (the rule and candidates; see python -m train.ship --help)")
        unknown = set(table) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"{path}: unknown [ship] settings: {', '.join(sorted(unknown))}")
        if "baseline" not in table:
            raise ConfigError(f"{path}: [ship] needs a baseline, the model folder to beat")
        rule = cls(**table)
        if not (isinstance(rule.no_worse, list) and all(isinstance(p, str) for p in rule.no_worse)):
            raise ConfigError(f"{path}: [ship] no_worse = {rule.no_worse!r}: expected a list of dev manifest names")
        if not isinstance(rule.max_errors, dict) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in rule.max_errors.values()):
            raise ConfigError(f"{path}: [ship] max_errors = {rule.max_errors!r}: expected word counts >= 0")
        if not (isinstance(rule.p_worse, (int, float)) and 0 < rule.p_worse <= 1):
            raise ConfigError(f"{path}: [ship] p_worse = {rule.p_worse!r}: expected a probability in (0, 1]")
        if not isinstance(rule.resamples, int) or rule.resamples < 1:
            raise ConfigError(f"{path}: [ship] resamples = {rule.resamples!r}: expected a count >= 1")
        if not (isinstance(rule.shifts_ms, list) and rule.shifts_ms  # numbers first: set() needs them hashable
                and all(isinstance(ms, (int, float)) and not isinstance(ms, bool) for ms in rule.shifts_ms)
                and len(set(rule.shifts_ms)) == len(rule.shifts_ms)):
            raise ConfigError(f"{path}: [ship] shifts_ms = {rule.shifts_ms!r}: expected a list of different start shifts in ms")
        for ms in rule.shifts_ms:
            try:
                start_samples(ms)
            except ValueError as e:
                raise ConfigError(f"{path}: [ship] shifts_ms: {e}") from None
        if not isinstance(rule.candidates, dict):
            raise ConfigError(f"{path}: [ship] candidates = {rule.candidates!r}: expected a table of name = [members]")
        for name, members in rule.candidates.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in RUN_FOLDERS or name.startswith("epoch"):
                raise ConfigError(f"{path}: [ship] candidate {name!r}: its mean is written to OUT_DIR/{name}; "
                                  f"choose a plain name, not one of {', '.join(RUN_FOLDERS)} or epoch...")
            if not (isinstance(members, list) and members):
                raise ConfigError(f"{path}: [ship] candidate {name!r}: expected a list of members")
            for m in members:
                if isinstance(m, bool) or not isinstance(m, (int, str)) or (isinstance(m, int) and m < 1):
                    raise ConfigError(f"{path}: [ship] candidate {name!r}: member {m!r} is not \"init\", "
                                      "an epoch number or a model folder")
        return rule


def member_folder(member, config: TrainConfig) -> Path:
    if member == "init":
        if not config.init:
            raise ConfigError("a [ship] candidate names \"init\" but the config has no init")
        return Path(config.init).expanduser()
    if isinstance(member, int):
        return Path(config.out_dir).expanduser() / "epochs" / f"{member:03d}"
    return Path(member).expanduser()


def candidates(config: TrainConfig, rule: ShipRule, only=None) -> dict:
    """name -> list of member folders: the run's epoch folders ("epoch N"), then the rule's means;
    with `only`, just the candidates of those names (say, the ones that exist before the run)."""
    epochs = Path(config.out_dir).expanduser() / "epochs"
    out = {f"epoch {int(d.name)}": [d] for d in sorted(epochs.iterdir()) if d.name.isdigit()} if epochs.is_dir() else {}
    for name, members in rule.candidates.items():
        out[name] = [member_folder(m, config) for m in members]
    if only is not None:
        unknown = [name for name in only if name not in out]
        if unknown:
            raise ConfigError(f"no candidate named {', '.join(map(repr, unknown))}; there are: {', '.join(out) or 'none'}")
        out = {name: out[name] for name in out if name in only}
    for name, members in out.items():
        for folder in members:
            if not (folder / "config.json").exists():
                raise CheckpointError(f"candidate {name!r}: {folder} is not a model folder (no config.json)")
    return out


def measure(model, dev_sets: dict, shifts_ms=(0,)) -> dict:
    """part name -> per-utterance (word errors, words, char errors, chars), an int array (n, 4),
    summed over the start shifts (`SpeechDataset.started_later`)."""
    from train.compare import utterance_counts
    out = {}
    for name, dataset in dev_sets.items():
        passes = [utterance_counts(model, dataset.started_later(ms))[1] for ms in shifts_ms]
        if len({len(c) for c in passes}) > 1:
            raise ConfigError(f"{name}: some utterances are no longer than a start shift of "
                              f"{max(shifts_ms)} ms; choose smaller shifts_ms")
        out[name] = sum(passes)
    return out


def summary(counts: dict) -> dict:
    """Pooled and per-part WER / CER (percent) and error counts, from `measure`."""
    def rates(c):
        we, wn, ce, cn = (int(x) for x in c.sum(0))
        return {"wer": round(100 * we / max(wn, 1), 2), "cer": round(100 * ce / max(cn, 1), 2),
                "word_errors": we, "words": wn, "char_errors": ce, "chars": cn}
    return {"pooled": rates(np.concatenate(list(counts.values()))),
            "parts": {name: rates(c) for name, c in counts.items()}}


def judge(cand: dict, base: dict, rule: ShipRule) -> tuple[list, dict]:
    """(reasons the candidate fails, empty when it passes; bootstrap per part) from `measure`'s counts."""
    from train.compare import bootstrap
    c, b = summary(cand), summary(base)
    reasons = []
    if c["pooled"]["word_errors"] * b["pooled"]["words"] >= b["pooled"]["word_errors"] * c["pooled"]["words"]:
        reasons.append(f"pooled WER {c['pooled']['wer']:.2f}% not below {b['pooled']['wer']:.2f}%")
    for part in rule.no_worse:
        for unit in ("word", "char"):
            have, limit = c["parts"][part][f"{unit}_errors"], b["parts"][part][f"{unit}_errors"]
            if have > limit:
                reasons.append(f"{part}: {have} {unit} errors, more than {limit}")
    for part, limit in rule.max_errors.items():
        if c["parts"][part]["word_errors"] > limit:
            reasons.append(f"{part}: {c['parts'][part]['word_errors']} word errors, more than {limit}")
    boot = {}
    for part in cand:
        boot[part] = bootstrap(base[part][:, 0], cand[part][:, 0], rule.resamples)
        if boot[part]["p_worse"] >= rule.p_worse:
            reasons.append(f"{part}: worse beyond chance (bootstrap p_worse {boot[part]['p_worse']:.3f})")
    return reasons, boot


def ship(config_path, baseline=None, log=print, only=None) -> dict:
    """Average, measure and judge every candidate of a run (or those named in `only`) against the
    rule of its config's [ship] table; returns the report (`pick` is None when nothing passes)."""
    from ds2.checkpoint import load_model, require_same_setup
    from ds2.data import SpeechDataset, read_manifest
    from ds2.features import FeatureExtractor
    from train.average import average
    config, rule = TrainConfig.load(config_path), ShipRule.load(config_path)
    parts = {Path(m).name: m for m in config.dev}
    if len(parts) < len(config.dev):
        raise ConfigError(f"{config_path}: two dev manifests share a file name; the rule names parts by it")
    if not parts:
        raise ConfigError(f"{config_path}: no dev manifests to judge on")
    for name in [*rule.no_worse, *rule.max_errors]:
        if name not in parts:
            raise ConfigError(f"[ship] names {name!r}, which is not one of the dev parts: {', '.join(parts)}")
    baseline = Path(baseline or rule.baseline).expanduser()
    plan = candidates(config, rule, only)
    base_model, features, _ = load_model(baseline)
    dev = {name: SpeechDataset(read_manifest(m), FeatureExtractor(features), cache_audio=True) for name, m in parts.items()}
    for name, members in plan.items():  # check them all before the first long decode
        for folder in members:  # dev features are the baseline's; the network may differ (say, widened)
            model, feats, _ = load_model(folder)
            require_same_setup(f"{folder} (against the baseline {baseline})", model.config, feats,
                               base_model.config, features, network=False)
    log(f"baseline {baseline}")
    if rule.shifts_ms != [0]:
        log(f"each dev utterance decoded at start shifts of {', '.join(f'{ms:g}' for ms in rule.shifts_ms)} ms; "
            "error counts are the sums")
    base = measure(base_model, dev, rule.shifts_ms)
    del base_model
    report = {"config": str(config_path), "baseline": {"folder": str(baseline), **summary(base)},
              "rule": {k: getattr(rule, k) for k in ("no_worse", "max_errors", "p_worse", "resamples", "shifts_ms")},
              "candidates": {}, "pick": None}
    log(format_line("baseline", report["baseline"]))
    for name, members in plan.items():
        folder = members[0] if len(members) == 1 else average(members, Path(config.out_dir).expanduser() / name)
        counts = measure(load_model(folder)[0], dev, rule.shifts_ms)
        reasons, boot = judge(counts, base, rule)
        report["candidates"][name] = {"folder": str(folder), "members": [str(m) for m in members], **summary(counts),
                                      "bootstrap": boot, "passes": not reasons, "fails": reasons}
        log(format_line(name, report["candidates"][name]))
    passed = {k: v for k, v in report["candidates"].items() if v["passes"]}
    if passed:
        report["pick"] = min(passed, key=lambda k: passed[k]["pooled"]["word_errors"])  # the first on a tie
    return report


def format_line(name: str, r: dict) -> str:
    parts = "; ".join(f"{p} {s['wer']:.2f}% / {s['cer']:.2f}% ({s['word_errors']} word errors)"
                      for p, s in r["parts"].items())
    verdict = "" if "passes" not in r else "  PASS" if r["passes"] else "  fails: " + "; ".join(r["fails"])
    return f"{name}: pooled {r['pooled']['wer']:.2f}% / {r['pooled']['cer']:.2f}%; {parts}{verdict}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the run's training config, with its [ship] table")
    parser.add_argument("--baseline", help="the model folder to beat instead of the table's baseline")
    parser.add_argument("--json", metavar="PATH", help="write the whole report (figures, bootstrap, verdicts) here")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="measure only these candidates (\"epoch 2\" for an epoch), e.g. those that exist "
                             "before the run; the pick is among them")
    args = parser.parse_args(argv)
    try:
        report = ship(args.config, args.baseline, only=args.only)
    except (CheckpointError, ConfigError, ManifestError, FileNotFoundError, tomllib.TOMLDecodeError) as e:
        parser.exit(2, f"error: {e}\n")
    if args.json:
        Path(args.json).expanduser().write_text(json.dumps(report, indent=1) + "\n")
    pick = report["pick"]
    print(f"pick: {pick} ({report['candidates'][pick]['folder']})" if pick else "pick: none passes the rule")


if __name__ == "__main__":
    main()
