"""The door of an evaluation: a request's open settings settled once, before it runs.

    request = resolve_request(EvalRequest.from_config(config), EvalPaths.for_name(run_dir, "base"))
    summary = evaluate(request, run_dir, "base")

What the command line or the config leaves open is settled here, and nothing below reads it
again: the answer form and thinking mode a run's adapter was trained with, the day its prompts
are dated (config.settled_prompt_date), and the data: fetchable from here, and its identity
(path and sha256, or hub id and revision) as the summary records it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mathtune.config import saved_config, settled_prompt_date
from mathtune.core.errors import MathtuneError
from mathtune.core.provenance import describe_adapter
from mathtune.core.runfiles import read_json
from mathtune.evaluation.request import EvalRequest, default_name
from mathtune.task.answers import HASH_FORM
from mathtune.task.train_summary import read_train_summary

if TYPE_CHECKING:  # evaluation.records loads torch; `mathtune --help` and the plan do not
    from mathtune.evaluation.records import EvalPaths


def resolve_request(request: EvalRequest, paths: EvalPaths | None = None) -> EvalRequest:
    """The request with everything it leaves open settled (a settled one is returned as it is).
    The prompt date: as given, else the date the finished or partial records under `paths` were
    made with (a rerun or a resume on another day renders the same prompts), else, for a run's
    adapter, the date that run trained and evaluated with, else today (UTC)."""
    if request.data_identity is not None:
        return request
    run = adapter_run(request.adapter) if request.adapter else None
    saved = saved_config(run) if run is not None else None
    date = _prompt_date(request, paths, saved.data.prompt_date if saved is not None else None)
    source = request.source.checked()
    identity = source.identity(request.split)
    return replace(request, prompt_date=date, answer_form=_answer_form(request, run),
                   thinking=request.thinking or (saved.model.thinking if saved is not None else None) or "auto",
                   source=source, data_identity=identity, adapter_settings=_adapter_settings(request.adapter))


def _adapter_settings(adapter: str | None) -> dict | None:
    """What the adapter is (variant, rank, modules), once its folder has been found to hold a
    readable, finite adapter: before any model loads."""
    if adapter is None:
        return None
    from mathtune.models.load import check_adapter_folder  # it loads torch

    check_adapter_folder(adapter)
    return describe_adapter(adapter)


def _prompt_date(request: EvalRequest, paths: EvalPaths | None, run_date: str | None) -> str | None:
    """The date an evaluation's finished summary, else its partial records, were made with (None
    for records made before prompts were dated, rendered as they were), else settled_prompt_date."""
    for made in (paths.summary, paths.partial_meta) if paths is not None and request.prompt_date is None else ():
        if made.is_file():
            try:
                return read_json(made).get("prompt_date")
            except (OSError, ValueError):
                break
    return settled_prompt_date(request.prompt_date, run_date)


def _answer_form(request: EvalRequest, run: Path | None) -> str:
    """A run's adapter evaluated on its own (`mathtune eval --adapter RUN/adapter`) is asked for
    the answer form its training data used (train/summary.json's prompt_answer_form), as the
    run's own evaluation asked; any other request as given."""
    summary = run / "train" / "summary.json" if run is not None else None
    if request.answer_form != HASH_FORM or summary is None or not summary.is_file():
        return request.answer_form
    try:
        return read_train_summary(summary).prompt_answer_form or request.answer_form
    except MathtuneError:  # a damaged summary: the run's own check names it; this request stays as given
        return request.answer_form


def adapter_run(adapter: str) -> Path | None:
    """The mathtune run folder an adapter folder belongs to (RUN/adapter, or a checkpoint under
    RUN/train/checkpoints); None for an adapter from elsewhere."""
    folder = Path(adapter).resolve()
    for run in (folder.parent, *folder.parents[1:4]):
        if (run / "config.yaml").is_file() and (run / "train").is_dir():
            return run
    return None


def settled(request: EvalRequest, out_dir: Path, name: str | None = None) -> EvalRequest:
    """resolve_request for the evaluation `evaluate(request, out_dir, name)` writes (OUT/eval/NAME.*):
    the door for a caller of the Python API."""
    from mathtune.evaluation.records import EvalPaths

    return resolve_request(request, EvalPaths.for_name(out_dir, name or default_name(request)))
