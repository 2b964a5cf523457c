"""The evaluation decoder (shared-prefix cache, refilled batch) against plain batch-1 generate,
on both of its caches: the dynamic one (the CPU default) and the fixed slots (static_cache, the
GPU default, whose step runs uncaptured here: the same function a CUDA graph records)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mathtune.models import static_cache
from mathtune.models.engine import Batching, common_prefix_length, generate_stream, supports
from mathtune.models.generate import Decoding, generate_batch
from mathtune.task.prompt_kinds import PROMPT_KIND_TABLE
from mathtune.task.prompts import make_prompt_builder

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many?",
    "What is 2 + 2?",
    "A farmer has 12 cows, sells 5 and buys 9. How many cows does he have now, after all of that trading?",
    "Half of 10?",
    "Sam reads 20 pages a day for 3 days and 5 more on the fourth. Total pages?",
    "x",
    "If a pen costs $3, how much do 7 pens cost?",
    "A train leaves at 3 pm and travels 60 miles an hour for 2 hours. How far does it go?",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    # The saved tiny model greedily writes nothing but newlines; wider weights make every row
    # write different text, so a token that goes wrong shows.
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0, 0.3)
    return model, tok


def _stream(model, tok, prompts, **kwargs):
    """generate_stream with its settings given as keywords: the decoding's and the batching's."""
    decoding = Decoding(**{k: kwargs.pop(k) for k in list(kwargs) if k in Decoding.__dataclass_fields__})
    out = dict(generate_stream(model, tok, prompts, decoding, Batching(**kwargs)))
    assert sorted(out) == list(range(len(prompts)))  # every prompt comes back exactly once
    return [out[i] for i in range(len(prompts))]


def test_common_prefix_leaves_every_prompt_a_token():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert common_prefix_length([[7], [7, 8]]) == 0
    assert common_prefix_length([[1, 2], [3, 4]]) == 0


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("kind", ["chat", "cot8"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_greedy_tokens_equal_batch1_generate(tiny, one_thread, kind, batch_size, static):
    """fp32: the shared prefix, the refills and the dropped rows change no token."""
    model, tok = tiny
    assert supports(model)
    builder = make_prompt_builder(kind)
    prompts = [builder.render(q, tok) for q in QUESTIONS]
    stops = PROMPT_KIND_TABLE.get(kind).stops
    kwargs = dict(max_new_tokens=20, stop_strings=stops, add_special_tokens=kind != "chat", static_cache=static)
    reference = [generate_batch(model, tok, [p], **{k: v for k, v in kwargs.items() if k != "static_cache"})[0]
                 for p in prompts]
    got = _stream(model, tok, prompts, batch_size=batch_size, **kwargs)
    assert got == reference
    if batch_size == 8:
        # the same with the prefix recomputed per row, so the test also covers the plain path
        assert _stream(model, tok, prompts, batch_size=batch_size, share_prefix=False, **kwargs) == reference


def _greedy_ids(model, tok, prompt, n):
    """Batch-1 greedy token ids from plain generate, cut at the first turn-end token."""
    from mathtune.models.generate import stop_token_ids

    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, eos_token_id=stop_token_ids(tok, model),
                         pad_token_id=tok.pad_token_id)[0, enc["input_ids"].shape[1]:].tolist()
    stops = set(stop_token_ids(tok, model))
    return next((out[:i] for i, t in enumerate(out) if t in stops), out)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_rows_stop_where_their_text_first_holds_a_stop_string(tiny, one_thread, static):
    """Each row stops at the first token after which its text holds a stop string, is cut
    there, and counts the tokens it produced up to that point."""
    model, tok = tiny
    builder = make_prompt_builder("chat")
    prompts = [builder.render(q, tok) for q in QUESTIONS]
    free = [_greedy_ids(model, tok, p, 30) for p in prompts]
    texts = [tok.decode(ids, skip_special_tokens=True) for ids in free]
    # Stop strings taken from what the model writes, so several rows really stop early.
    stops = tuple(sorted({t[12:14] for t in texts[:4] if len(t) > 16 and t[12:14].strip()}))
    assert stops
    expected = []
    for ids in free:
        n = next((i for i in range(1, len(ids) + 1)
                  if any(s in tok.decode(ids[:i], skip_special_tokens=True) for s in stops)), None)
        if n is None:
            expected.append(None)  # no stop string: compared with generate below
            continue
        text = tok.decode(ids[:n], skip_special_tokens=True)
        expected.append(text[: min(text.find(s) for s in stops if s in text)])
        expected[-1] = (expected[-1], n)
    assert sum(e is not None for e in expected) >= 2
    got = _stream(model, tok, prompts, batch_size=3, max_new_tokens=30, stop_strings=stops, static_cache=static)
    for (g,), e, p in zip(got, expected, prompts):
        if e is None:
            assert g == generate_batch(model, tok, [p], max_new_tokens=30, stop_strings=())[0][0]
        else:
            assert (g.completion, g.num_generated_tokens, g.truncated) == (e[0], e[1], False)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_samples_are_seeded_and_grouped(tiny, one_thread, static):
    model, tok = tiny
    prompts = [make_prompt_builder("chat").render(q, tok) for q in QUESTIONS[:4]]
    kwargs = dict(max_new_tokens=12, stop_strings=(), samples=3, temperature=1.0, batch_size=2, static_cache=static)
    torch.manual_seed(5)
    a = _stream(model, tok, prompts, **kwargs)
    torch.manual_seed(5)
    b = _stream(model, tok, prompts, **kwargs)
    assert a == b and all(len(g) == 3 for g in a)
    # at temperature 1 on a random model the samples of one prompt differ
    assert any(len({s.completion for s in g}) > 1 for g in a)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_unmerged_adapter_decodes_like_generate(tiny, one_thread, static):
    """bf16/fp16 evaluation keeps a LoRA adapter unmerged: the engine drives the PEFT model."""
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.eval()
    try:
        prompts = [make_prompt_builder("chat").render(q, tok) for q in QUESTIONS[:5]]
        kwargs = dict(max_new_tokens=12, stop_strings=())
        reference = [generate_batch(peft_model, tok, [p], **kwargs)[0] for p in prompts]
        assert _stream(peft_model, tok, prompts, batch_size=2, static_cache=static, **kwargs) == reference
    finally:
        peft_model.unload()  # the module-scoped tiny model goes back to plain


@pytest.mark.parametrize("kind", ["chat", "cot8"])
def test_static_slots_equal_the_dynamic_engine_through_refills_and_compaction(tiny, one_thread, monkeypatch, kind):
    """Rows of many lengths (stop strings the model writes), slots refilled one or two prompts
    at a time, and a cache so small that its columns are compacted again and again: the fixed
    slots give the dynamic engine's tokens, with and without the shared prefix."""
    model, tok = tiny
    builder = make_prompt_builder(kind)
    questions = QUESTIONS + [q + " Explain." for q in QUESTIONS] + [q + " Why?" for q in QUESTIONS]
    prompts = [builder.render(q, tok) for q in questions]
    free = [_greedy_ids(model, tok, p, 32) for p in prompts]
    texts = [tok.decode(ids, skip_special_tokens=True) for ids in free]
    stops = tuple(sorted({t[12:14] for t in texts[:2] if len(t) > 16 and t[12:14].strip()}))
    kwargs = dict(max_new_tokens=32, stop_strings=stops, add_special_tokens=kind != "chat")
    compactions = []
    compact = static_cache.Slots.compact
    monkeypatch.setattr(static_cache.Slots, "compact", lambda self, live: (compactions.append(self.t),
                                                                           compact(self, live)))
    # two columns of headroom: compacted every other step once the cache has filled
    monkeypatch.setattr("mathtune.models.engine.static_capacity", lambda longest, new: longest + new + 2)
    for share in (True, False):
        dynamic = _stream(model, tok, prompts, batch_size=4, prefill_size=1, share_prefix=share, static_cache=False,
                          **kwargs)
        lengths = {g[0].num_generated_tokens for g in dynamic}
        assert len(lengths) > 2  # rows really finish at different steps
        compactions.clear()
        assert _stream(model, tok, prompts, batch_size=4, prefill_size=1, share_prefix=share, static_cache=True,
                       **kwargs) == dynamic
        assert len(compactions) >= 3


