"""Deep Speech 2 (Amodei et al., 2015, "Deep Speech 2: End-to-End Speech Recognition in English and
Mandarin", arXiv:1512.02595).

    features (batch, time, feats)
      -> 1-3 2-D convolutions over (frequency, time), each BatchNorm + clipped ReLU min(max(x,0),20)
      -> a stack of recurrent layers (GRU or LSTM) with sequence-wise BatchNorm on the input
         (vertical) connections; bidirectional with the two directions summed (paper, section 3.2),
         or unidirectional followed by a lookahead (row) convolution for streaming (section 3.5)
      -> a fully connected layer to the 29-symbol alphabet -> log-probs (batch, time', symbols)

Padding never changes a result: conv outputs are zeroed past each utterance's length (which is
exactly what a lone utterance's zero padding gives), BatchNorm statistics use valid frames only, and
each recurrent direction sees its valid frames before any padding.
"""

from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .text import ALPHABET

CLIP = 20.0  # the clipped ReLU's ceiling (DS2, eq. 1)


@dataclass(frozen=True)
class ModelConfig:
    n_feats: int = 80
    conv_layers: int = 2
    conv_channels: int = 32
    conv_kernels: tuple = ((41, 11), (21, 11), (21, 11))  # (freq, time) per layer, as in the paper
    time_stride: int = 2  # total stride in time, taken by the first convolution
    rnn_type: str = "gru"  # "gru" or "lstm"
    rnn_layers: int = 3
    rnn_hidden: int = 320
    bidirectional: bool = True
    lookahead: int = 20  # future frames seen by the row convolution (unidirectional models only)
    n_classes: int = len(ALPHABET)

    def __post_init__(self):
        if not 1 <= self.conv_layers <= len(self.conv_kernels):
            raise ValueError(f"conv_layers={self.conv_layers} needs that many conv_kernels")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        if "conv_kernels" in d:
            d["conv_kernels"] = tuple(tuple(k) for k in d["conv_kernels"])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS = {
    # For tests: trains in seconds on a CPU.
    "tiny": ModelConfig(conv_layers=1, conv_channels=8, conv_kernels=((11, 5),), rnn_layers=2, rnn_hidden=96),
    # The bundled model: trainable on 2 CPU cores.
    "small": ModelConfig(conv_layers=2, conv_channels=32, conv_kernels=((41, 11), (21, 11)), time_stride=3,
                         rnn_layers=4, rnn_hidden=320),
    # Near the paper's best English model: 3 conv + 7 bidirectional recurrent layers.
    "large": ModelConfig(n_feats=161, conv_layers=3, conv_channels=32, rnn_layers=7, rnn_hidden=1280),
}


def model_config(name: str, n_feats: int | None = None, **overrides) -> ModelConfig:
    """A named config ('tiny', 'small', 'large') with optional field overrides."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}; choose from {sorted(CONFIGS)}")
    if n_feats is not None:
        overrides["n_feats"] = n_feats
    return replace(CONFIGS[name], **overrides)


def _mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(batch,) lengths -> (batch, max_len) bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class SequenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm over every valid (utterance, frame) pair: DS2's sequence-wise normalisation."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        out[mask] = super().forward(x[mask])
        return out


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each utterance's valid frames in place, padding left where it is: (batch, time, ...).
    Applying it twice gives back the input."""
    time = torch.arange(x.shape[1], device=x.device)[None, :]
    index = torch.where(time < lengths[:, None], lengths[:, None] - 1 - time, time)
    return x.gather(1, index[..., None].expand_as(x))


