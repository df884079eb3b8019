"""Typed configs: strict parsing with one-line errors naming the key, stable identities."""
import dataclasses

import pytest

from gdna.config import (
    PAPER_FINETUNE_EPOCHS,
    PAPER_SCRATCH_MAX_EPOCHS,
    DataConfig,
    ModelConfig,
    ResourcesConfig,
    TrialConfig,
    TrainConfig,
    config_hash,
    finetune_recipe,
    flatten,
    from_dict,
)
from gdna.errors import ConfigError


def test_round_trip_and_identity_stable():
    t = TrialConfig(model=ModelConfig(arch="mamba", d_model=64), data=DataConfig(task="human_enhancers_cohn"))
    again = TrialConfig.from_dict(t.to_dict())
    assert again == t
    assert again.identity() == t.identity()
    # data_root is where the data lives, not what the trial is
    moved = dataclasses.replace(t, data=dataclasses.replace(t.data, data_root="/elsewhere"))
    assert moved.identity() == t.identity()
    other_lr = dataclasses.replace(t, train=dataclasses.replace(t.train, lr=3e-4))
    assert other_lr.identity() != t.identity()


def test_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})


@pytest.mark.parametrize(
    "d, key",
    [
        ({"model": {"arhc": "mamba"}}, "model.arhc"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"batch_size": 12.5}}, "train.batch_size"),
        ({"data": {"domain_tasks": "human_ocr_ensembl"}}, "data.domain_tasks"),
        ({"model": "transformer"}, "model"),
    ],
)
def test_strict_parse_names_the_key(d, key):
    with pytest.raises(ConfigError) as e:
        TrialConfig.from_dict(d)
    msg = str(e.value)
    assert msg.startswith(key + ":") and "\n" not in msg


def test_yaml_style_scientific_strings_are_numbers():
    t = from_dict(TrainConfig, {"lr": "1e-4", "betas": [0.9, 0.95]})
    assert t.lr == 1e-4 and t.betas == (0.9, 0.95)


@pytest.mark.parametrize(
    "cfg, key",
    [
        (ModelConfig(arch="mambo"), "model.arch"),
        (ModelConfig(arch="transformer", d_model=100), "model.d_model"),
        (TrainConfig(lr=0.0), "train.lr"),
        (TrainConfig(objective="mlm"), "train.objective"),
        (DataConfig(fold=5), "data.fold"),
        (ResourcesConfig(cpus_per_worker=0), "resources.cpus_per_worker"),
    ],
)
def test_validation_names_the_key(cfg, key):
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ":"):
        cfg.validate()


def test_classification_trial_needs_a_task():
    with pytest.raises(ConfigError, match="^data.task:"):
        TrialConfig(model=ModelConfig(arch="hyena")).validate()


def test_paper_recipe():
    assert finetune_recipe("scratch").epochs == PAPER_SCRATCH_MAX_EPOCHS
    assert finetune_recipe("scratch").patience is not None
    assert finetune_recipe("hg38").epochs == PAPER_FINETUNE_EPOCHS
    assert finetune_recipe("task_spt", lr=3e-4).lr == 3e-4
    t = TrainConfig()
    assert (t.weight_decay, t.warmup_frac, t.min_lr) == (0.1, 0.1, 1e-6)


def test_flatten():
    assert flatten({"train": {"lr": 1e-3}, "x": 1}) == {"train.lr": 1e-3, "x": 1}


def test_the_paper_grid_file_is_the_paper_numbers_of_config():
    """search_spaces/paper_grid.yaml and sweeps/paper_table1.yaml say what gdna.config defines, nowhere else."""
    import yaml

    from gdna.config import (PAPER_BATCH_SIZES, PAPER_LRS, PAPER_N_LAYERS, PAPER_PARAM_BUDGET, PAPER_PRETRAIN_STEPS,
                             PAPER_SEEDS)
    from gdna.sweep.spec import REPO_ROOT, load_search_space, load_spec

    grid = load_search_space("paper_grid")
    assert tuple(grid.axes()["train.lr"]) == PAPER_LRS
    assert tuple(grid.axes()["train.batch_size"]) == PAPER_BATCH_SIZES
    assert tuple(grid.seeds) == PAPER_SEEDS and grid.folds == "paired"
    spec = load_spec(REPO_ROOT / "sweeps" / "paper_table1.yaml", check_data=False)
    model = next(iter(spec.overrides.models.values()))
    assert (model.n_layers, model.param_budget, model.d_model) == (PAPER_N_LAYERS, PAPER_PARAM_BUDGET, None)
    assert spec.pretrain.steps == PAPER_PRETRAIN_STEPS
    raw = yaml.safe_load((REPO_ROOT / "sweeps" / "paper_table1.yaml").read_text())
    assert not set(raw.get("train", {})) & {"epochs", "patience", "weight_decay", "warmup_frac", "min_lr"}, \
        "the recipe comes from gdna.config / gdna.strategies, not from the sweep file"
