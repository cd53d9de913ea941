"""The CTC training loop, top to bottom: config, DDP set-up, data, model, optimiser, loop,
validation, checkpoints.

One process (CPU or one GPU):
    python -m train.fit train/configs/small.toml out_dir=~/.cache/ds2/runs/small
    python -m train.fit train/configs/small.toml out_dir=~/.cache/ds2/runs/small --resume
One node, 8 GPUs:
    torchrun --standalone --nproc_per_node=8 -m train.fit train/configs/large.toml out_dir=runs/large
Two nodes, 8 GPUs each (run on both; node_rank 0 and 1):
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST0:29500 -m train.fit train/configs/large.toml out_dir=/shared/runs/large

`dev` names one manifest or several (`dev = ["librispeech-dev.jsonl", "an4-dev.jsonl"]`): the
model is selected on their pooled greedy WER, and with several, each one's WER and CER is printed
too (and logged to TensorBoard), so that a gain on one part cannot hide a loss on another.

`out_dir` receives `last.pt` (resume state, rewritten atomically every `checkpoint_every` steps and
at each epoch's end), `best/` (the model with the best dev WER, as safetensors + config.json),
`log.csv` and TensorBoard event files; with `keep_epochs=N`, also `epochs/NNN/`: the model at the
end of each of the last N epochs, for `python -m train.average`; with `swa_from=F`, also `swa/`: the
running mean of the weights after every step from fraction F of the planned steps on (stochastic
weight averaging, Izmailov et al., 2018), judged on dev at each epoch's end beside the model.
"""

import contextlib
import csv
import math
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import (CheckpointError, load_model, load_resume_state, require_same_setup, save_model,
                         save_resume_state)
from .data import Augment, BucketBatchSampler, SpeechDataset, collate, read_manifest, seed_of
from .decoding import greedy_decode
from .features import FeatureConfig, FeatureExtractor, SpecAugment
from .model import DeepSpeech2, model_config
from .text import wer_cer


class ConfigError(ValueError):
    """A training config that cannot run: an unknown setting, a bad model or feature field, no data."""


