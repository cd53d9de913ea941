"""ds2: Deep Speech 2 speech recognition on PyTorch.

    import ds2
    transcriber = ds2.Transcriber()            # the bundled model and language model
    result = transcriber.transcribe("speech.wav")
    print(result.greedy, result.lm)
"""

from .audio import SAMPLE_RATE, AudioError, load_audio
from .checkpoint import CheckpointError, load_model, save_model
from .features import FeatureConfig, FeatureExtractor
from .model import DeepSpeech2, ModelConfig, model_config

__all__ = ["SAMPLE_RATE", "AudioError", "load_audio", "CheckpointError", "load_model", "save_model",
           "FeatureConfig", "FeatureExtractor", "DeepSpeech2", "ModelConfig", "model_config"]
