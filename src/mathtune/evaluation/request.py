"""What an evaluation is asked to do, and the problems and prompts that follows from it.

    request = EvalRequest.from_config(config, adapter=run_dir / "adapter")
    problems, builder = load_problems(request)

An EvalRequest holds every setting that decides an evaluation's results; its identity is
what a summary records, so a finished evaluation is found again (and never mixed with one of
other settings) by comparing identities.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mathtune.config import Config, ModelConfig, sampling_setting_error
from mathtune.core.errors import MathtuneError
from mathtune.core.provenance import adapter_sha256
from mathtune.task.data import GSM8K_FORMAT, DataFormat, DataSource, Problem, resolve_data
from mathtune.task.answers import HASH_FORM
from mathtune.task.prompt_kinds import PROMPT_KIND_TABLE
from mathtune.task.prompts import PromptBuilder, describe_prompt, make_prompt_builder
from mathtune.task.training_set import training_answer_form


# Settings a request's identity leaves out at their defaults, as records written before these
# settings existed do: a summary without one of them was made at its default.
IDENTITY_DEFAULTS = {"trust_remote_code": False, "data_format": GSM8K_FORMAT.as_record(), "quantization": "none",
                     "thinking": "auto", "answer_form": HASH_FORM}


@dataclass(frozen=True)
class EvalRequest:
    """Everything that determines an evaluation's results (batch size does not: greedy
    decoding in fp32 gives the same tokens at any batch size, and a test checks it). No defaults
    of its own: a request is built from a config (from_config, with_config_defaults) or from the
    eval command's flags, whose defaults are the config's."""

    model: str
    adapter: str | None
    data: str
    split: str
    limit: int | None
    prompt: str
    samples: int
    temperature: float
    max_new_tokens: int
    batch_size: int | str
    dtype: str
    seed: int
    val_fraction: float
    trust_remote_code: bool
    data_format: DataFormat
    quantization: str  # the base weights as bitsandbytes loads them (models.quantize)
    prompt_date: str | None  # the day a dated chat template is given (task.prompts.template_date); None: settled by the evaluation
    thinking: str  # model.thinking: the chat template's thinking mode (task.prompts.template_kwargs)
    answer_form: str = HASH_FORM  # what the chat prompt asks for: the training data's answer form (task.answers)
    # Where `data` is read from, resolved when the request is made (a copy with other data
    # resolves its own), and that data's identity, recorded by the door (evaluation.resolve):
    # neither decides the results beyond `data` itself, so neither is part of the identity.
    source: DataSource | None = field(default=None, compare=False, repr=False)
    data_identity: dict | None = field(default=None, compare=False, repr=False)
    # The adapter as its content identifies it: (folder, sha256 of its settings and weights, None
    # while it holds no complete adapter), hashed when the request is made; and what the adapter
    # is (variant, rank, modules), read by the door.
    adapter_content: tuple[str, str | None] | None = field(default=None, compare=False, repr=False)
    adapter_settings: dict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.source is None or (self.source.given, self.source.fmt) != (self.data, self.data_format):
            object.__setattr__(self, "source", resolve_data(self.data, self.data_format))
            object.__setattr__(self, "data_identity", None)
        if self.adapter is None or self.adapter_content is None or self.adapter_content[0] != self.adapter:
            content = None if self.adapter is None else (self.adapter, adapter_sha256(self.adapter))
            object.__setattr__(self, "adapter_content", content)

    @classmethod
    def from_config(cls, config: Config, adapter: str | Path | None = None, *,
                    answer_form: str | None = None) -> "EvalRequest":
        """The benchmark a run's config asks for: its model (with `adapter` when given) on its
        data (eval.source, else data.source), under its eval.* settings, the chat prompt asking
        for the training data's answer form (unless `answer_form` is given)."""
        e = config.eval
        return cls(
            model=config.model.name_or_path,
            adapter=str(adapter) if adapter is not None else None,
            data=e.source or config.data.source,
            split=e.split,
            limit=e.limit,
            prompt=e.prompt,
            samples=e.samples,
            temperature=e.temperature,
            max_new_tokens=e.max_new_tokens,
            batch_size=e.batch_size,
            dtype=config.model.dtype,
            seed=config.seed,
            val_fraction=config.data.val_fraction,
            trust_remote_code=config.model.trust_remote_code,
            data_format=eval_format(config),
            quantization=config.model.quantization,
            prompt_date=config.data.prompt_date,
            thinking=config.model.thinking,
            answer_form=answer_form or training_answer_form(config),
        )

    @classmethod
    def with_config_defaults(cls, model: str, **settings) -> "EvalRequest":
        """A request for `model` with the config's defaults for every setting not given, its
        settings checked as a config's and the eval command's flags are (the checks of a
        caller that has neither)."""
        from mathtune.models.quantize import check_quantization  # it loads torch

        request = replace(cls.from_config(Config(), answer_form=HASH_FORM), model=model, **settings)
        error = sampling_setting_error(request.samples, request.temperature, request.prompt)
        if error:
            raise MathtuneError(error)
        check_quantization(request.quantization, request.model)
        return request

    def model_section(self) -> ModelConfig:
        """The model as a config's model section names it, for load_model: this request's own
        settings, taken as they are (the eval command has checked them; a run's config was
        checked when it was read)."""
        return ModelConfig.model_construct(name_or_path=self.model, dtype=self.dtype,
                                           trust_remote_code=self.trust_remote_code, quantization=self.quantization)

    def identity(self, home: Path | None = None) -> dict:
        """The settings that decide the results, as a summary and a partial file record them. The
        adapter is matched by its content hash; a path inside `home` (the folder the evaluation
        writes into: a run's own adapter/, the probe's variants) is kept relative to it, so a
        run folder copied or moved anywhere still matches its finished evaluations."""
        ident = asdict(self)
        for unrecorded in ("batch_size", "source", "data_identity", "adapter_content", "adapter_settings"):
            ident.pop(unrecorded)
        # At their defaults, as in every record written before these keys existed:
        if not ident["trust_remote_code"]:
            ident.pop("trust_remote_code")
        if self.data_format == GSM8K_FORMAT:
            ident.pop("data_format")
        else:
            ident["data_format"] = self.data_format.as_record()
        if self.answer_form == HASH_FORM:
            ident.pop("answer_form")
        if self.quantization == "none":
            ident.pop("quantization")
        if self.thinking == "auto":
            ident.pop("thinking")
        if self.prompt_date is None:  # not yet settled (see evaluation.resolve.resolve_request)
            ident.pop("prompt_date")
        ident["data"] = portable_path(self.source.location, home)
        if self.adapter is not None:
            ident["adapter"] = portable_path(self.adapter, home)
            ident["adapter_sha256"] = self.adapter_content[1]
        return ident

    def summary_identity(self, home: Path | None = None) -> dict:
        """The request as a summary holds it: what was asked for; the summary's `dtype` is what ran."""
        ident = self.identity(home)
        ident["dtype_requested"] = ident.pop("dtype")
        return ident

    def differing_settings(self, summary: dict, home: Path | None = None) -> list[str]:
        """The settings in which the evaluation a summary records differs from this request ([]: the
        same). A setting either side leaves out is at its default (a 4-bit record does not match a
        full-precision request)."""
        ident = self.summary_identity(home)
        keys = list(ident) + [k for k in IDENTITY_DEFAULTS if k in summary and k not in ident]
        return [k for k in keys if summary.get(k, IDENTITY_DEFAULTS.get(k)) != ident.get(k, IDENTITY_DEFAULTS.get(k))]