@dataclass
class TrainConfig:
    train: list = field(default_factory=list)  # manifests to train on
    dev: list = field(default_factory=list)  # manifests for model selection, pooled; each one's WER is printed too
    out_dir: str = "~/.cache/ds2/runs/default"
    model: str = "small"  # named ModelConfig ...
    model_overrides: dict = field(default_factory=dict)  # ... with these fields changed
    init: str = ""  # a model folder whose weights start a new run (fine-tuning); same model and features
    features: dict = field(default_factory=dict)  # FeatureConfig fields
    epochs: int = 30
    time_budget_min: float = 0.0  # if set, train only as many epochs as fit in this many minutes (see plan_epochs)
    max_steps: int = 0  # stop after this many steps in all (0: no limit); for tests and smoke runs
    lr: float = 1e-3
    warmup_steps: int = 500
    final_lr_fraction: float = 0.02  # cosine decay ends at lr * this
    weight_decay: float = 1e-2
    grad_clip: float = 5.0
    max_batch_seconds: float = 240.0  # padded audio seconds per batch (per GPU)
    max_batch_size: int = 64
    max_duration: float = 20.0  # longer training utterances are left out
    speeds: list = field(default_factory=lambda: [0.9, 1.0, 1.1])
    noise_prob: float = 0.3
    narrowband_prob: float = 0.0  # chance of a telephone band (8 kHz) for a training utterance
    specaugment: bool = True
    specaugment_policy: dict = field(default_factory=dict)  # SpecAugment fields: {freq_width = 27, time_masks = 4}
    vtlp: list = field(default_factory=list)  # [low, high]: vocal tract length perturbation factors, e.g. [0.9, 1.1]
    precise_bn_seconds: float = 0.0  # before each dev pass, BatchNorm statistics from this much training audio
    freeze_batchnorm: bool = False  # normalise with init's running statistics in training too (see train_mode)
    freeze: list = field(default_factory=list)  # parameter name prefixes that keep init's values: ["convs", "rnns.0"]
    dropout: float = 0.0  # chance of zeroing each unit of each recurrent layer's output, in training only
    confidence_penalty: float = 0.0  # beta: the loss is CTC - beta * the posteriors' mean frame entropy (nats)
    sortagrad: bool = True
    cache_audio: bool = True  # keep decoded waveforms in memory after first use (4 bytes/sample)
    amp: str = "bf16"  # "bf16", "fp16" or "none" on CUDA; CPUs train in fp32 unless cpu_amp is set
    cpu_amp: bool = False  # bf16 autocast on CPU too, where the CPU has AVX512-BF16 or AMX: 1.1-1.5x faster
    cudnn_benchmark: bool = True  # let cuDNN time its algorithms for each new input shape
    checkpoint_every: int = 200  # steps
    keep_epochs: int = 0  # keep the model of each of the last N epochs in epochs/NNN (for train.average)
    swa_from: float = 0.0  # from this fraction of the planned steps on, average the weights of every step in swa/
    log_every: int = 10  # steps between rows of log.csv
    num_workers: int = 0
    threads: int = 0  # CPU threads for torch (0: torch's default)
    seed: int = 1234

    @classmethod
    def load(cls, path=None, overrides=()) -> "TrainConfig":
        """A TOML file (top-level keys, [model_overrides], [features]; a [ship] table is train.ship's) then
        `key=value` overrides; values are parsed as TOML, falling back to plain strings: lr=3e-4
        model_overrides.rnn_layers=5."""
        data = tomllib.loads(Path(path).read_text()) if path else {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} is not key=value")
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                pass
            *parents, leaf = key.strip().split(".")
            target = data
            for p in parents:
                target = target.setdefault(p, {})
            target[leaf] = value
        data.pop("ship", None)  # the rule that picks the model to ship: read by train.ship, not by training
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    def __post_init__(self):
        if isinstance(self.train, str):
            self.train = [self.train]
        if isinstance(self.dev, str):  # dev = "dev.jsonl" or dev = ["librispeech-dev.jsonl", "an4-dev.jsonl"]
            self.dev = [self.dev] if self.dev else []
        for f in fields(self):  # TOML gives each value its type: lr='fast' or epochs=2.5 is a mistake
            value, want = getattr(self, f.name), (int, float) if f.type is float else f.type
            if not isinstance(value, want) or (isinstance(value, bool) and f.type is not bool):
                raise ConfigError(f"{f.name} = {value!r}: expected {f.type.__name__}")
        try:  # build the model and feature configs once, so that a bad field fails here, not mid-run
            network = model_config(self.model, n_feats=FeatureConfig(**self.features).n_feats, **self.model_overrides)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model {self.model!r} with features {self.features} and model_overrides "
                              f"{self.model_overrides}: {e}") from None
        try:
            SpecAugment(**self.specaugment_policy)
        except TypeError as e:
            raise ConfigError(f"specaugment_policy {self.specaugment_policy}: {e}") from None
        if self.vtlp and not (len(self.vtlp) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                          for a in self.vtlp) and 0.5 <= self.vtlp[0] <= self.vtlp[1] <= 2):
            raise ConfigError(f"vtlp = {self.vtlp!r}: expected [low, high] warp factors, 0.5 <= low <= high <= 2")
        if self.time_budget_min < 0:
            raise ConfigError(f"time_budget_min = {self.time_budget_min}: expected minutes >= 0")
        if self.freeze_batchnorm and not self.init:
            raise ConfigError("freeze_batchnorm keeps the statistics of the model it starts from: set init too")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout = {self.dropout}: expected a probability, 0 <= p < 1")
        if not 0 <= self.confidence_penalty < 10:
            raise ConfigError(f"confidence_penalty = {self.confidence_penalty}: expected a weight, 0 <= beta < 10")
        if not 0 <= self.swa_from < 1:
            raise ConfigError(f"swa_from = {self.swa_from}: expected a fraction of the planned steps, 0 <= F < 1")
        if self.freeze_batchnorm and self.precise_bn_seconds:
            raise ConfigError("freeze_batchnorm keeps init's statistics; precise_bn_seconds would replace them")
        if self.freeze:
            if not self.init:
                raise ConfigError("freeze keeps parameters of the model it starts from: set init too")
            with torch.device("meta"):  # the names only, no memory for the weights
                names = [n for n, _ in DeepSpeech2(network).named_parameters()]
            for prefix in self.freeze:
                if not isinstance(prefix, str) or not any(frozen(n, [prefix]) for n in names):
                    raise ConfigError(f"freeze: {prefix!r} names no parameter of the model (its parameters: "
                                      f"{', '.join(sorted({n.rsplit('.', 1)[0] for n in names}))})")
            if all(frozen(n, self.freeze) for n in names):
                raise ConfigError(f"freeze {self.freeze} leaves no parameter to train")


