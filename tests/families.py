"""Tiny random models of the families users fine-tune (Llama 3, Mistral, Gemma 3, Phi-3, Qwen2),
each with a small byte-level BPE tokenizer trained offline that keeps its family's conventions:
the special tokens, whether the tokenizer prepends a BOS token, the eos ids its generation
config lists, and a short chat template written here from the family's documented format
(none is copied from a hub file; the tests never reach a hub):

- Llama 3.1/3.2: the tokenizer prepends <|begin_of_text|> and the template writes it too; header
  tokens around each role; turns end <|eot_id|>; a system header that writes "Today Date: ..."
  from `date_string`, or from `strftime_now` when the caller passes none.
- Mistral / Llama 2: the tokenizer prepends <s>, the template writes `<s>[INST] ... [/INST]answer</s>`
  and folds a system message into the first user turn (as Llama 2's does; Mistral v0.3's folds it into
  the last; mathtune sends none, so both render its prompt alike).
- Gemma: the template writes <bos>, `<start_of_turn>user ... <end_of_turn>`, calls the reply's
  role `model`, and raises on a system role.
- Phi-3: `<|user|>\\n...<|end|>\\n<|assistant|>\\n`, turns end <|end|>, no BOS.
- Qwen2: ChatML, no BOS (the tiny model of tests/tiny.py).

Mistral's and Gemma's tokenizers split words SentencePiece's way ('▁' for a space, with and
without a dummy '▁' before the first word); Llama 3's and Qwen2's are byte-level BPE, and so is
Phi-3's here, standing in for its SentencePiece vocabulary.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from mathtune.task.prompts import FALLBACK_CHAT_TEMPLATE, VERIFY_INSTRUCTION

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] + '\\n\\n' %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}"
    "{{- '[INST] ' + (system_message if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)

GEMMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- raise_exception('System role not supported') }}{%- endif %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

PHI3_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- else %}{{- eos_token }}{%- endif %}"
)


@dataclass(frozen=True)
class Family:
    name: str
    config_class: type
    specials: tuple[str, ...]
    template: str
    eos_token: str
    turn_end: str  # the token that closes the assistant's turn: what must stop generation
    generation_eos: tuple[str, ...]  # generation_config.eos_token_id, as the family's models ship it
    bos_token: str | None = None
    prepends_bos: bool = False  # the tokenizer's post-processor puts bos_token in front of any text
    pad_token: str | None = None  # Llama 3 and Mistral ship none
    unk_token: str | None = None
    writes_bos: bool = False  # the chat template writes bos_token itself
    dated: bool = False  # the template writes today's date
    model_kwargs: dict = field(default_factory=dict)
    # SentencePiece-style words ('▁' for a space, no byte-level alphabet) with this dummy-prefix
    # scheme: Mistral's "first" (a '▁' before the text's first word), Gemma's "never"; None:
    # byte-level BPE (Llama 3, Qwen2; Phi-3's SentencePiece vocabulary is stood in for by it).
    metaspace: str | None = None

    @property
    def answer_closings(self) -> tuple[str, ...]:
        """The ids a training answer may end with: the turn end or an eos the model stops on."""
        return (self.turn_end, self.eos_token) + self.generation_eos


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llama3", LlamaConfig,
            ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            LLAMA3_TEMPLATE, eos_token="<|eot_id|>", turn_end="<|eot_id|>",
            generation_eos=("<|end_of_text|>", "<|eot_id|>"),
            bos_token="<|begin_of_text|>", prepends_bos=True, writes_bos=True, dated=True,
        ),
        Family(
            "mistral", MistralConfig, ("<unk>", "<s>", "</s>"), MISTRAL_TEMPLATE,
            eos_token="</s>", turn_end="</s>", generation_eos=("</s>",),
            bos_token="<s>", prepends_bos=True, writes_bos=True, unk_token="<unk>",
            model_kwargs={"sliding_window": None}, metaspace="first",
        ),
        Family(
            "gemma3", Gemma3TextConfig, ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
            GEMMA_TEMPLATE, eos_token="<eos>", turn_end="<end_of_turn>", generation_eos=("<eos>", "<end_of_turn>"),
            bos_token="<bos>", prepends_bos=True, writes_bos=True, pad_token="<pad>", unk_token="<unk>",
            model_kwargs={"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 64}, metaspace="never",
        ),
        Family(
            "phi3", Phi3Config,
            ("<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"),
            PHI3_TEMPLATE, eos_token="<|endoftext|>", turn_end="<|end|>",
            generation_eos=("<|endoftext|>", "<|assistant|>", "<|end|>"),
            bos_token="<s>", pad_token="<|endoftext|>", unk_token="<unk>",
        ),
        Family(
            "qwen2", Qwen2Config, ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), FALLBACK_CHAT_TEMPLATE,
            eos_token="<|im_end|>", turn_end="<|im_end|>", generation_eos=("<|im_end|>", "<|endoftext|>"),
            pad_token="<|endoftext|>",
        ),
    )
}


def build_family_tokenizer(family: Family, corpus: list[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    texts = corpus + [VERIFY_INSTRUCTION, family.template]  # the template's own text ('[INST]') has words too
    if family.metaspace is None:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE(unk_token=family.unk_token))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=family.metaspace)
        tok.decoder = decoders.Metaspace(prepend_scheme=family.metaspace)
        alphabet = sorted(set("".join(texts)) | {"▁"})
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(family.specials),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if family.prepends_bos:
        bos = family.bos_token
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=family.bos_token,
        eos_token=family.eos_token,
        pad_token=family.pad_token,
        unk_token=family.unk_token,
        additional_special_tokens=[t for t in family.specials
                                   if t not in (family.bos_token, family.eos_token, family.pad_token, family.unk_token)],
    )
    fast.chat_template = family.template
    return fast


def build_family_model(family: Family, out_dir: Path, corpus: list[str], *, seed: int = 0,
                       stuck_on_turn_end: bool = False) -> Path:
    """Write a random 2-layer, 32-wide model of the family with its tokenizer to out_dir.

    stuck_on_turn_end: rig the weights so the greedy next token is always the family's turn
    end, whatever the prompt: every layer adds nothing to the residual stream (attention and
    MLP output projections are zero), every token embeds to the same unit vector, and only the
    turn end's row of an untied output head reads it. A correct decoder then stops after one
    token with an empty completion."""
    tokenizer = build_family_tokenizer(family, corpus)
    ids = tokenizer.convert_tokens_to_ids
    config = family.config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=not stuck_on_turn_end,
        bos_token_id=ids(family.bos_token) if family.bos_token else None,
        eos_token_id=ids(family.eos_token),
        pad_token_id=ids(family.pad_token) if family.pad_token else None,
        **family.model_kwargs,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if stuck_on_turn_end:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    param.zero_()
            embed = model.get_input_embeddings().weight
            embed.zero_()
            embed[:, 0] = 1.0
            head = model.get_output_embeddings().weight
            head.zero_()
            head[ids(family.turn_end), 0] = 1.0
    model.generation_config.eos_token_id = [ids(t) for t in family.generation_eos]
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# --- Qwen-vocabulary reasoning families, on the real Qwen2.5 tokenizer -------------------------------
# The Qwen2.5 tokenizer in ../shared with each family's added tokens at their shipped ids is that
# family's real tokenizer: Qwen3 adds <tool_response>, </tool_response>, <think> (151667) and
# </think> (151668), all ordinary (non-special) added tokens; DeepSeek-R1-Distill-Qwen renames
# 151643-151649 to its own (<｜end▁of▁sentence｜> is the eos, <｜begin▁of▁sentence｜> the BOS its
# tokenizer prepends, <think> 151648 and </think> 151649 ordinary). The templates are written here
# from the families' documented formats (the assistant-turn, think-block and generation-prompt
# parts that decide the tokens; no tool calls).

SHARED_QWEN_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "qwen2.5-tokenizer"


@functools.lru_cache(maxsize=1)
def qwen_tokenizer_folder() -> Path:
    """The Qwen2.5 tokenizer: ../shared's copy where it is, else the offline registry model's
    (Qwen2.5-Coder-0.5B-Instruct, which `make test` installs): the same vocabulary, merges and
    added tokens, so a clone without ../shared runs these tests too."""
    if (SHARED_QWEN_TOKENIZER / "tokenizer.json").is_file():
        return SHARED_QWEN_TOKENIZER
    from mathtune.models.load import resolve_model_path
    from mathtune.models.registry import ensure_model

    return Path(resolve_model_path(str(ensure_model("qwen2.5-coder-0.5b-instruct"))))

# Qwen3's hybrid template: thinks unless enable_thinking=False, which closes an empty think block in
# the generation prompt; the last assistant turn after the last user turn is rendered with its
# reasoning in a think block (an empty one when the reply has none).
QWEN3_ASSISTANT_TURNS = (
    "{%- set ns = namespace(last_query_index=messages|length - 1, found=false) %}"
    "{%- for message in messages[::-1] %}"
    "{%- if not ns.found and message.role == 'user' %}"
    "{%- set ns.last_query_index = (messages|length - 1) - loop.index0 %}{%- set ns.found = true %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or message.role == 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content %}{%- set reasoning_content = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
)
QWEN3_TEMPLATE = QWEN3_ASSISTANT_TURNS + (
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
# Qwen3 Thinking-2507: the same turns; the generation prompt always opens the think block.
QWEN3_THINKING_TEMPLATE = QWEN3_ASSISTANT_TURNS + (
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)
# DeepSeek-R1-Distill-Qwen (its template as updated after release): BOS, then the turns; a past
# reply keeps only what follows </think>; the generation prompt opens the think block.
R1_DISTILL_TEMPLATE = (
    "{%- set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{%- set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
    "{{- bos_token }}{{- ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '<｜User｜>' + message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{%- set content = message['content'] %}"
    "{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1] %}{%- endif %}"
    "{{- '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<｜Assistant｜><think>\\n' }}{%- endif %}"
)
# Llama 3.1's template writes a fixed date unless the caller passes one (3.2's reads the clock).
LLAMA31_TEMPLATE = LLAMA3_TEMPLATE.replace(
    "{%- set date_string = strftime_now('%d %b %Y') %}", "{%- set date_string = '26 Jul 2024' %}")


@dataclass(frozen=True)
class QwenVocabFamily:
    name: str
    config_class_name: str  # Qwen3Config or Qwen2Config (R1-Distill-Qwen is a Qwen2)
    template: str
    renamed: dict  # id -> (content, special): the family's own tokens in place of Qwen2.5's
    added: tuple  # (id, content, special) appended after Qwen2.5's last added token
    eos_token: str
    turn_end: str
    generation_eos: tuple[str, ...]
    bos_token: str | None = None
    prepends_bos: bool = False
    pad_token: str | None = None


QWEN3_ADDED = ((151665, "<tool_response>", False), (151666, "</tool_response>", False), (151667, "<think>", False),
               (151668, "</think>", False))
R1_RENAMED = {151643: ("<｜end▁of▁sentence｜>", True), 151644: ("<｜User｜>", False), 151645: ("<｜Assistant｜>", False),
              151646: ("<｜begin▁of▁sentence｜>", True), 151647: ("<|EOT|>", False), 151648: ("<think>", False),
              151649: ("</think>", False)}

REASONING_FAMILIES: dict[str, QwenVocabFamily] = {
    f.name: f
    for f in (
        QwenVocabFamily("qwen3", "Qwen3Config", QWEN3_TEMPLATE, {}, QWEN3_ADDED, eos_token="<|im_end|>",
                        turn_end="<|im_end|>", generation_eos=("<|im_end|>", "<|endoftext|>"), pad_token="<|endoftext|>"),
        QwenVocabFamily("qwen3-thinking-2507", "Qwen3Config", QWEN3_THINKING_TEMPLATE, {}, QWEN3_ADDED,
                        eos_token="<|im_end|>", turn_end="<|im_end|>", generation_eos=("<|im_end|>", "<|endoftext|>"),
                        pad_token="<|endoftext|>"),
        QwenVocabFamily("r1-distill-qwen", "Qwen2Config", R1_DISTILL_TEMPLATE, R1_RENAMED, (),
                        eos_token="<｜end▁of▁sentence｜>", turn_end="<｜end▁of▁sentence｜>",
                        generation_eos=("<｜end▁of▁sentence｜>",), bos_token="<｜begin▁of▁sentence｜>",
                        prepends_bos=True, pad_token="<｜end▁of▁sentence｜>"),
    )
}


def build_qwen_vocab_tokenizer(family: QwenVocabFamily) -> PreTrainedTokenizerFast:
    spec = json.loads((qwen_tokenizer_folder() / "tokenizer.json").read_text(encoding="utf-8"))
    # The file (saved from a GGUF) holds every id up to 151935 in its vocabulary, the unused ones
    # as '[PAD<id>]' fillers: a family's token takes its id's entry there and in the added tokens.
    vocab = spec["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}

    def place(token_id: int, content: str) -> None:
        del vocab[by_id[token_id]]
        vocab[content] = token_id

    for token in spec["added_tokens"]:
        if token["id"] in family.renamed:
            token["content"], token["special"] = family.renamed[token["id"]]
            place(token["id"], token["content"])
    template = dict(spec["added_tokens"][-1], single_word=False, lstrip=False, rstrip=False, normalized=False)
    for token_id, content, special in family.added:
        place(token_id, content)
        spec["added_tokens"].append(dict(template, id=token_id, content=content, special=special))
    tok = Tokenizer.from_str(json.dumps(spec))
    if family.prepends_bos:
        bos = family.bos_token
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=family.bos_token, eos_token=family.eos_token,
                                   pad_token=family.pad_token)
    fast.chat_template = family.template
    return fast


def build_qwen_vocab_model(family: QwenVocabFamily, out_dir: Path, *, seed: int = 0) -> Path:
    """A random 1-layer, 16-wide model of the family on its real 152k vocabulary (tied embeddings)."""
    import transformers

    tokenizer = build_qwen_vocab_tokenizer(family)
    ids = tokenizer.convert_tokens_to_ids
    config = getattr(transformers, family.config_class_name)(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=ids(family.bos_token) if family.bos_token else None, eos_token_id=ids(family.eos_token),
        pad_token_id=ids(family.pad_token) if family.pad_token else None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = [ids(t) for t in family.generation_eos]
    model.generation_config.pad_token_id = config.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
