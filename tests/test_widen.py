import pytest
import torch

from ds2.checkpoint import load_model
from ds2.model import DeepSpeech2, model_config
from train.widen import _plan, main, widen


def _random_model(**overrides) -> DeepSpeech2:
    """A tiny model with random weights and BatchNorm statistics (fresh ones are all 0 and 1)."""
    torch.manual_seed(0)
    model = DeepSpeech2(model_config("tiny", n_feats=40, **overrides))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.5, 0.5)
    return model


@pytest.mark.parametrize("rnn_type, bidirectional", [("gru", True), ("gru", False), ("lstm", True)])
@pytest.mark.parametrize("training", [False, True])
def test_widened_model_computes_the_same(rnn_type, bidirectional, training):
    model = _random_model(rnn_type=rnn_type, bidirectional=bidirectional).train(training)
    wide = widen(model, 250, seed=1)  # 96 -> 250: some units copied twice, some three times
    assert wide.config.rnn_hidden == 250 and wide.training == training
    assert wide.rnns[1].rnn.weight_hh_l0.shape == (model.rnns[1].rnn.weight_hh_l0.shape[0] * 250 // 96, 250)
    feats, lengths = torch.randn(3, 120, 40), torch.tensor([120, 77, 31])
    with torch.no_grad():
        ours, our_lengths = model(feats, lengths)
        theirs, their_lengths = wide(feats, lengths)
    assert torch.equal(our_lengths, their_lengths)
    torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=0)


def test_copies_get_different_gradients_so_they_grow_apart():
    model = _random_model().train()
    wide = widen(model, 150, seed=0)
    source, _ = _plan(96, 150, torch.Generator().manual_seed(0))  # the first recurrent layer's copies
    logp, _ = wide(torch.randn(2, 80, 40), torch.tensor([80, 60]))
    logp[..., 3].sum().backward()
    grad = wide.rnns[0].rnn.weight_ih_l0.grad[:150]  # the reset gate's rows
    copies = torch.arange(96, 150)
    assert not torch.allclose(grad[copies], grad[source[copies]])
    assert torch.equal(wide.rnns[0].rnn.weight_ih_l0[copies], wide.rnns[0].rnn.weight_ih_l0[source[copies]])


def test_cli_writes_a_folder_that_loads_and_refuses_to_narrow(tiny_model_dir, tmp_path, capsys):
    main([str(tiny_model_dir), "--rnn-hidden", "128", "--out", str(tmp_path / "wide")])
    assert "96 -> 128 recurrent units" in capsys.readouterr().out
    small, _, _ = load_model(tiny_model_dir)
    wide, _, meta = load_model(tmp_path / "wide")
    assert wide.config.rnn_hidden == 128 and meta["parameters"] == wide.num_parameters > small.num_parameters
    feats, lengths = torch.randn(1, 90, 40), torch.tensor([90])
    with torch.no_grad():
        torch.testing.assert_close(wide(feats, lengths)[0], small(feats, lengths)[0], atol=2e-5, rtol=0)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tiny_model_dir), "--rnn-hidden", "64", "--out", str(tmp_path / "narrow")])
    assert exit_info.value.code == 2 and "narrower than the model's 96" in capsys.readouterr().err
