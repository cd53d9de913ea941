import pytest
import torch

from ds2.model import DeepSpeech2, RecurrentLayer, gru_scan, model_config


def _model(**overrides):
    torch.manual_seed(0)
    model = DeepSpeech2(model_config("tiny", n_feats=40, **overrides))
    # Train-mode passes give BatchNorm non-trivial running statistics before eval.
    with torch.no_grad():
        model(torch.randn(4, 120, 40), torch.tensor([120, 90, 60, 33]))
    return model.eval()


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_batch_equals_single_utterance(rnn_type, bidirectional):
    model = _model(rnn_type=rnn_type, bidirectional=bidirectional, lookahead=4)
    lengths = [97, 150, 31, 64]
    feats = [torch.randn(n, 40) for n in lengths]
    batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    with torch.no_grad():
        batch_out, batch_lengths = model(batch, torch.tensor(lengths))
        for i, f in enumerate(feats):
            single, single_len = model(f[None], torch.tensor([len(f)]))
            assert batch_lengths[i] == single_len[0] == single.shape[1]
            torch.testing.assert_close(batch_out[i, :single_len[0]], single[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("time_stride", [2, 3])
@pytest.mark.parametrize("name", ["tiny", "small"])
def test_output_lengths_match_real_shapes(name, time_stride):
    model = DeepSpeech2(model_config(name, n_feats=40, time_stride=time_stride)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n in torch.randint(1, 400, (50,), generator=generator).tolist():
            out, out_lengths = model(torch.randn(1, n, 40), torch.tensor([n]))
            assert out.shape[1] == out_lengths[0] == model.output_lengths(torch.tensor([n]))[0]


def test_log_probs_are_normalised():
    model = _model()
    out, _ = model(torch.randn(2, 50, 40), torch.tensor([50, 50]))
    assert out.shape[-1] == 29
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, out.shape[1]))


def test_large_config_shape():
    model = DeepSpeech2(model_config("large"))
    assert len(model.convs) == 3 and len(model.rnns) == 7 and model.config.bidirectional


def test_gru_scan_matches_nn_gru():
    torch.manual_seed(0)
    grus = [torch.nn.GRU(12, 5, batch_first=True).double() for _ in range(2)]
    xs = torch.randn(2, 3, 9, 12, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: gru_scan(x, grus), (xs,))
    out = gru_scan(xs, grus)
    reference = torch.stack([gru(xs[i])[0] for i, gru in enumerate(grus)])
    torch.testing.assert_close(out, reference)
    weights = torch.randn_like(out)
    params = [xs] + [p for gru in grus for p in gru.parameters()]
    for ours, theirs in zip(torch.autograd.grad((out * weights).sum(), params),
                            torch.autograd.grad((reference * weights).sum(), params)):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_cpu_training_path_gives_nn_gru_gradients(bidirectional, monkeypatch):
    """A training step through gru_scan: the loss and every parameter gradient as through nn.GRU."""
    model = _model(bidirectional=bidirectional, lookahead=4).double().train()
    lengths = torch.tensor([97, 150, 31, 64])
    feats = torch.randn(4, 150, 40, dtype=torch.double)
    weights = torch.randn(4, 75, 29, dtype=torch.double)  # varies per frame, or BatchNorm cancels it
    results = []
    for scan in (True, False):
        monkeypatch.setattr(RecurrentLayer, "cpu_training_scan", scan)
        out, _ = model(feats, lengths)
        loss = (out * weights).sum()
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    (loss, grads), (ref_loss, ref_grads) = results
    torch.testing.assert_close(loss, ref_loss)
    for ours, theirs in zip(grads, ref_grads):
        assert theirs.abs().max() > 1e-3
        torch.testing.assert_close(ours, theirs)