def test_static_slots_with_eager_attention_write_an_additive_mask(tiny, one_thread):
    model, tok = tiny
    prompts = [make_prompt_builder("cot8").render(q, tok) for q in QUESTIONS]
    kwargs = dict(max_new_tokens=16, stop_strings=(), batch_size=3)
    model.set_attn_implementation("eager")
    try:
        assert _stream(model, tok, prompts, static_cache=True, **kwargs) == _stream(model, tok, prompts,
                                                                                     static_cache=False, **kwargs)
    finally:
        model.set_attn_implementation("sdpa")


def test_static_slots_under_trainings_packed_attentions_equal_the_dynamic_engine(tiny, one_thread):
    """Validation decoding while training runs on the training attention (per-example sdpa on a
    CPU, varlen on a GPU); outside packed rows both are sdpa, so the fixed slots serve them too."""
    from mathtune.models import engine
    from mathtune.models.attention import NAME, VARLEN, register

    model, tok = tiny
    prompts = [make_prompt_builder("chat").render(q, tok) for q in QUESTIONS]
    kwargs = dict(max_new_tokens=16, stop_strings=(), batch_size=3, prefill_size=1)
    dynamic = _stream(model, tok, prompts, static_cache=False, **kwargs)
    try:
        for name in (NAME, VARLEN):
            model.set_attn_implementation(register(name))
            assert engine.uses_static_cache(model, True)
            assert _stream(model, tok, prompts, static_cache=True, **kwargs) == dynamic
    finally:
        model.set_attn_implementation("sdpa")