class _GRUScan(torch.autograd.Function):
    """The recurrence of D independent GRUs at once, with a hand-written backward pass.

    gi (D, T, B, 3H): each direction's input projections W_ih x + b_ih, time-major; w_hh (D, 3H, H),
    b_hh (D, 3H) -> hidden states (D, T, B, H) from h0 = 0, with torch.nn.GRU's equations (gates
    r, z, n in that order). On CPU, autograd through nn.GRU's cells accumulates the recurrent weight
    gradient with a small matrix product and an add at every frame; here the backward loop only
    carries the hidden-state gradient and the weight gradient is one product over all frames.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, gi, w_hh, b_hh):
        d, time, batch, hidden3 = gi.shape
        hidden = hidden3 // 3
        hs, n = gi.new_empty(d, time, batch, hidden), gi.new_empty(d, time, batch, hidden)
        rz, ghn = gi.new_empty(d, time, batch, 2 * hidden), gi.new_empty(d, time, batch, hidden)
        w_t, bias = w_hh.transpose(1, 2), b_hh[:, None, :]
        h = gi.new_zeros(d, batch, hidden)
        for t in range(time):
            gh = torch.baddbmm(bias, h, w_t)
            g = gi[:, t]
            torch.sigmoid(g[..., :2 * hidden] + gh[..., :2 * hidden], out=rz[:, t])
            ghn[:, t] = gh[..., 2 * hidden:]
            torch.tanh(torch.addcmul(g[..., 2 * hidden:], rz[:, t, :, :hidden], ghn[:, t]), out=n[:, t])
            h = torch.lerp(n[:, t], h, rz[:, t, :, hidden:])  # (1 - z) n + z h
            hs[:, t] = h
        ctx.save_for_backward(w_hh, hs, rz, n, ghn)
        return hs

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, d_hs):
        w_hh, hs, rz, n, ghn = ctx.saved_tensors
        d, time, batch, hidden = hs.shape
        d_gi, d_gh = hs.new_empty(d, time, batch, 3 * hidden), hs.new_empty(d, time, batch, 3 * hidden)
        zeros = hs.new_zeros(d, batch, hidden)
        dh_next = zeros
        for t in range(time - 1, -1, -1):
            dh = d_hs[:, t] + dh_next
            r, z, n_t = rz[:, t, :, :hidden], rz[:, t, :, hidden:], n[:, t]
            h_prev = hs[:, t - 1] if t > 0 else zeros
            dn = dh * (1 - z) * (1 - n_t * n_t)  # through tanh
            d_gh[:, t, :, :hidden] = dn * ghn[:, t] * r * (1 - r)  # through r's sigmoid
            d_gh[:, t, :, hidden:2 * hidden] = dh * (h_prev - n_t) * z * (1 - z)  # through z's sigmoid
            torch.mul(dn, r, out=d_gh[:, t, :, 2 * hidden:])
            d_gi[:, t, :, 2 * hidden:] = dn
            dh_next = torch.baddbmm(dh * z, d_gh[:, t], w_hh)
        d_gi[..., :2 * hidden] = d_gh[..., :2 * hidden]  # r and z enter gi and gh alike
        d_w = d_b = None
        if ctx.needs_input_grad[1]:  # a frozen layer (train.fit's `freeze`) needs no weight gradient
            h_prev_all = torch.cat([zeros[:, None], hs[:, :-1]], dim=1).reshape(d, time * batch, hidden)
            d_w = torch.bmm(d_gh.reshape(d, time * batch, 3 * hidden).transpose(1, 2), h_prev_all)
        if ctx.needs_input_grad[2]:
            d_b = d_gh.sum(dim=(1, 2))
        return d_gi, d_w, d_b


def gru_scan(xs: torch.Tensor, grus: list) -> torch.Tensor:
    """xs (D, batch, time, input) through D single-layer nn.GRU(batch_first=True) modules, the i-th
    on xs[i] -> (D, batch, time, hidden): the same function as the modules', with their parameters."""
    w_ih, b_ih, w_hh, b_hh = (torch.stack([getattr(g, name) for g in grus])
                              for name in ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0"))
    d, batch, time, _ = xs.shape
    x = xs.transpose(1, 2).reshape(d, time * batch, -1)
    gi = torch.baddbmm(b_ih[:, None, :], x, w_ih.transpose(1, 2)).view(d, time, batch, -1)
    return _GRUScan.apply(gi, w_hh, b_hh).transpose(1, 2)


class RecurrentLayer(nn.Module):
    """Sequence-wise BatchNorm on the input, then a GRU/LSTM; bidirectional layers sum directions.

    Each direction runs on a padded batch whose padding comes after the valid frames (the backward
    direction on utterances reversed within their lengths), so padding never reaches a valid
    output. This is exact like packed sequences, and on CPU several times faster to train: the
    backward pass of a packed RNN allocates a full-size gradient for every time step.
    """
    cpu_training_scan = True  # a GRU training on CPU runs through gru_scan (False: through nn.GRU)

    def __init__(self, input_size: int, hidden: int, rnn_type: str, bidirectional: bool, batch_norm: bool):
        super().__init__()
        self.norm = SequenceBatchNorm(input_size) if batch_norm else None
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[rnn_type]
        self.rnn = rnn(input_size, hidden, batch_first=True)
        self.rnn_reverse = rnn(input_size, hidden, batch_first=True) if bidirectional else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x, mask)
        reverse = None if self.rnn_reverse is None else reverse_within_lengths(x, lengths)
        if (self.cpu_training_scan and self.training and torch.is_grad_enabled() and x.device.type == "cpu"
                and isinstance(self.rnn, nn.GRU)):
            # Both directions in one gru_scan: the same outputs and gradients as nn.GRU's. Forward +
            # backward of the small model on 6 real training batches (one thread, paired medians):
            # 27.8 s -> 24.6 s, 1.13x; 10-20% faster on batches of long utterances, 5% slower on
            # one of 64 short ones.
            if reverse is None:
                out, backward_ = gru_scan(x[None], [self.rnn])[0], None
            else:
                out, backward_ = gru_scan(torch.stack([x, reverse]), [self.rnn, self.rnn_reverse]).unbind()
        else:
            out, _ = self.rnn(x)
            backward_ = None if reverse is None else self.rnn_reverse(reverse)[0]
        if backward_ is not None:
            out = out + reverse_within_lengths(backward_, lengths)
        return out * mask[..., None]


