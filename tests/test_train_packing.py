"""What TRL does with our data, checked rather than assumed: loss on answer tokens only,
packed examples that cannot see each other, and TRL's token accuracy and eval loss
recomputed by hand from plain logits."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_train_config
from mathtune.models.attention import training_attention
from mathtune.models.load import load_model, load_tokenizer
from mathtune.train.trainer import build_datasets, build_trainer, make_lora_config

pytestmark = pytest.mark.usefixtures("one_thread")


def make_trainer(tmp_path, tiny_model_dir, small_data_dir, *overrides):
    config = tiny_train_config(tiny_model_dir, small_data_dir, "train.report_to=[]", *overrides)
    tokenizer = load_tokenizer(config.model.name_or_path)
    train_set, val_set, _ = build_datasets(config, tokenizer)
    attn = training_attention(config.model.attn_implementation, config.train.packing)  # as run_train does
    model, _ = load_model(config.model.name_or_path, attn_implementation=attn, device="cpu")
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
        n_prompt = len(tokenizer(text=example["prompt"])["input_ids"])
        labels, ids = row["labels"], row["input_ids"]
        assert labels[:n_prompt] == [-100] * n_prompt  # no prompt token carries loss
        assert labels[n_prompt:] == ids[n_prompt:]  # every answer token does
        assert tokenizer.decode(labels[n_prompt:]) == example["completion"]


def test_packed_labels_mask_exactly_the_prompts(tmp_path, tiny_model_dir, small_data_dir):
    trainer, tokenizer, raw = make_trainer(tmp_path, tiny_model_dir, small_data_dir)
    prompt_lengths, completions = Counter(), Counter()
    for row in trainer.train_dataset:
        for ids, labels in segments(row):
            n_masked = labels.index(next(x for x in labels if x != -100))
            assert all(x == -100 for x in labels[:n_masked])
            assert labels[n_masked:] == ids[n_masked:]
            prompt_lengths[n_masked] += 1
            completions[tokenizer.decode(labels[n_masked:])] += 1
    assert completions == Counter(example["completion"] for example in raw)
    assert prompt_lengths == Counter(len(tokenizer(text=e["prompt"])["input_ids"]) for e in raw)

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


@pytest.mark.parametrize("attn", ["sdpa", "eager", "mathtune_segments"])
def test_packed_examples_do_not_attend_to_each_other(attn, tmp_path, tiny_model_dir, small_data_dir):
    trainer, _, _ = make_trainer(tmp_path, tiny_model_dir, small_data_dir)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
    model, _ = load_model(str(tiny_model_dir), attn_implementation=training_attention(attn, True), device="cpu")
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

    # And the loss the trainer itself computes on the packed batch (fused LM head, PEFT
    # model, LoRA still zero) is the token-weighted mean of the per-example losses.
    trainer.model.eval()
    with torch.no_grad():
        trainer_loss = trainer.compute_loss(trainer.model, dict(batch))
    counts = [(labels[0, a + 1 : b] != -100).sum() for a, b in zip(starts[:-1], starts[1:])]
    expected = sum(loss * n for loss, n in zip(alone, counts)) / sum(counts)
    if attn == trainer.model.config._attn_implementation:  # the attention training uses
        torch.testing.assert_close(trainer_loss, expected, rtol=1e-5, atol=1e-5)


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
    model, _ = load_model(str(tiny_model_dir), device="cpu")

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