def test_static_slots_place_and_compact_keep_each_rows_columns():
    """A slot's own columns survive compaction in their order, and no slot keeps another's."""
    from types import SimpleNamespace

    config = SimpleNamespace(hidden_size=8, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=1,
                             layer_types=["full_attention"], _attn_implementation="sdpa")
    config.get_text_config = lambda: config
    model = SimpleNamespace(config=config, parameters=lambda: iter([torch.zeros(1)]))
    slots = static_cache.Slots(model, 3, 12, greedy=True)

    def kv(values):  # [k, heads=1, L, head_dim=4], each column holding its value
        t = torch.tensor(values, dtype=torch.float32)
        return [(t[:, None, :, None].expand(-1, 1, -1, 4).clone(), t[:, None, :, None].expand(-1, 1, -1, 4).clone())]

    slots.place([0, 2], kv([[1, 2, 3], [0, 5, 6]]), torch.tensor([[1, 1, 1], [0, 1, 1]]), torch.tensor([3, 2]),
                torch.tensor([7, 8]))
    assert slots.t == 3 and slots.tokens.tolist() == [7, 0, 8] and slots.pos.tolist() == [3, 0, 2]
    slots.set_column(9)
    slots.place([1], kv([[4, 4]]), torch.tensor([[1, 1]]), torch.tensor([2]), torch.tensor([9]))  # columns 7, 8
    slots.compact([0, 1])  # slot 2 finished: it keeps nothing
    assert slots.t == 3
    keys = slots.layers[0].keys[:, 0, :, 0]
    assert slots.mask[:, :3].tolist() == [[True, True, True], [False, True, True], [False, False, False]]
    assert keys[0, :3].tolist() == [1, 2, 3] and keys[1, 1:3].tolist() == [4, 4]
    assert not slots.mask[:, 3:].any()


def test_cpu_auto_batch_counts_rows_not_problems():
    """With k samples a problem is k rows; on a CPU the row count stays CPU_BATCH_SIZE."""
    import torch

    from mathtune.models.engine import auto_batch_size
    from mathtune.models.generate import CPU_BATCH_SIZE

    model = torch.nn.Linear(2, 2)
    assert auto_batch_size(model, 600) == CPU_BATCH_SIZE
    assert auto_batch_size(model, 600, samples=4) == CPU_BATCH_SIZE // 4
    assert auto_batch_size(model, 600, samples=10 * CPU_BATCH_SIZE) == 1
