"""Experiment configuration: one YAML file plus `--set a.b=value` overrides.

Every key is optional; the defaults are the reference experiment (LoRA on Qwen2-1.5B,
GSM8K, r=8, alpha=16, dropout 0.1, lr 2e-4, 3 epochs, patience 5, 90/10 split).
Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from mathtune.core.cache import dequantized_folder
from mathtune.core.errors import MathtuneError
from mathtune.core.probe_kinds import PROBE_KIND_TABLE

# How the base weights are held: the one place these names are written (models.quantize loads them).
Quantization = Literal["none", "4bit", "8bit"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)

# A chat template's thinking mode (task.prompts.template_kwargs renders it).
Thinking = Literal["auto", "on", "off"]

# The names a config key accepts for a kind: the built-in prompt formats and training methods
# are named here, and what each one is lives in its table (task.prompt_kinds, train.methods),
# which adds the name of a kind registered there. The lists grow in place, so the command
# line's choices are always the current ones.
PROMPTS: list[str] = ["chat", "cot8", "plain5"]  # the prompts a model can be trained on
EVAL_PROMPTS: list[str] = [*PROMPTS, "chat-verify"]  # chat-verify: a second, self-check turn
TRAINING_METHODS: list[str] = ["sft", "rft", "grpo"]


def add_kind_name(names: list[str], name: str) -> None:
    """A kind registered in its table becomes a value its config key accepts."""
    if name not in names:
        names.append(name)


class KindName:
    """A config value that must be one of `names` (a list that grows as kinds are registered):
    refused with the message a Literal gives, so the one-line error reads the same."""

    def __init__(self, names: list[str]):
        self.names = names

    def __call__(self, value: Any) -> Any:
        if value not in self.names:
            quoted = [repr(n) for n in self.names]
            expected = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value


def kind_name(names: list[str]) -> Any:
    """The type of a config key naming a kind (docs/hooks.py lists `names` as its values)."""
    return Annotated[str, BeforeValidator(KindName(names))]


TrainingPrompt = kind_name(PROMPTS)
EvalPrompt = kind_name(EVAL_PROMPTS)


def sampling_setting_error(samples: int, temperature: float, prompt: str | None = None) -> str | None:
    """Why these decoding settings cannot run together, or None: the one check that the config,
    the command line and the evaluation all use."""
    if samples < 1:
        return "samples must be at least 1"
    if samples > 1 and temperature == 0.0:
        return "samples > 1 needs temperature > 0 (greedy samples are all the same)"
    if prompt == "chat-verify" and samples > 1:
        return "chat-verify checks one answer per problem: use it with samples 1"
    return None


def quantization_setting_error(quantization: str, name_or_path: str) -> str | None:
    """Why this model cannot be loaded with this quantization, or None: the one check that the
    config, the command line and the loader all use."""
    if quantization != "none" and str(name_or_path).endswith(".gguf"):
        return (f"quantization {quantization} applies to a transformers checkpoint, and a .gguf file is already "
                "quantized (mathtune dequantizes it on load): use quantization none with it, or give the model's "
                f"folder or hub id{_dequantized_folder_named(name_or_path, quantization)}")
    return None


def _dequantized_folder_named(gguf: str, quantization: str) -> str:
    """The transformers folder mathtune keeps for this .gguf: a checkpoint that quantization
    does apply to."""
    try:
        folder = dequantized_folder(Path(gguf))
    except OSError:
        return ""  # no such file: the loader says so
    if (folder / "config.json").is_file():
        return f", such as the dequantized folder mathtune keeps for this file: {folder} (with quantization {quantization})"
    return (f"; mathtune dequantizes this file once into {folder}, the first time it is used with quantization "
            f"none, and quantization {quantization} can then load that folder")


class _Section(BaseModel):
    # extra="forbid": a typo in a key must fail loudly, never be silently ignored.
    # strict: "3" is not an int and "yes" is not a bool; YAML already gives real types.
    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)


def absolute_if_local(value: str) -> str:
    """A local path as an absolute one (so a run folder's config works from any folder); a
    hub id, or a path that does not exist and does not look like one, is left as given."""
    expanded = os.path.expanduser(value)
    if value.startswith((".", "/", "~")) or os.path.exists(expanded):
        return os.path.abspath(expanded)
    return value


# A hub id, or a local path made absolute when the config is read (a run folder's config then
# works from any folder).
PathOrId = Annotated[str, AfterValidator(absolute_if_local)]


class ModelConfig(_Section):
    name_or_path: PathOrId = "Qwen/Qwen2-1.5B"
    """Hub id, local folder, or a .gguf file (dequantized on load, cached as safetensors)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto = bfloat16 on a GPU, float32 on a CPU."""
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2", "mathtune_varlen",
                                 "mathtune_segments"] = "auto"
    """auto = sdpa, except for packed training rows: there one varlen flash-attention call per
    layer on a GPU (mathtune_varlen: torch 2.10+, bf16/fp16), one sdpa call per example
    elsewhere (mathtune_segments). Either is checked on the device before its first use: auto
    falls back to sdpa when the check fails; a name given here is refused instead."""
    trust_remote_code: bool = False
    """Run Python code shipped with the model (a custom architecture). Off by default; the
    report says when it was on."""
    quantization: Quantization = "none"
    """Base weights loaded quantized by bitsandbytes (QLoRA), for training and for both
    evaluations: 4bit = NF4 with double quantization, computing in model.dtype (bf16 on a GPU,
    fp32 on a CPU); 8bit = LLM.int8(). Needs bitsandbytes, the `qlora` extra
    (`pip install -c constraints.txt -e '.[qlora]'`); not for a .gguf."""
    thinking: Thinking = "auto"
    """The chat template's thinking mode, alike in training, validation, both evaluations, the
    probe and the plan: auto = the template's default (Qwen3's thinks); on / off = its
    enable_thinking set true / false. off: Qwen3's non-thinking prompt (ending with the empty
    think block), trained as that prompt, the solution and the turn end. Where the template
    thinks (on, or auto on a thinking template), the reply is trained in the thinking format:
    the solution's steps inside <think>...</think>, its '#### N' line after it. A template that
    always opens <think> in its generation prompt (DeepSeek-R1-Distill, Qwen3 Thinking-2507)
    has no off. Only the chat prompts use a template; the scorer never reads inside a think
    block."""

    @field_validator("thinking", mode="before")
    @classmethod
    def _on_off_as_words(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `on` / `off` as true / false: `thinking: off` means the word.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("quantization")
    @classmethod
    def _quantizable(cls, v: str, info) -> str:
        error = quantization_setting_error(v, info.data.get("name_or_path", ""))
        if error:
            raise ValueError(error)
        return v


class FieldsConfig(_Section):
    question: str = "question"
    """The record field holding the question."""
    answer: str = "answer"
    """The record field holding the answer: a solution that states its final number as the strict
    scorer reads one ('#### N', 'The answer is: N', 'The final answer is N', '\\boxed{N}'), or a
    bare number. The solution is trained as written."""
    final: str | None = None
    """A field holding the final number, for data whose solutions do not state it in one of
    those forms (the solution is still trained as written)."""


class MixSource(_Section):
    source: PathOrId
    """Hub dataset id, a local folder, or one local JSONL file."""
    fields: FieldsConfig = FieldsConfig()
    """Its question and answer fields."""
    config: str | None = None
    """Hub dataset config."""
    split: str = "train"
    """The split trained on: a hub split name or a file stem in a folder (a single file is read whole)."""
    weight: float = Field(1.0, ge=0.0)
    """Examples taken: round(weight x its problems); 1 = each once, 0.5 = a seeded half, 2 = each twice, 0 = none."""


class DataConfig(_Section):
    source: PathOrId = "openai/gsm8k"
    """Hub dataset id, a local folder holding train.jsonl and test.jsonl, or one local JSONL
    file (a test set)."""
    val_fraction: float = Field(0.10, gt=0.0, lt=1.0)
    """Share of the train split held out for validation (seeded, stable)."""
    max_length: int = Field(512, gt=0)
    """Longest training example in tokens (prompt + answer)."""
    prompt: TrainingPrompt = "chat"
    """Prompt format used for training (the same builder evaluation uses)."""
    train_limit: int | None = Field(None, ge=0)
    """Use only the first N training problems after the seeded split (quick runs); the
    validation half is cut in proportion, to ceil(N * val_fraction / (1 - val_fraction)).
    0: train on data.mix alone (the validation half then cut in proportion to the mix's examples)."""
    fields: FieldsConfig = FieldsConfig()
    """Field mapping for data sets that name their fields otherwise (GSM-Plus, SVAMP, ...)."""
    config: str | None = None
    """Hub dataset config (default: 'main' for openai/gsm8k, the dataset's own default otherwise)."""
    split: str = "test"
    """The source's split read as the test set: a hub split name, or the file stem in a folder."""
    mix: list[MixSource] = []
    """Extra training sources ({source, fields, config, split, weight}); the seeded split,
    the validation set and the test set stay those of `source`."""
    prompt_date: str | None = None
    """The day (YYYY-MM-DD) a chat template that writes today's date (Llama 3.1/3.2) is given,
    in training and every evaluation of the run; null: the day the run folder is made, then
    kept in its config.yaml, so prompts never change with the clock."""

    @model_validator(mode="after")
    def _something_to_train(self) -> "DataConfig":
        if self.train_limit == 0 and not any(entry.weight > 0 for entry in self.mix):
            raise ValueError("train_limit 0 trains on data.mix alone, and data.mix has no source of weight > 0")
        return self

    @field_validator("prompt_date", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        if isinstance(value, datetime.date):  # YAML reads 2026-12-05 as a date
            return value.isoformat()
        if isinstance(value, str):
            try:
                datetime.date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"'{value}' is not a date of the form YYYY-MM-DD") from None
        return value


class LoraConfig(_Section):
    r: int = Field(8, gt=0)
    """LoRA rank."""
    alpha: int = Field(16, gt=0)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases are trained."""
    target_modules: str | list[str] = "all-linear"
    """Module names to adapt, or 'all-linear' (every linear layer except the LM head)."""
    use_dora: bool = False
    """DoRA: the adapted weight is split into a magnitude (a trained vector per output) and a
    direction (the LoRA update), PEFT's use_dora; adds one vector per adapted layer."""
    use_rslora: bool = False
    """rsLoRA: scale the update by alpha / sqrt(r) instead of alpha / r (PEFT's use_rslora),
    which keeps higher ranks learning."""


# Reward names GRPO accepts (mathtune.train.grpo.REWARDS holds the functions).
GRPO_REWARDS = ("exact_match", "format")


class _Sampled(_Section):
    """A section with `samples` and `temperature` fields (RFT's sampling, evaluation), and
    perhaps a `prompt`."""

    @model_validator(mode="after")
    def _sampling_settings_fit(self):
        error = sampling_setting_error(self.samples, self.temperature, getattr(self, "prompt", None))
        if error:
            raise ValueError(error)
        return self


class RftConfig(_Sampled):
    samples: int = Field(4, gt=0)
    """Solutions sampled from the base model per training problem."""
    keep: int = Field(1, gt=0)
    """At most this many distinct strictly correct solutions kept per problem."""
    temperature: float = Field(0.7, ge=0.0)
    """Sampling temperature (0 = greedy, only with samples: 1)."""
    max_new_tokens: int = Field(512, gt=0)
    """Generation budget per sampled solution; a truncated one is never kept."""


class GrpoConfig(_Section):
    group_size: int = Field(4, ge=2)
    """Completions sampled per prompt; rewards are compared within each group (TRL's
    num_generations). train.batch_size counts completions and must be a multiple of it."""
    max_completion_length: int = Field(512, gt=0)
    """Generation budget per completion."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature of the completions."""
    beta: float = Field(0.04, ge=0.0)
    """KL coefficient against the base model (the adapter switched off); 0 drops the KL term."""
    rewards: dict[str, float] = {"exact_match": 1.0}
    """Reward name -> weight. exact_match: 1 when the strict scorer finds the gold answer;
    format: 1 when the completion states a final answer in a strict form at all."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer steps (default: train.epochs over the prompts)."""

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("needs at least one reward")
        unknown = [k for k in v if k not in GRPO_REWARDS]
        if unknown:
            raise ValueError(f"unknown reward '{unknown[0]}' (expected one of {', '.join(GRPO_REWARDS)})")
        return v


class TrainConfig(_Section):
    method: kind_name(TRAINING_METHODS) = "sft"
    """sft: LoRA on the gold solutions (the seed's recipe); rft: LoRA on the base model's own
    strictly correct samples (gold where none is correct); grpo: TRL's GRPO with the strict
    exact-match scorer as the reward."""
    rft: RftConfig = RftConfig()
    """Settings of method rft."""
    grpo: GrpoConfig = GrpoConfig()
    """Settings of method grpo."""
    epochs: float = Field(3.0, gt=0)
    """Passes over the training split."""
    learning_rate: float = Field(2.0e-4, gt=0)
    """Peak learning rate."""
    batch_size: int = Field(16, gt=0)
    """Examples (or packed sequences) per device per step."""
    gradient_accumulation_steps: int = Field(1, gt=0)
    """Micro-batches per optimizer step."""
    early_stopping_patience: int | None = Field(5, ge=1)
    """Stop after this many validation points without a better `select_by` figure; null disables."""
    eval_every_steps: int = Field(50, gt=0)
    """Validation (and checkpoint) interval in optimizer steps."""
    select_by: Literal["eval_loss", "exact_match"] = "eval_loss"
    """What picks the kept adapter and drives early stopping: the validation loss, or strict
    exact match on `accuracy_problems` validation problems decoded at every validation point."""
    accuracy_problems: int = Field(128, gt=0)
    """With select_by exact_match: the seeded subset of the validation split decoded at each
    validation point (greedy, eval.prompt, eval.max_new_tokens); never the test split."""
    logging_steps: int = Field(1, gt=0)
    """Training metrics are logged every this many steps."""
    packing: bool = True
    """Pack several examples per sequence; attention stays within each example."""
    gpu_hourly_usd: float = Field(2.0, ge=0)
    """Price of one GPU-hour, for the cost estimate (not applied on CPU)."""
    report_to: list[str] = ["tensorboard"]
    """Experiment trackers: tensorboard, mlflow, wandb, trackio (when installed), or []."""
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    """Share of steps with linear learning-rate warm-up."""
    lr_scheduler_type: str = "cosine"
    """transformers scheduler name."""
    gradient_checkpointing: bool = False
    """Trade compute for memory on large models."""

    @model_validator(mode="after")
    def _grpo_has_no_validation(self) -> "TrainConfig":
        if self.method == "grpo" and self.select_by != "eval_loss":
            raise ValueError("select_by exact_match needs validation points, and method grpo has none "
                             "(its adapter is the last step's)")
        return self

    @model_validator(mode="after")
    def _grpo_batch_holds_groups(self) -> "TrainConfig":
        if self.method == "grpo" and (self.batch_size * self.gradient_accumulation_steps) % self.grpo.group_size:
            raise ValueError(
                f"with method grpo, batch_size x gradient_accumulation_steps "
                f"({self.batch_size * self.gradient_accumulation_steps}) must be a multiple of grpo.group_size "
                f"({self.grpo.group_size})"
            )
        return self


PROBE_KINDS = PROBE_KIND_TABLE.names()


class ProbeConfig(_Section):
    variants: int = Field(1, gt=0)
    """Perturbed copies of each test problem whose calculation can be recomputed (numbers
    changed, gold answer recomputed from the solution's annotations); seeded by `seed`."""
    kinds: list[kind_name(list(PROBE_KINDS))] = Field(["numbers"], min_length=1)
    """What the variants change: numbers (gold recomputed), names (the people renamed, gold
    unchanged), magnitudes (the numbers scaled by 10, 100 or 1,000, gold recomputed); each
    kind paired with the originals on its own."""


class EvalConfig(_Sampled):
    source: PathOrId | None = None
    """The data evaluated, when it is not data.source: a hub dataset id, a local folder holding
    test.jsonl, or one local JSONL file (e.g. train on your own file, evaluate on GSM8K's test
    split). null: data.source's test split."""
    fields: FieldsConfig | None = None
    """The field mapping of the evaluated data; null: data.fields."""
    split: Literal["test", "train", "validation"] = "test"
    """Which split to benchmark; 'test' is the standard GSM8K benchmark."""
    limit: int | None = Field(None, gt=0)
    """Evaluate only the first N problems."""
    prompt: EvalPrompt = "chat"
    """Prompt format: chat (zero-shot chat template), cot8 (8-shot CoT), plain5 (5-shot),
    chat-verify (chat, then a second turn asking the model to check its answer; scored on it)."""
    max_new_tokens: int = Field(512, gt=0)
    """Generation budget; a completion that hits it is marked truncated."""
    batch_size: int | Literal["auto"] = "auto"
    """Problems per generation batch; auto finds the largest that fits."""
    samples: int = Field(1, gt=0)
    """Completions per problem; >1 majority-votes the answer (self-consistency)."""
    temperature: float = Field(0.0, ge=0.0)
    """0 = greedy. Must be > 0 when samples > 1."""
    probe: ProbeConfig | None = None
    """{variants: N}: after the benchmark, the robustness probe: base and tuned on variants
    of the test problems with changed numbers, paired with the originals."""
    extra: list[str] = []
    """lm-evaluation-harness tasks scored on base and tuned (the regression check), e.g. [mmlu, arc_easy]."""
    extra_data: dict[str, PathOrId] = {}
    """Task -> local data folder, e.g. {mmlu: data/mmlu} (MMLU's original CSV layout)."""
    extra_subjects: list[str] | None = None
    """MMLU subjects to score (default: every subject in the folder)."""
    extra_limit: int | None = Field(None, gt=0)
    """At most this many documents per lm-eval task (per MMLU subject), for quick runs."""

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v <= 0:
            raise ValueError("must be a positive integer or 'auto'")
        return v


class ReportConfig(_Section):
    formats: list[Literal["md", "html"]] = ["md", "html"]
    """Report files to write."""


class Config(_Section):
    name: str = "qwen2-1.5b-gsm8k-lora"
    """Experiment name, shown in the report."""
    seed: int = 42
    """Seeds the split, the few-shot draw, LoRA init and data order."""
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    report: ReportConfig = ReportConfig()

    @model_validator(mode="after")
    def _named_after_its_model(self) -> "Config":
        """The reference name on another model (the reference config with model.name_or_path
        changed, or a config that names a model and no run) would title the report and name
        the run folder after a model that did not run: such a run is named after its model."""
        reference = type(self).model_fields
        if (self.name == reference["name"].default
                and self.model.name_or_path != ModelConfig.model_fields["name_or_path"].default):
            self.name = name_for_model(self.model.name_or_path)
        return self


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 and 2E5 as floats. PyYAML follows YAML 1.1, where a
    float needs a dot ('1.0e-3'), so 'learning_rate: 1e-3' would arrive as a string."""


# Nor does it read 2026-12-05 as a date: data.prompt_date takes the text and checks it itself,
# and a date-like value that is no date (2026-13-01) would otherwise crash the YAML reader.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only, no objects


def _section_fields(loc: tuple) -> list[str]:
    """The keys allowed in the config section at loc (for 'did you mean')."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _format_validation_error(err: ValidationError, origin: str, overrides: list[str] = ()) -> str:
    errors = err.errors()

    def source(loc: tuple) -> str:
        # A key set (or replaced) by --set is reported as coming from --set, not the file.
        loc = tuple(str(p) for p in loc)
        found = origin
        for text in overrides:
            path = tuple(parse_override(text)[0])
            if path == loc[: len(path)]:
                found = f"--set {text}"
        if found == origin and _section_fields(loc):
            # A check across a section's keys failed (a model validator): the --set keys inside
            # that section made the conflict, or helped make it with the file's values.
            inside = [f"--set {text}" for text in overrides if tuple(parse_override(text)[0])[: len(loc)] == loc]
            if inside:
                found = ", ".join(inside)
        return found

    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        names = []
        for e in unknown:
            parent, name = e["loc"][:-1], str(e["loc"][-1])
            close = difflib.get_close_matches(name, _section_fields(parent), n=1)
            hint = f" (did you mean '{'.'.join([*map(str, parent), close[0]])}'?)" if close else ""
            names.append(f"'{'.'.join(map(str, e['loc']))}'{hint}")
        plural = "s" if len(names) > 1 else ""
        return f"{source(unknown[0]['loc'])}: unknown config key{plural} {', '.join(names)}"
    first = errors[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"].removeprefix("Value error, ")
    if "input" in first and not isinstance(first["input"], dict):
        msg += f" (got {first['input']!r})"
    what = "config section" if _section_fields(first["loc"]) and first["type"] == "value_error" else "config key"
    return f"{source(first['loc'])}: {what} '{key}': {msg}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value), the value typed as YAML types it."""
    if "=" not in text:
        raise MathtuneError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise MathtuneError(f"--set expects key=value, got {text!r}")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `a.b=value` in the config data. A section on the way that is absent or null (an
    optional one such as eval.probe, unset) is created, and the schema fills its other keys with
    their defaults."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if node.get(part) is None:
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                raise MathtuneError(f"--set {text}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def config_from_dict(data: dict[str, Any], origin: str = "config", overrides: list[str] = ()) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise MathtuneError(_format_validation_error(err, origin, overrides)) from None


def yaml_error_line(path: Path, text: str, err: yaml.YAMLError) -> str:
    """'c.yaml: line 2: not valid YAML: <the parser's reason>', naming a line of the file: the
    parser marks an unclosed bracket or quote at the end of the stream, one line past the
    last; the line where the unclosed thing opened is the one to look at."""
    lines = max(1, len(text.splitlines()))
    problem, context = getattr(err, "problem", None), getattr(err, "context", None)
    problem_mark, context_mark = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
    mark = problem_mark
    if mark is None or mark.line >= lines:
        mark = context_mark or problem_mark
    reason = (problem or str(err).splitlines()[0]).replace("'<stream end>'", "the end of the file")
    if context and context_mark is not None:
        reason += f" ({context}, which starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
    elif context:
        reason += f" ({context})"
    where = f" line {min(mark.line + 1, lines)}:" if mark is not None else ""
    return f"{path}:{where} not valid YAML: {reason}"


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults when path is None), apply overrides, validate."""
    data: dict[str, Any] = {}
    origin = "config"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if path.is_dir():
            raise MathtuneError(f"{path} is a folder, not a config file")
        if not path.is_file():
            raise MathtuneError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise MathtuneError(f"cannot read {path}: {err}") from None
        try:
            loaded = _load_yaml(text)
        except yaml.YAMLError as err:
            raise MathtuneError(yaml_error_line(path, text, err)) from None
        if loaded is None:  # an empty file (or only comments): every key takes its default
            loaded = {}
        if not isinstance(loaded, dict):
            raise MathtuneError(f"{path}: the top level must be a mapping of config keys")
        data = loaded
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data, origin, overrides or [])


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def config_from_yaml_text(text: str, origin: str) -> Config:
    """A config from YAML text (a run folder's config.yaml); text that is not YAML, as a file cut
    short leaves it, is a one-line error naming origin."""
    try:
        loaded = _load_yaml(text)
    except yaml.YAMLError as err:
        raise MathtuneError(yaml_error_line(origin, text, err)) from None
    return config_from_dict(loaded or {}, origin)


def name_for_model(name_or_path: str) -> str:
    """A run name after a model: 'Qwen/Qwen2.5-0.5B' -> 'qwen2.5-0.5b-gsm8k-lora'."""
    stem = Path(str(name_or_path).rstrip("/")).name.removesuffix(".gguf")
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-") + "-gsm8k-lora"


def today_utc() -> str:
    """Today's date in UTC, as prompts are dated when nothing has fixed a day yet."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def settled_prompt_date(given: str | None, *recorded: str | None) -> str:
    """The one rule for the day prompts are rendered with: as given; else the first date already
    recorded (a run folder's config.yaml, an evaluation's own files, the run an adapter came
    from); else today (UTC). Settled once, at a command's door, so training, every evaluation,
    the probe and a resume render the same prompts on any day."""
    return given or next((date for date in recorded if date), None) or today_utc()


def with_prompt_date(config: Config, run_dir: Path) -> Config:
    """The config with its data.prompt_date settled for this run folder (settled_prompt_date: as
    given, else the one the folder's config.yaml already holds, else today)."""
    if config.data.prompt_date is not None:
        return config
    date = settled_prompt_date(None, saved_prompt_date(run_dir))
    return config.model_copy(update={"data": config.data.model_copy(update={"prompt_date": date})})


def saved_prompt_date(run_dir: Path) -> str | None:
    """The data.prompt_date a run folder's config.yaml holds; None without one (or with one that
    cannot be read: the folder's own check names what is wrong with it)."""
    saved = saved_config(run_dir)
    return saved.data.prompt_date if saved is not None else None


def saved_config(run_dir: Path) -> Config | None:
    """The config a run folder's config.yaml holds; None without one (or with one that cannot be
    read: the folder's own check names what is wrong with it)."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return None
    try:
        return config_from_yaml_text(saved.read_text(encoding="utf-8"), str(saved))
    except (MathtuneError, OSError, UnicodeDecodeError):
        return None
