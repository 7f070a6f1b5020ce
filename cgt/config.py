"""Training configuration, the methods compared, and the named profiles (smoke / quick / paper).

A *method* is a named exit-weighting strategy with its options (cgt.losses). A *profile* is a
named set of data and training values: `smoke` runs each notebook in seconds (tests), `quick`
shows the methods differ in minutes, `paper` is the full reproduction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .data import DataConfig


@dataclass
class TrainConfig:
    """How one early-exit network is trained."""

    epochs: int = 10
    """Passes over the training set."""
    batch_size: int = 128
    """Samples per optimiser step."""
    lr: float = 2e-3
    """AdamW peak learning rate (cosine-annealed to 0 over the epochs)."""
    weight_decay: float = 1e-4
    """AdamW decoupled weight decay."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing (the authors use 0.1 on CIFAR-100; 0 keeps confidences honest
    for the max-softmax exit policy)."""
    seed: int = 0
    """Seeds model initialisation and the per-epoch shuffling."""
    optimizer: str = "adamw"
    """'adamw', or 'sgd' (momentum 0.9) as in most CIFAR/ImageNet early-exit code."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu' or 'cuda[:N]'."""
    precision: str = "fp32"
    """'fp32', or 'bf16' autocast (CUDA only; off for the paper profile so numbers stay comparable)."""
    eval_batch_size: int = 2048
    """Batch size for validation/test logits (no gradients, so larger is fine)."""

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr={self.lr} must be > 0 and weight_decay={self.weight_decay} >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device={self.device!r}; valid choices: 'auto', 'cpu', 'cuda', 'cuda:N'")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer={self.optimizer!r}; valid choices: ['adamw', 'sgd']")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={self.precision!r}; valid choices: ['fp32', 'bf16']")


# name → (strategy, options). Baselines first, then the paper's two methods.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "last_exit": ("last_exit", {}),
    "joint_uniform": ("joint_uniform", {}),
    "joint_depth": ("joint_depth", {}),
    "joint_annealed": ("joint_annealed", {}),
    "branchy_gate": ("branchy_gate", {}),
    "hard_cgt": ("hard_cgt", {}),
    "soft_cgt": ("soft_cgt", {}),                          # authors' sigmoid residual, k = 1
    "soft_cgt_linear": ("soft_cgt", {"residual": "linear"}),  # r = 1 − s, the plain residual
}
BASELINES = ["last_exit", "joint_uniform", "joint_depth", "joint_annealed", "branchy_gate"]


def method_spec(method: str, **extra_options: Any) -> tuple[str, dict[str, Any]]:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid choices: {list(METHODS)}")
    strategy, options = METHODS[method]
    return strategy, options | extra_options


@dataclass
class Profile:
    name: str
    seeds: list[int]
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    """dataset → DataConfig overrides."""
    train: dict[str, dict[str, Any]] = field(default_factory=dict)
    """dataset → TrainConfig overrides."""
    other_data: dict[str, Any] = field(default_factory=dict)
    """DataConfig overrides for datasets of your own (not in `data`)."""
    other_train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig overrides for datasets of your own (not in `train`)."""


DATASETS = ["fashion_mnist", "indian_pines"]

PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", seeds=[0],
                     data={"fashion_mnist": {"max_train": 1500, "max_eval": 500},
                           "indian_pines": {"max_train": 600, "max_eval": 600}},
                     train={"fashion_mnist": {"epochs": 1}, "indian_pines": {"epochs": 2}},
                     other_data={"max_train": 1000, "max_eval": 300}, other_train={"epochs": 2}),
    "quick": Profile("quick", seeds=[0],
                     data={"fashion_mnist": {"max_train": 15000, "max_eval": 3000}, "indian_pines": {}},
                     train={"fashion_mnist": {"epochs": 3}, "indian_pines": {"epochs": 15}},
                     other_train={"epochs": 15}),
    "paper": Profile("paper", seeds=[0, 1, 2],
                     data={"fashion_mnist": {}, "indian_pines": {}},
                     train={"fashion_mnist": {"epochs": 8}, "indian_pines": {"epochs": 30}},
                     other_train={"epochs": 30}),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid choices: {list(PROFILES)}")
    return PROFILES[name]


def profile_configs(profile: str, dataset: str, data_dir: str = "data/raw", **data_overrides: Any
                    ) -> tuple[DataConfig, TrainConfig]:
    """The DataConfig and TrainConfig of `dataset` under `profile` (seed set per run)."""
    prof = get_profile(profile)
    data_cfg = DataConfig(dataset=dataset, data_dir=data_dir, **(prof.data.get(dataset, prof.other_data) | data_overrides))
    data_cfg.validate()
    train_cfg = TrainConfig(**prof.train.get(dataset, prof.other_train))
    return data_cfg, train_cfg

