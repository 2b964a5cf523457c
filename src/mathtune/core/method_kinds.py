"""What each training method is, as the analysis and the report say it: one entry per method,
read back by the name a run's train/summary.json or config records. How a method trains (its
data, its loop, what it saves) is its entry in train.methods, which registers a new method's
entry here too; the table sits in the core because the report, which imports the core alone,
describes the method."""

from __future__ import annotations

from dataclasses import dataclass

from mathtune.core.kinds import KindTable


@dataclass(frozen=True)
class MethodKind:
    description: str  # the report's sentence on what the method trained on
    recipe_section: bool = True  # the report has a section on the method (what it sampled, how its reward moved)
    data_text: str | None = None  # the comparison's "training data / reward" cell where no recipe section fills it
    no_loss_curve: str | None = None  # why the run has no supervised loss curve (None: it has one)


METHOD_KIND_TABLE: KindTable[MethodKind] = KindTable("method")

METHOD_KIND_TABLE.register("sft", MethodKind(
    description="LoRA fine-tuning on the gold solutions (the seed's recipe)", recipe_section=False,
    data_text="gold solutions"))
METHOD_KIND_TABLE.register("rft", MethodKind(
    description="rejection-sampling fine-tuning: the base model sampled solutions to the training problems, the "
                "strictly correct ones (gold where none was) were the LoRA fine-tuning data"))
METHOD_KIND_TABLE.register("grpo", MethodKind(
    description="GRPO (TRL's GRPOTrainer) with a LoRA adapter: completions sampled in groups per prompt, rewarded by "
                "mathtune's strict exact-match scorer, each compared with its group's mean",
    no_loss_curve="method grpo maximises a reward and has no supervised loss curve or validation loss; its reward, KL "
                  "and completion length per step are in the GRPO section"))
