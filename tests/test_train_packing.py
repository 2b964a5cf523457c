"""What TRL does with our data, checked rather than assumed: loss on answer tokens only,
packed examples that cannot see each other, and TRL's token accuracy and eval loss
recomputed by hand from plain logits."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_train_config
from mathtune.config import ModelConfig
from mathtune.models import attention
from mathtune.models.attention import VARLEN, VarlenKernel, reference_varlen_attn, training_attention
from mathtune.models.load import load_model, load_tokenizer
from mathtune.train.lm_head import use_lm_head
from mathtune.train.trainer import build_datasets, build_trainer, make_lora_config

pytestmark = pytest.mark.usefixtures("one_thread")


def old_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q: int, max_k: int, is_causal: bool = False,
                    return_aux=None):
    """torch 2.10's varlen_attn signature: is_causal, no scale, no enable_gqa (equal heads only)."""
    if query.shape[1] != key.shape[1]:
        raise ValueError("torch 2.10's varlen_attn takes equal query and key/value heads")
    return reference_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k,
                                 window_size=(-1, 0) if is_causal else (-1, -1))


class CountingKernel:
    """A varlen stand-in that records what the attention hands it."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []
        self.__signature__ = __import__("inspect").signature(fn)

    def __call__(self, query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **kw):
        self.calls.append({"heads": (query.shape[1], key.shape[1]), "cu_seq_q": cu_seq_q, "max_q": max_q, **kw})
        return self.fn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **kw)


@pytest.fixture
def varlen_stand_in():
    """mathtune_varlen on the CPU, with the plain-torch reference in place of the flash kernel."""
    kernel = CountingKernel(reference_varlen_attn)
    before = attention.use_varlen_kernel(VarlenKernel.of(kernel))
    yield kernel
    attention.use_varlen_kernel(before)


def make_trainer(tmp_path, tiny_model_dir, small_data_dir, *overrides, attn: str | None = None):
    config = tiny_train_config(tiny_model_dir, small_data_dir, "train.report_to=[]", *overrides)
    tokenizer = load_tokenizer(config.model.name_or_path)
    train_set, val_set, _ = build_datasets(config, tokenizer)
    # as run_train does, unless the test names one
    attn = training_attention(attn or config.model.attn_implementation, config.train.packing)
    model, _ = load_model(config.model, attn_implementation=attn, device="cpu")
    (tmp_path / "train").mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(
        config, tmp_path, model, tokenizer, train_set, val_set, make_lora_config(config, model), eval_on_start=False
    )
    return trainer, tokenizer, train_set


def segments(row: dict) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of each example packed into one row."""
    out, start = [], 0
    for n in row["seq_lengths"]:
        out.append((row["input_ids"][start : start + n], row["labels"][start : start + n]))
        start += n
    return out


def test_unpacked_labels_mask_exactly_the_prompt(tmp_path, tiny_model_dir, small_data_dir):
    trainer, tokenizer, raw = make_trainer(tmp_path, tiny_model_dir, small_data_dir, "train.packing=false")
    prepared = trainer.train_dataset
    assert len(prepared) == len(raw)
    for example, row in zip(raw, prepared):
        n_prompt = example["completion_mask"].index(1)
        labels, ids = row["labels"], row["input_ids"]
        assert ids == example["input_ids"]  # the trainer feeds mathtune's ids, not a tokenization of its own
        assert labels[:n_prompt] == [-100] * n_prompt  # no prompt token carries loss
        assert labels[n_prompt:] == ids[n_prompt:]  # every answer token does
        assert tokenizer.decode(labels[n_prompt:]).endswith("<|im_end|>")


def test_packed_labels_mask_exactly_the_prompts(tmp_path, tiny_model_dir, small_data_dir):
    trainer, tokenizer, raw = make_trainer(tmp_path, tiny_model_dir, small_data_dir)
    prompt_lengths, completions = Counter(), Counter()
    for row in trainer.train_dataset:
        for ids, labels in segments(row):
            n_masked = labels.index(next(x for x in labels if x != -100))
            assert all(x == -100 for x in labels[:n_masked])
            assert labels[n_masked:] == ids[n_masked:]
            prompt_lengths[n_masked] += 1
            completions[tuple(labels[n_masked:])] += 1
    assert completions == Counter(tuple(e["input_ids"][e["completion_mask"].index(1):]) for e in raw)
    assert prompt_lengths == Counter(e["completion_mask"].index(1) for e in raw)

    # The collator flattens a batch into one row; each example's first token is masked
    # too, so no example is trained to predict the start of the next.
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    starts = batch["position_ids"][0] == 0
    assert starts.sum() >= 2
    assert (batch["labels"][0][starts] == -100).all()