def frozen(name: str, prefixes: list) -> bool:
    """Whether the parameter `name` (e.g. "rnns.1.rnn.weight_hh_l0") falls under one of `prefixes`,
    whole dotted parts only: "rnns.1" covers "rnns.1.norm.weight", not "rnns.10.norm.weight"."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def cpu_has_bf16(say: bool = True) -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Elsewhere bf16 is emulated and
    far slower than fp32 (a forward pass 30x slower on an AVX2-only machine), so cpu_amp falls back."""
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if not native and say:
        print("cpu_amp: this CPU has no native bf16 (AVX512-BF16 or AMX), training in fp32", file=sys.stderr)
    return native


def frame_entropy(log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean entropy in nats of the (batch, time, V) posteriors over the frames within `lengths`:
    the confidence penalty's term (Pereyra et al., 2017), which rewards less peaked outputs."""
    valid = torch.arange(log_probs.shape[1], device=log_probs.device)[None] < lengths.to(log_probs.device)[:, None]
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return (entropy * valid).sum() / valid.sum().clamp(min=1)


def plan_epochs(budget_seconds: float, spent_seconds: float, epochs_done: int, epoch_seconds: float,
                max_epochs: int) -> int:
    """How many epochs a run with a time budget trains in all: those done, plus as many more of
    `epoch_seconds` (the last epoch's wall time, its dev pass included) as the rest of the budget
    holds, at most `max_epochs`. The cosine schedule then ends on the last planned epoch, so a
    run on a machine of unknown speed still anneals fully before its time is up."""
    more = int(max(0.0, budget_seconds - spent_seconds) // max(epoch_seconds, 1e-9))
    return max(epochs_done, min(max_epochs, epochs_done + more))


def lr_factor(step: int, warmup: int, total: int, final: float) -> float:
    """Linear warm-up, then cosine decay from 1 to `final` at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


@contextlib.contextmanager
def modes_kept(model: torch.nn.Module):
    """Give every module of `model` back the train/eval mode it had (frozen BatchNorm layers in a
    model in training mode among them), however the block inside changes them or ends."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def greedy_pairs(model: DeepSpeech2, dataset: SpeechDataset, device, max_batch_seconds: float = 240.0) -> list:
    """(reference, greedy hypothesis) for each utterance of `dataset`. The model runs in eval mode;
    every module gets back the mode it had (frozen BatchNorm layers stay frozen)."""
    frame_seconds = 0.0  # timings are not needed here
    sampler = BucketBatchSampler([e["duration"] for e in dataset.entries], max_batch_seconds, sortagrad=True)
    pairs = []
    with modes_kept(model):
        model.eval()
        for batch in torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate):
            if not batch["size"]:
                continue
            log_probs, lengths = model(batch["feats"].to(device), batch["feat_lengths"])
            for lp, n, ref in zip(log_probs.float().cpu().numpy(), lengths.tolist(), batch["texts"]):
                pairs.append((ref, greedy_decode(lp[:n], frame_seconds).text))
    return pairs


def batchnorm_layers(model: torch.nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def train_mode(model: torch.nn.Module, freeze_batchnorm: bool = False) -> None:
    """Put `model` in training mode; with `freeze_batchnorm`, its BatchNorm layers stay in eval mode:
    they normalise every batch with their running statistics, which no batch updates (their scale and
    shift still learn). Trained this way, the network learns to work with the one set of statistics
    that inference will use for every kind of speech, instead of each length-bucketed batch's own
    (read books, spelled letters and 8 kHz digits each get theirs in training, a mixture at inference)."""
    model.train()
    if freeze_batchnorm:
        for m in batchnorm_layers(model):
            m.eval()


@torch.no_grad()
def recompute_batchnorm(model: DeepSpeech2, dataset: SpeechDataset, device, max_batch_seconds: float = 240.0,
                        max_seconds: float | None = None, seed: int = 0) -> int:
    """Set every BatchNorm's running mean and variance to the average over batches of `dataset`
    (the training speech, unaugmented) instead of the exponential average of the last training
    batches ("precise BN", Wu & Johnson 2021). With speech of several kinds in one run (read books,
    spelled letters, 8 kHz digits) the last few batches of an epoch decide those statistics, and
    dev results swing from epoch to epoch with them. `max_seconds` of audio at most, drawn at
    random with `seed`; returns the batches used."""
    norms = batchnorm_layers(model)
    momenta, counts = [m.momentum for m in norms], [m.num_batches_tracked.clone() for m in norms]
    dropout, model.dropout = model.dropout, 0.0  # the statistics inference will see: nothing dropped
    for m in norms:
        m.reset_running_stats()
    sampler = BucketBatchSampler([e["duration"] for e in dataset.entries], max_batch_seconds, seed, sortagrad=False)
    used, seconds = 0, 0.0
    try:
        with modes_kept(model):
            model.train()
            for batch in torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate):
                if max_seconds is not None and seconds >= max_seconds:
                    break
                if batch["size"]:
                    seconds += batch["seconds"]
                    for m in norms:  # running = (1 - w) running + w batch: an average weighted by audio length
                        m.momentum = batch["seconds"] / seconds
                    model(batch["feats"].to(device), batch["feat_lengths"])
                    used += 1
    finally:
        for m, momentum, count in zip(norms, momenta, counts):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)  # a training count, which this was not
        model.dropout = dropout
    return used