def portable_path(value: str, home: Path | None) -> str:
    """A local path inside `home` as a path relative to it (a run folder's own files); anything
    else as given (a hub id, an outside file: the inputs whose identity is where they come from)."""
    if home is None or not os.path.exists(os.path.expanduser(value)):
        return value
    try:
        return Path(os.path.expanduser(value)).resolve().relative_to(Path(home).resolve()).as_posix()
    except ValueError:
        return value


def eval_format(config: Config) -> DataFormat:
    """How the evaluated data reads: eval.fields (else data.fields); data.source's hub config and
    test split name, or for another eval.source its own defaults."""
    fields = config.eval.fields or config.data.fields
    if config.eval.source is None or config.eval.source == config.data.source:
        return DataFormat.of(config.data, fields)
    return DataFormat(question=fields.question, answer=fields.answer, final=fields.final)


def default_name(request: EvalRequest) -> str:
    stem = Path(request.model.rstrip("/")).name.removesuffix(".gguf")
    if request.adapter:
        stem += "+" + Path(request.adapter.rstrip("/")).name
    stem += f"-{request.prompt}"
    if request.samples > 1:
        stem += f"-sc{request.samples}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", stem)


def protocol_text(request: EvalRequest, n: int, data_name: str = "GSM8K") -> str:
    decoding = (
        "greedy"
        if request.samples == 1 and request.temperature == 0
        else f"{request.samples} samples at T={request.temperature}, majority vote"
    )
    # The template's thinking mode decides what the model is asked to do first: said with every chat prompt.
    thinking = f"; template thinking {request.thinking}" if PROMPT_KIND_TABLE.get(request.prompt).chat else ""
    return (
        f"{data_name} {request.split}, {n} problems; prompt {request.prompt} "
        f"({describe_prompt(request.prompt, request.answer_form)}){thinking}; "
        f"{decoding}; max_new_tokens {request.max_new_tokens}; strict = stated final answer after any think block, "
        "flexible = last number; numbers compared as numbers"
    )


def load_problems(request: EvalRequest) -> tuple[list[Problem], PromptBuilder]:
    """The problems to evaluate (the split, cut to `limit`) and the prompt builder; plain5's
    exemplars come from the train split, never from the problems evaluated."""
    entry = PROMPT_KIND_TABLE.get(request.prompt)  # an unknown name: the one-line error, before any data is read
    problems = request.source.split(request.split, val_fraction=request.val_fraction, seed=request.seed)
    if request.limit is not None:
        problems = problems[: request.limit]
    train = None
    if entry.shots_from_train:
        train = request.source.split("train", val_fraction=request.val_fraction, seed=request.seed)
        exclude = {p.question for p in problems}
        train = [p for p in train if p.question not in exclude]
    return problems, make_prompt_builder(request.prompt, train=train, seed=request.seed, date=request.prompt_date,
                                         thinking=request.thinking, answer_form=request.answer_form)