def per_example_losses(logits, labels, position_ids) -> list[torch.Tensor]:
    """Mean next-token loss of each example in a packed row.
    logits: [1, T, V]; labels, position_ids: [1, T]"""
    token_loss = F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="none")  # [T-1]
    starts = (position_ids[0] == 0).nonzero().flatten().tolist() + [labels.shape[1]]
    losses = []
    for a, b in zip(starts[:-1], starts[1:]):
        mask = labels[0, a + 1 : b] != -100  # targets of positions a .. b-2
        losses.append(token_loss[a : b - 1][mask].mean())
    return losses


@pytest.mark.parametrize("attn", ["sdpa", "eager", "mathtune_segments", VARLEN])
def test_packed_examples_do_not_attend_to_each_other(attn, tmp_path, tiny_model_dir, small_data_dir, varlen_stand_in):
    trainer, _, _ = make_trainer(tmp_path, tiny_model_dir, small_data_dir, attn=attn)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)), attn_implementation=training_attention(attn, True),
                          device="cpu")
    # What the padding-free collator passes besides the tokens: the examples' boundaries.
    bounds = {k: batch[k] for k in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")}

    with torch.no_grad():
        # transformers builds the block-diagonal mask from position_ids only when there is
        # no attention_mask and no KV cache; TRL's compute_loss passes use_cache=False. A
        # bare forward with the default cache silently lets the examples see each other.
        logits = model(input_ids=ids, position_ids=pos, use_cache=False, **bounds).logits
        packed = per_example_losses(logits, labels, pos)
        starts = (pos[0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
        alone = []
        for a, b in zip(starts[:-1], starts[1:]):
            logits = model(input_ids=ids[:, a:b]).logits
            alone += per_example_losses(logits, labels[:, a:b], pos[:, a:b])
        # The same row read as one long sequence: later examples see earlier ones.
        leaky = per_example_losses(model(input_ids=ids).logits, labels, pos)

    assert len(packed) >= 2
    torch.testing.assert_close(torch.stack(packed), torch.stack(alone), rtol=1e-5, atol=1e-5)
    assert (torch.stack(leaky[1:]) - torch.stack(alone[1:])).abs().max() > 1e-3  # the check has teeth

    # And the loss the trainer itself computes on the packed batch (lean LM head, PEFT
    # model, LoRA still zero) is the token-weighted mean of the per-example losses.
    assert trainer.model.config._attn_implementation == attn
    trainer.model.eval()
    with torch.no_grad():
        trainer_loss = trainer.compute_loss(trainer.model, dict(batch))
    counts = [(labels[0, a + 1 : b] != -100).sum() for a, b in zip(starts[:-1], starts[1:])]
    expected = sum(loss * n for loss, n in zip(alone, counts)) / sum(counts)
    torch.testing.assert_close(trainer_loss, expected, rtol=1e-5, atol=1e-5)


def test_varlen_is_one_call_per_layer_on_the_collators_offsets(tmp_path, tiny_model_dir, small_data_dir,
                                                                varlen_stand_in, monkeypatch):
    trainer, _, _ = make_trainer(tmp_path, tiny_model_dir, small_data_dir, attn=VARLEN)
    batch = next(iter(trainer.get_train_dataloader()))

    # The collator builds the offsets once per batch, on the host: int32 cumulative lengths of
    # the packed examples (each starts at position 0) and the longest one as a Python int.
    lengths = []
    for p in batch["position_ids"][0].tolist():
        lengths[-1:] = lengths[-1:] + [1] if p == 0 else [lengths[-1] + 1]
    assert len(lengths) >= 2
    cu = batch["cu_seq_lens_q"]
    assert cu.dtype == torch.int32 and cu.device.type == "cpu"
    assert cu.tolist() == [0] + torch.tensor(lengths).cumsum(0).tolist()
    assert type(batch["max_length_q"]) is int and batch["max_length_q"] == max(lengths)

    # The attention reads nothing back from the device: no .item() or .tolist() outside the kernel
    # (the CPU stand-in itself loops over the offsets; torch's kernel does not).
    reads = []
    for name in ("item", "tolist"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            if not any(frame.function == "reference_varlen_attn" for frame in __import__("inspect").stack()[1:4]):
                reads.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    model = trainer.model
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)
    monkeypatch.undo()
    layers = model.config.num_hidden_layers
    assert reads == []
    calls = varlen_stand_in.calls
    assert len(calls) == layers  # one call per layer, every example in it
    for call in calls:
        assert call["cu_seq_q"].tolist() == cu.tolist() and call["max_q"] == batch["max_length_q"]
        # Qwen2's grouped KV heads go in as they are where the kernel takes enable_gqa; causal by window
        assert call["heads"] == (4, 2) and call["enable_gqa"] is True and call["window_size"] == (-1, 0)


@pytest.mark.parametrize("signature", ["torch 2.12+", "torch 2.10"])
@pytest.mark.parametrize("scaling", [None, 0.5])
def test_varlen_attention_equals_one_sdpa_call_per_example(signature, scaling):
    """torch 2.10 and 2.11 spell causality is_causal and take no enable_gqa: KV heads are
    repeated for them; a non-default scale goes into the query where the kernel takes none."""
    kernel = CountingKernel(reference_varlen_attn if signature == "torch 2.12+" else old_varlen_attn)
    before = attention.use_varlen_kernel(VarlenKernel.of(kernel))
    try:
        torch.manual_seed(0)
        q, k, v = torch.randn(1, 4, 20, 8), torch.randn(1, 2, 20, 8), torch.randn(1, 2, 20, 8)  # [B, H, T, D]
        cu = torch.tensor([0, 5, 12, 20], dtype=torch.int32)
        module = torch.nn.Module()
        got, _ = attention.varlen_attention(module, q, k, v, None, scaling=scaling, cu_seq_lens_q=cu,
                                            cu_seq_lens_k=cu, max_length_q=8, max_length_k=8)
        want, _ = attention.segment_attention(module, q, k, v, None, scaling=scaling, cu_seq_lens_q=cu)
    finally:
        attention.use_varlen_kernel(before)
    torch.testing.assert_close(got, want)  # [1, T, H, D] both
    (call,) = kernel.calls
    if signature == "torch 2.10":
        assert call["heads"] == (4, 4) and call["is_causal"] is True and "scale" not in call
    else:
        assert call["heads"] == (4, 2) and call["enable_gqa"] is True and call["scale"] == scaling


def test_this_torchs_varlen_signature_is_read_right():
    kernel = attention.torch_varlen_kernel()
    if kernel is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    params = __import__("inspect").signature(kernel.fn).parameters
    assert kernel.causal == ({"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True})
    assert kernel.native_gqa == ("enable_gqa" in params)


@pytest.mark.parametrize("gpu, capability, kernel, dtype, packing, expected", [
    (False, None, True, "auto", True, "mathtune_segments"),  # a CPU: the per-example loop
    (False, None, True, "auto", False, "sdpa"),  # unpacked batches need no boundaries
    (True, (9, 0), True, "auto", True, VARLEN),  # an H100, bf16: one varlen call per layer
    (True, (9, 0), True, "bfloat16", True, VARLEN),
    (True, (9, 0), True, "float32", True, "mathtune_segments"),  # flash attention has no float32
    (True, (9, 0), False, "auto", True, "mathtune_segments"),  # a torch without varlen_attn
    (True, (7, 5), True, "auto", True, "mathtune_segments"),  # a T4: flash attention needs Ampere
    (True, (9, 0), True, "auto", False, "sdpa"),
])
def test_which_attention_training_gets_where(gpu, capability, kernel, dtype, packing, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(attention, "torch_varlen_kernel", lambda: VarlenKernel.of(reference_varlen_attn) if kernel else None)
    monkeypatch.setattr(__import__("importlib.util").util, "find_spec", lambda name, *a: None)  # no flash-attn
    assert training_attention("auto", packing, dtype) == expected
    assert training_attention("sdpa", packing, dtype) == "sdpa"  # a named attention is kept


def test_lean_lm_head_scores_only_answer_tokens_and_equals_trls(tmp_path, tiny_model_dir, small_data_dir,
                                                                monkeypatch):
    import trl.kernels
    import trl.trainer.utils

    trainer, _, _ = make_trainer(tmp_path, tiny_model_dir, small_data_dir)
    batch = next(iter(trainer.get_train_dataloader()))
    scored = []
    for module, attr in ((trl.kernels, "ChunkedLogProbFunction"), (trl.trainer.utils, "_ChunkedLogProbFunction")):
        real = getattr(module, attr)

        class Recording:
            @staticmethod
            def apply(hidden, *a, _real=real):
                scored.append(hidden.shape[0])
                return _real.apply(hidden, *a)

        monkeypatch.setattr(module, attr, Recording)
    model = trainer.model
    model.eval()  # no LoRA dropout: both heads see the same network
    lora = [p for n, p in model.named_parameters() if p.requires_grad]
    with torch.no_grad():  # LoRA's B starts at zero; give every LoRA matrix a gradient to compare
        for p in lora:
            p.normal_(std=0.05)
    results = {}
    for head in ("trl", "lean"):
        assert use_lm_head(model, head) == head
        model.zero_grad()
        trainer._metrics["eval"].clear()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items() if k != "num_tokens"}
        results[head] = (loss.detach(), [p.grad.clone() for p in lora], metrics)

    n_labels = int((batch["labels"][:, 1:] != -100).sum())
    assert scored == [batch["input_ids"].shape[1] - 1, n_labels]  # TRL's head on a CPU: every position
    assert n_labels < batch["input_ids"].shape[1] - 1
    (trl_loss, trl_grads, trl_metrics), (lean_loss, lean_grads, lean_metrics) = results["trl"], results["lean"]
    torch.testing.assert_close(lean_loss, trl_loss, rtol=1e-6, atol=1e-6)
    for a, b in zip(lean_grads, trl_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert lean_metrics.keys() == trl_metrics.keys() >= {"entropy", "mean_token_accuracy"}
    for key in lean_metrics:
        assert lean_metrics[key] == pytest.approx(trl_metrics[key], rel=1e-5)


def test_lean_lm_head_tiles_the_vocabulary_as_trls_head_does():
    """The chunk width is ours; while the installed TRL still names its own, they agree (the
    width decides how the running log-sum-exp is summed)."""
    import trl.trainer.utils

    from mathtune.train.lm_head import VOCAB_CHUNK_SIZE

    trls = getattr(trl.trainer.utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", None)
    if trls is None:
        pytest.skip("this TRL no longer names its chunk width")
    assert VOCAB_CHUNK_SIZE == trls


def hand_metrics(model, examples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(token-weighted accuracy, token-weighted loss): argmax of the shifted logits against
    the labels where a label exists. examples: (input_ids [1, T], labels [1, T])"""
    correct = total = 0
    nll = 0.0
    with torch.no_grad():
        for ids, labels in examples:
            logits = model(input_ids=ids).logits[:, :-1]  # [1, T-1, V]
            target = labels[:, 1:]
            mask = target != -100
            correct += (logits.argmax(-1) == target)[mask].sum().item()
            total += mask.sum().item()
            nll += F.cross_entropy(logits[mask], target[mask], reduction="sum").item()
    return correct / total, nll / total


def test_token_accuracy_and_eval_loss_follow_the_definition(tmp_path, tiny_model_dir, small_data_dir):
    trainer, _, _ = make_trainer(tmp_path, tiny_model_dir, small_data_dir, "train.batch_size=4")
    model, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir)), device="cpu")

    # eval: the validation split fits one batch here, so TRL's per-batch ratio is the
    # token-weighted figure over the whole split
    val = [
        (torch.tensor([ids]), torch.tensor([labels]))
        for row in trainer.eval_dataset
        for ids, labels in segments(row)
    ]
    metrics = trainer.evaluate()
    accuracy, loss = hand_metrics(model, val)
    assert metrics["eval_mean_token_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["eval_loss"] == pytest.approx(loss, rel=1e-5)

    # train: the first logged step, on the batch the trainer actually drew (LoRA's B is zero
    # before the first update, so the trained model still computes the base model)
    seen = []
    real_loss = trainer.compute_loss

    def capture(model_, inputs, *a, **k):
        if model_.training:
            seen.append({k_: v.clone() if torch.is_tensor(v) else v for k_, v in inputs.items()})
        return real_loss(model_, inputs, *a, **k)

    trainer.compute_loss = capture
    trainer.args.max_steps = 1
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "mean_token_accuracy" in entry)
    (batch,) = seen
    pos = batch["position_ids"]
    starts = (pos[0] == 0).nonzero().flatten().tolist() + [pos.shape[1]]
    examples = [(batch["input_ids"][:, a:b], batch["labels"][:, a:b]) for a, b in zip(starts[:-1], starts[1:])]
    accuracy, loss = hand_metrics(model, examples)
    assert logged["mean_token_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    # lora_dropout is active in training but acts on a branch that is still exactly zero
    assert logged["loss"] == pytest.approx(loss, rel=1e-5)