def evaluate_parts(model: DeepSpeech2, dev_sets: dict, device, max_batch_seconds: float = 240.0):
    """Corpus-level greedy (WER, CER) pooled over the datasets of `dev_sets` (name -> SpeechDataset;
    errors summed over all utterances), and each one's (WER, CER) by name when there are several."""
    parts = {name: greedy_pairs(model, d, device, max_batch_seconds) for name, d in dev_sets.items()}
    pooled = wer_cer([pair for pairs in parts.values() for pair in pairs])
    return pooled, {name: wer_cer(pairs) for name, pairs in parts.items()} if len(parts) > 1 else {}


def format_dev(wer: float, cer: float, scores: dict) -> str:
    """'dev WER 61.90% CER 28.29% (greedy); librispeech-dev.jsonl WER ...': evaluate_parts' results."""
    return f"dev WER {wer:.2%} CER {cer:.2%} (greedy){format_parts(scores)}"


def format_parts(scores: dict) -> str:
    """'; an4-dev.jsonl WER 11.48% CER 4.89%; ...' for evaluate_parts' per-part scores."""
    return "".join(f"; {Path(name).name} WER {w:.2%} CER {c:.2%}" for name, (w, c) in scores.items())


@torch.no_grad()
def update_mean(mean: dict | None, model: torch.nn.Module, count: int) -> dict:
    """The running mean of `count` earlier state dicts, updated with the model's current one (floating
    tensors, BatchNorm statistics included, in fp32; integer buffers are the current ones)."""
    current = model.state_dict()
    if mean is None:
        return {k: v.detach().float().clone() if v.is_floating_point() else v.clone() for k, v in current.items()}
    for name, value in current.items():
        if value.is_floating_point():
            mean[name] += (value.float() - mean[name]) / (count + 1)
        else:
            mean[name] = value.clone()
    return mean


def save_epoch(folder: Path, epoch: int, keep: int, model: DeepSpeech2, features: FeatureConfig, meta: dict) -> None:
    """Save the model as folder/NNN (its epoch), then delete all but the `keep` latest epochs."""
    save_model(folder / f"{epoch:03d}", model, features, meta)
    for old in sorted(p for p in folder.iterdir() if p.name.isdigit())[:-keep]:
        shutil.rmtree(old)


