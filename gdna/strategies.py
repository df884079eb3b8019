"""The study's four pretraining strategies (gdna.registry.STRATEGIES): the corpus each pretrains on and
its fine-tuning recipe, with the paper's numbers from gdna.config.

A new strategy is one `STRATEGIES.register(Strategy(...))` naming a registered corpus (gdna.data.corpora).
"""
from __future__ import annotations

from gdna.config import PAPER_FINETUNE_EPOCHS, PAPER_SCRATCH_MAX_EPOCHS, PAPER_SCRATCH_PATIENCE
from gdna.registry import STRATEGIES, Strategy

AFTER_PRETRAINING = {"epochs": PAPER_FINETUNE_EPOCHS}

STRATEGIES.register(Strategy(
    "scratch", corpus=None, recipe={"epochs": PAPER_SCRATCH_MAX_EPOCHS, "patience": PAPER_SCRATCH_PATIENCE},
    describe="from scratch: no pretraining; up to 200 epochs with early stopping"))
STRATEGIES.register(Strategy("hg38", corpus="genome", recipe=AFTER_PRETRAINING,
                             describe="causal LM on the reference genome (FASTA + BED train intervals)"))
STRATEGIES.register(Strategy("task_spt", corpus="task", recipe=AFTER_PRETRAINING,
                             describe="self-pretraining on the task's own training sequences"))
STRATEGIES.register(Strategy("domain_spt", corpus="domain", recipe=AFTER_PRETRAINING,
                             describe="self-pretraining on all the sweep's tasks' training sequences"))