class Lookahead(nn.Module):
    """Row convolution (DS2 section 3.5): h'[t] = sum_{j=0..context} W[j] * h[t+j], per feature."""

    def __init__(self, channels: int, context: int):
        super().__init__()
        self.context = context
        self.conv = nn.Conv1d(channels, channels, kernel_size=context + 1, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, channels), zero past each utterance's end -> same shape."""
        x = F.pad(x.transpose(1, 2), (0, self.context))
        return self.conv(x).transpose(1, 2)


class DeepSpeech2(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.convs, self.conv_norms = nn.ModuleList(), nn.ModuleList()
        self.conv_geometry = []  # (kernel_t, stride_t, pad_t) per layer, for output_lengths
        freq, channels = config.n_feats, 1
        for i, (kf, kt) in enumerate(config.conv_kernels[:config.conv_layers]):
            stride = (2, config.time_stride if i == 0 else 1)
            padding = (kf // 2, kt // 2)
            self.convs.append(nn.Conv2d(channels, config.conv_channels, (kf, kt), stride, padding, bias=False))
            self.conv_norms.append(nn.BatchNorm2d(config.conv_channels))
            self.conv_geometry.append((kt, stride[1], padding[1]))
            freq = (freq + 2 * padding[0] - kf) // 2 + 1
            channels = config.conv_channels
        rnn_input = channels * freq
        self.rnns = nn.ModuleList(
            RecurrentLayer(rnn_input if i == 0 else config.rnn_hidden, config.rnn_hidden, config.rnn_type,
                           config.bidirectional, batch_norm=i > 0)
            for i in range(config.rnn_layers))
        self.lookahead = None if config.bidirectional else Lookahead(config.rnn_hidden, config.lookahead)
        self.output_norm = SequenceBatchNorm(config.rnn_hidden)
        self.fc = nn.Linear(config.rnn_hidden, config.n_classes)
        # Training-time dropout on each recurrent layer's output (what the next layer and the output
        # layer see); train.fit sets it from its `dropout` setting. Not part of the config: it does
        # not change the network, and eval mode never drops anything.
        self.dropout = 0.0

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Frames out for frames in, following the conv arithmetic: (batch,) -> (batch,)."""
        lengths = input_lengths.clone()
        for kernel, stride, pad in self.conv_geometry:
            lengths = torch.div(lengths + 2 * pad - kernel, stride, rounding_mode="floor") + 1
        return lengths

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, time, n_feats) features and (batch,) lengths -> (batch, time', n_classes)
        log-probs and (batch,) output lengths."""
        x = feats.transpose(1, 2).unsqueeze(1)  # (batch, 1, freq, time)
        lengths = lengths.to(feats.device)
        out_lengths = lengths
        for conv, norm, (kernel, stride, pad) in zip(self.convs, self.conv_norms, self.conv_geometry):
            x = torch.clamp(norm(conv(x)), 0, CLIP)
            out_lengths = torch.div(out_lengths + 2 * pad - kernel, stride, rounding_mode="floor") + 1
            x = x * _mask(out_lengths, x.shape[-1])[:, None, None, :]
        batch, channels, freq, time = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, time, channels * freq)
        mask = _mask(out_lengths, time)
        for rnn in self.rnns:
            x = rnn(x, out_lengths, mask)
            if self.dropout and self.training:  # nothing to draw otherwise, on any device
                x = F.dropout(x, self.dropout, training=True)
        if self.lookahead is not None:
            x = torch.clamp(self.lookahead(x), 0, CLIP) * mask[..., None]
        logits = self.fc(self.output_norm(x, mask))
        return logits.log_softmax(dim=-1), out_lengths

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