def train(cfg: TrainConfig, resume: bool = False) -> tuple[DeepSpeech2, dict]:
    """Run (or resume) training; returns the model and the final state (step, best dev WER, skips)."""
    # --- distributed set-up: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK ---
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out_dir = Path(cfg.out_dir).expanduser()
    main_process = rank == 0
    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)

    # --- data ---
    features = FeatureConfig(**cfg.features)
    extractor = FeatureExtractor(features)
    entries = [e for m in cfg.train for e in read_manifest(m, cfg.max_duration)]
    if not entries:
        raise ConfigError(f"no training utterances in {cfg.train}")
    augment = Augment(speeds=tuple(cfg.speeds), noise_prob=cfg.noise_prob, narrowband_prob=cfg.narrowband_prob,
                      specaugment=SpecAugment(**cfg.specaugment_policy) if cfg.specaugment else None,
                      vtlp=tuple(cfg.vtlp))
    train_set = SpeechDataset(entries, extractor, augment, seed=cfg.seed, cache_audio=cfg.cache_audio)
    if cfg.cache_audio and cfg.num_workers:  # decoded once here, then shared by the workers forked each epoch
        train_set.preload()
    sampler = BucketBatchSampler([e["duration"] for e in entries], cfg.max_batch_seconds, cfg.seed,
                                 cfg.sortagrad, rank, world, cfg.max_batch_size)
    dev_sets = {m: SpeechDataset(read_manifest(m), extractor, cache_audio=True) for m in cfg.dev} if main_process else {}
    bn_set = SpeechDataset(entries, extractor)  # the training speech unaugmented, for precise_bn_seconds
    bn_set.cache = train_set.cache

    # --- model, optimiser, schedule ---
    model = DeepSpeech2(model_config(cfg.model, n_feats=features.n_feats, **cfg.model_overrides))
    resume_path = out_dir / "last.pt"
    resuming = resume and resume_path.exists()
    if cfg.init and not resuming:  # a resumed run's weights are in last.pt: its init may be gone by now
        start, start_features, _ = load_model(Path(cfg.init).expanduser())
        require_same_setup(f"init {cfg.init}", start.config, start_features, model.config, features)
        model.load_state_dict(start.state_dict())
    model = model.to(device)
    model.dropout = cfg.dropout
    for name, p in model.named_parameters():  # frozen ones get no gradient, and backward stops below the
        p.requires_grad_(not frozen(name, cfg.freeze))  # lowest trainable layer
    trainable = [p for p in model.parameters() if p.requires_grad]
    ddp_model = torch.nn.parallel.DistributedDataParallel(model, [local_rank] if device.type == "cuda" else None) \
        if distributed else model
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(sampler)
    # planned_epochs is cfg.epochs, or fewer under a time budget; `seconds` is the wall time of the
    # epochs run so far, across resumes, and `epoch_seconds_done` that of the current epoch's batches up
    # to its last checkpoint, so that a run cut mid-epoch keeps counting them when resumed
    state = {"epoch": 0, "batch": 0, "step": 0, "best_wer": float("inf"), "skipped_batches": 0,
             "skipped_utterances": 0, "planned_epochs": cfg.epochs, "seconds": 0.0, "epoch_seconds_done": 0.0,
             "swa_steps": 0}
    swa = None  # with swa_from: the running mean of the weights (main process only), in last.pt too
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, cfg.warmup_steps, state["planned_epochs"] * steps_per_epoch, cfg.final_lr_fraction))
    if device.type == "cuda":
        use_amp, amp_dtype = cfg.amp in ("bf16", "fp16"), torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    else:
        use_amp, amp_dtype = cfg.cpu_amp and cpu_has_bf16(main_process), torch.bfloat16
    scaler = torch.amp.GradScaler(enabled=use_amp and amp_dtype == torch.float16)

    if resuming:
        saved = load_resume_state(resume_path)
        model.load_state_dict(saved["model"])
        try:
            optimizer.load_state_dict(saved["optimizer"])
        except ValueError:  # its parameter groups differ in size: another `freeze` than the run's
            raise CheckpointError(f"{resume_path} was saved by a run that trained other parameters (freeze = "
                                  f"{saved.get('config', {}).get('freeze', [])}, now {cfg.freeze}); resume it "
                                  f"with its own freeze, or start a new run from its best/ with init") from None
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"])
        state.update(saved["state"])
        swa = {k: v.to(device) for k, v in saved["swa"].items()} if saved.get("swa") is not None else None
        if not cfg.time_budget_min:  # epochs=N given on resume takes effect
            state["planned_epochs"] = cfg.epochs
        if main_process:
            print(f"resumed from {resume_path} at epoch {state['epoch']} batch {state['batch']} step {state['step']}")

    def checkpoint():
        if main_process:
            saved = dict(state)
            if state["batch"]:  # mid-epoch: this epoch's time so far
                saved["epoch_seconds_done"] = state["epoch_seconds_done"] + time.time() - epoch_tic
            save_resume_state(resume_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": torch.get_rng_state(), "state": saved, "config": cfg.__dict__, "swa": swa})

    writer = log_file = None
    if main_process:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tb"))
        new_log = not (out_dir / "log.csv").exists()
        log_file = open(out_dir / "log.csv", "a", newline="")
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["time", "epoch", "step", "loss", "lr", "utt_per_s", "audio_s_per_s", "dev_wer", "dev_cer"])
        notes = f" ({sum(p.numel() for p in trainable) / 1e6:.2f} M trained, {', '.join(cfg.freeze)} frozen)" \
            if cfg.freeze else ""
        notes += f"; dropout {cfg.dropout:g}" if cfg.dropout else ""
        notes += f"; confidence penalty {cfg.confidence_penalty:g}" if cfg.confidence_penalty else ""
        print(f"model {cfg.model}: {model.num_parameters / 1e6:.2f} M parameters{notes}; {len(entries)} utterances, "
              f"{sum(e['duration'] for e in entries) / 3600:.2f} h; {steps_per_epoch} steps per epoch on {device}")

    # --- the loop ---
    stop, epoch_tic = False, time.time()
    while state["epoch"] < state["planned_epochs"] and not stop:
        train_mode(model, cfg.freeze_batchnorm)
        epoch_tic, first_batch = time.time(), state["batch"]
        train_set.epoch = state["epoch"]
        sampler.set_epoch(state["epoch"], state["batch"])
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=cfg.num_workers)
        bar = tqdm(loader, desc=f"epoch {state['epoch']}", disable=not main_process, dynamic_ncols=True,
                   initial=state["batch"], total=steps_per_epoch, mininterval=10)
        tic, utts, seconds = time.time(), 0, 0.0
        for batch in bar:
            state["batch"] += 1
            state["skipped_utterances"] += batch["skipped"]
            if batch["size"]:
                if cfg.dropout:  # the masks follow from (seed, step, rank): each rank draws its own, and a
                    torch.manual_seed(seed_of(cfg.seed, state["step"], rank))  # resumed run the same
                with torch.autocast(device.type, amp_dtype, enabled=use_amp):
                    log_probs, out_lengths = ddp_model(batch["feats"].to(device), batch["feat_lengths"])
                loss = F.ctc_loss(log_probs.float().transpose(0, 1), batch["targets"].to(device), out_lengths,
                                  batch["target_lengths"].to(device), blank=0, zero_infinity=True)
                if cfg.confidence_penalty:
                    loss = loss - cfg.confidence_penalty * frame_entropy(log_probs.float(), out_lengths)
                finite = torch.isfinite(loss)
                if distributed:  # every rank skips together, or DDP's gradient all-reduce would hang
                    dist.all_reduce(finite := finite.float(), op=dist.ReduceOp.MIN)
                if bool(finite):
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    utts, seconds = utts + batch["size"], seconds + batch["seconds"]
                else:
                    state["skipped_batches"] += 1
            scheduler.step()
            state["step"] += 1
            if main_process and cfg.swa_from and \
                    state["step"] > cfg.swa_from * state["planned_epochs"] * steps_per_epoch:
                swa = update_mean(swa, model, state["swa_steps"])
                state["swa_steps"] += 1
            if main_process and batch["size"]:
                elapsed = time.time() - tic
                bar.set_postfix(loss=f"{loss.item():.3f}", utt_s=f"{utts / elapsed:.1f}",
                                audio_s_s=f"{seconds / elapsed:.1f}", refresh=False)
                if state["step"] % cfg.log_every == 0:
                    log.writerow([f"{time.time():.0f}", state["epoch"], state["step"], f"{loss.item():.4f}",
                                  f"{scheduler.get_last_lr()[0]:.2e}", f"{utts / elapsed:.2f}",
                                  f"{seconds / elapsed:.2f}", "", ""])
                    log_file.flush()
                writer.add_scalar("train/loss", loss.item(), state["step"])
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], state["step"])
            if state["step"] % cfg.checkpoint_every == 0:
                checkpoint()
            if cfg.max_steps and state["step"] >= cfg.max_steps:
                stop = True
                break
        if stop and state["batch"] < steps_per_epoch:
            break
        train_seconds = time.time() - epoch_tic
        state["epoch"], state["batch"] = state["epoch"] + 1, 0
        if dev_sets:
            if cfg.precise_bn_seconds:  # statistics of the weights being judged, not of the last few batches
                recompute_batchnorm(model, bn_set, device, cfg.max_batch_seconds, cfg.precise_bn_seconds,
                                    seed=cfg.seed + state["epoch"])
            (wer, cer), scores = evaluate_parts(model, dev_sets, device, cfg.max_batch_seconds)
            for name, (part_wer, part_cer) in scores.items():
                writer.add_scalar(f"dev/{Path(name).name}/wer", part_wer, state["step"])
                writer.add_scalar(f"dev/{Path(name).name}/cer", part_cer, state["step"])
            print(f"epoch {state['epoch']}: {format_dev(wer, cer, scores)}; "
                  f"skipped {state['skipped_batches']} batches, {state['skipped_utterances']} utterances")
            writer.add_scalar("dev/wer", wer, state["step"])
            writer.add_scalar("dev/cer", cer, state["step"])
            log.writerow([f"{time.time():.0f}", state["epoch"], state["step"], "", "", "", "", f"{wer:.4f}", f"{cer:.4f}"])
            log_file.flush()
            if wer < state["best_wer"]:
                state["best_wer"] = wer
                save_model(out_dir / "best", model, features, {
                    "dev_wer": wer, "dev_cer": cer, "epoch": state["epoch"], "step": state["step"],
                    "train": cfg.train, "dev": cfg.dev})
        if main_process and swa is not None:  # (the mean's BatchNorm statistics too: see train.bnstats)
            averaged = DeepSpeech2(model.config).to(device)
            averaged.load_state_dict(swa)
            meta = {"epoch": state["epoch"], "step": state["step"], "train": cfg.train, "swa_steps": state["swa_steps"]}
            if dev_sets:
                (wer, cer), scores = evaluate_parts(averaged, dev_sets, device, cfg.max_batch_seconds)
                print(f"epoch {state['epoch']} swa, the mean of the last {state['swa_steps']} steps: "
                      f"{format_dev(wer, cer, scores)}")
                writer.add_scalar("dev_swa/wer", wer, state["step"])
                writer.add_scalar("dev_swa/cer", cer, state["step"])
                meta.update(dev_wer=wer, dev_cer=cer, dev=cfg.dev)
            save_model(out_dir / "swa", averaged, features, meta)
        if main_process and cfg.keep_epochs:
            save_epoch(out_dir / "epochs", state["epoch"], cfg.keep_epochs, model, features,
                       {"epoch": state["epoch"], "step": state["step"], "train": cfg.train})
        state["seconds"] += state["epoch_seconds_done"] + time.time() - epoch_tic
        state["epoch_seconds_done"] = 0.0
        if cfg.time_budget_min:  # a whole epoch's time, from the batches this process ran of it
            epoch_seconds = (train_seconds * steps_per_epoch / max(1, steps_per_epoch - first_batch)
                             + time.time() - epoch_tic - train_seconds)
            planned = plan_epochs(cfg.time_budget_min * 60, state["seconds"], state["epoch"], epoch_seconds,
                                  cfg.epochs)
            if distributed:  # rank 0's plan for every rank, or they would stop at different epochs
                dist.broadcast(planned := torch.tensor(planned, device=device), src=0)
                planned = int(planned)
            if main_process and planned != state["planned_epochs"]:
                print(f"time budget: {planned} epochs in all ({epoch_seconds:.0f} s an epoch, "
                      f"{state['seconds'] / 60:.1f} of {cfg.time_budget_min:g} min spent)")
            state["planned_epochs"] = planned
        checkpoint()
    checkpoint()
    if main_process:
        if not dev_sets:  # no dev set: the last model is the one to keep
            save_model(out_dir / "best", model, features, {"epoch": state["epoch"], "step": state["step"],
                                                           "train": cfg.train})
        writer.close()
        log_file.close()
    if distributed:
        dist.destroy_process_group()
    return model, dict(state)
