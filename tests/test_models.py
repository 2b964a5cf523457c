import torch

from mathtune.models.load import use_shape_free_attention


def test_cudnn_attention_is_switched_off_on_a_gpu_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.backends.cuda, "enable_cudnn_sdp", calls.append)
    monkeypatch.delenv("MATHTUNE_CUDNN_SDPA", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not use_shape_free_attention() and calls == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert use_shape_free_attention() and calls == [False]
    monkeypatch.setenv("MATHTUNE_CUDNN_SDPA", "1")  # the benchmark's switch to compare with cuDNN on
    assert not use_shape_free_attention() and calls == [False]
