import pytest
import torch

from ds2.model import DeepSpeech2, model_config


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
