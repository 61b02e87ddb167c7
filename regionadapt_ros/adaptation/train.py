"""Base training and regional fine-tuning of the perception + decision pair.

Both networks are trained together: perception on its labels (traffic light, lane geometry, obstacle), the
decision network by imitation of the region's expert commands (MSE) on the perception's own features. Labels
may be partial (NaN = not labelled): each loss term only sees the samples that label it, so a dataset that
labels only traffic lights fine-tunes only what those labels reach.

Partial labels also keep what they do not label: when fine-tuning, the parameters that serve only outputs no
sample labels are frozen, and every unlabelled output of every sample is distilled towards the base model's
output on the same input (adaptation/partial_labels.py; ``TrainConfig.freeze_unlabelled``, ``distill``).

Methods (``TrainConfig.method``):
- ``full``: every parameter (base training, or a full fine-tune);
- ``head``: the heads only (perception: tl/lane/obstacle/feature heads; decision: head), backbone frozen;
- ``adapter``: heads + the residual adapters both networks carry;
- ``lora``: heads + LoRA factors on the networks' dense layers (adaptation.lora.LORA_TARGETS).
Whenever the convolutional stems are frozen (every method but ``full``), their outputs are computed once per
sample and augmentation view and cached, which makes fine-tuning several times faster on a CPU.

Everything is seeded per sample (augmentation) and per epoch (batch order), so runs are reproducible, and the
same global batches are formed whatever the number of processes: under ``torchrun`` each rank computes its
share of every global batch and DistributedDataParallel averages the gradients, which gives the same result as
one process up to floating-point summation order.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from regionadapt_ros.adaptation import partial_labels
from regionadapt_ros.adaptation.lora import LORA_TARGETS, LoRALinear, inject_lora, remove_lora
from regionadapt_ros.core.contracts import IMAGE_MEAN, IMAGE_STD, LABELS, OBSTACLE_MAX_M
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.models import decision as decision_mod
from regionadapt_ros.models import perception as perception_mod
from regionadapt_ros.models.registry import build_model, load_named_weights, named_weights

_LOG = logging.getLogger("regionadapt_ros.train")

METHODS = ("full", "head", "adapter", "lora")
L = {name: i for i, name in enumerate(LABELS)}


@dataclass
class TrainConfig:
    method: str = "full"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 3            # epochs without validation improvement before stopping
    augment: bool = True
    aug_views: int = 2           # cached augmentation views per sample when the stems are frozen
    seed: int = 0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    region_dim: int = 0          # > 0: the single global model that gets the region as an input
    balance_tl: bool = True      # weight traffic-light classes by inverse frequency (the metric is macro-F1, and
                                 # yellow is rare)
    tune_norms: bool = False     # also adapt the stems' BatchNorm (affine + statistics): cheap, and what a
                                 # change of imaging conditions (night, glare, another camera) needs most
    # Fine-tuning on partial labels (adaptation/partial_labels.py): freeze the parameters that serve only outputs
    # no sample labels, and distil every unlabelled output towards the base model's (weight relative to the
    # output's task-loss weight). Neither changes anything when every output is labelled.
    freeze_unlabelled: bool = True
    distill: bool = True
    distill_weight: float = 3.0
    progress: bool = True
    loss_weights: dict[str, float] = field(default_factory=lambda: {
        "tl": 1.0, "lane": 1.0, "obstacle": 1.0, "control": 2.0})

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown fine-tuning method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not (math.isfinite(self.distill_weight) and self.distill_weight >= 0):
            raise ValueError(f"distill_weight must be a number >= 0, got {self.distill_weight!r}")


@dataclass
class TrainArrays:
    """Samples in memory. images (N, 96, 160, 3) uint8, bev (N, 3, 64, 64) float16/32, labels (N, len(LABELS))
    float32 with NaN = not labelled, region_ids (N,) int (only used with region_dim > 0)."""

    images: np.ndarray
    bev: np.ndarray
    labels: np.ndarray
    region_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> TrainArrays:
        return TrainArrays(self.images[idx], self.bev[idx], self.labels[idx],
                           None if self.region_ids is None else self.region_ids[idx])

    @staticmethod
    def concat(parts: Sequence[TrainArrays]) -> TrainArrays:
        rid = None
        if all(p.region_ids is not None for p in parts):
            rid = np.concatenate([p.region_ids for p in parts])
        return TrainArrays(np.concatenate([p.images for p in parts]), np.concatenate([p.bev for p in parts]),
                           np.concatenate([p.labels for p in parts]), rid)


# ----------------------------------------------------------------------------------------------- the pair
class DrivingPair(nn.Module):
    """Perception + decision as one trainable module (what DDP wraps)."""

    def __init__(self, region_dim: int = 0) -> None:
        super().__init__()
        self.perception = build_model("perception", region_dim)
        self.decision = build_model("decision", region_dim)
        self.region_dim = region_dim

    def forward(self, image_stem: torch.Tensor, bev_stem: torch.Tensor, speed: torch.Tensor,
                region: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.perception.from_stem_features(image_stem, bev_stem, region)
        out.update(self.decision(out["features"], speed, region))
        return out


def norm_layers(pair: DrivingPair) -> list[str]:
    """Names (in ``pair``) of the BatchNorm layers of the convolutional stems."""
    return [n for n, m in pair.named_modules() if isinstance(m, nn.BatchNorm2d)]


def trainable_parameters(pair: DrivingPair, method: str, tune_norms: bool = False) -> list[str]:
    """Names (in ``pair``) of the parameters a method trains; everything else is frozen."""
    names = []
    norms = tuple(n + "." for n in norm_layers(pair)) if tune_norms else ()
    for name, _ in pair.named_parameters():
        model, _, rest = name.partition(".")
        heads = perception_mod.HEAD_PREFIXES if model == "perception" else decision_mod.HEAD_PREFIXES
        adapters = perception_mod.ADAPTER_PREFIXES if model == "perception" else decision_mod.ADAPTER_PREFIXES
        if (
            method == "full"
            or rest.startswith(heads)
            or (method == "adapter" and rest.startswith(adapters))
            or (method == "lora" and (".lora_A" in rest or ".lora_B" in rest))
            or (norms and name.startswith(norms))
        ):
            names.append(name)
    return names


# ----------------------------------------------------------------------------------------------- losses
def pair_loss(out: dict[str, torch.Tensor], y: torch.Tensor, weights: dict[str, float],
              counts: dict[str, float], tl_class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of the task losses; each term is a sum over the labelled samples divided by ``counts[term]``, the
    number of labelled samples in the GLOBAL batch (so ranks of a distributed run add up exactly)."""
    total = out["control"].new_zeros(())
    tl = y[:, L["tl_state"]]
    m = ~torch.isnan(tl)
    if m.any():
        ce = nn.functional.cross_entropy(out["tl_logits"][m], tl[m].long(), weight=tl_class_weight,
                                         reduction="sum")
        total = total + weights["tl"] * ce / counts["tl"]
    lane_y = y[:, [L["lane_offset"], L["heading_error"], L["curvature"]]]
    lane_scale = lane_y.new_tensor([1.0, 0.05, 0.01])
    m = ~torch.isnan(lane_y)
    if m.any():
        err = nn.functional.smooth_l1_loss(out["lane"][m] / lane_scale.expand_as(lane_y)[m],
                                           lane_y[m] / lane_scale.expand_as(lane_y)[m], reduction="sum")
        total = total + weights["lane"] * err / counts["lane"]
    obs_y = y[:, [L["obstacle_distance"], L["free_space"]]]
    obs_scale = obs_y.new_tensor([OBSTACLE_MAX_M / 6.0, 0.2])
    m = ~torch.isnan(obs_y)
    if m.any():
        err = nn.functional.smooth_l1_loss(out["obstacle"][m] / obs_scale.expand_as(obs_y)[m],
                                           obs_y[m] / obs_scale.expand_as(obs_y)[m], reduction="sum")
        total = total + weights["obstacle"] * err / counts["obstacle"]
    ctl_y = y[:, [L["steering"], L["accel"]]]
    ctl_scale = ctl_y.new_tensor([0.1, 1.0])
    m = ~torch.isnan(ctl_y)
    if m.any():
        diff = (out["control"] - ctl_y) / ctl_scale
        total = total + weights["control"] * (diff[m] ** 2).sum() / counts["control"]
    return total


def tl_class_weights(y: np.ndarray, clip: tuple[float, float] = (0.25, 5.0)) -> torch.Tensor:
    """Inverse-frequency weights of the traffic-light classes in ``y`` (N, len(LABELS)); 1 for absent classes."""
    from regionadapt_ros.core.contracts import TL_CLASSES

    tl = y[:, L["tl_state"]]
    tl = tl[~np.isnan(tl)].astype(int)
    counts = np.bincount(tl, minlength=len(TL_CLASSES)).astype(np.float64)
    present = counts > 0
    w = np.ones(len(TL_CLASSES))
    if present.any():
        w[present] = counts[present].sum() / (present.sum() * counts[present])
    return torch.tensor(np.clip(w, *clip), dtype=torch.float32)


def label_counts(y: np.ndarray) -> dict[str, float]:
    def c(cols: list[str]) -> float:
        return max(1.0, float((~np.isnan(y[:, [L[k] for k in cols]])).sum()))

    return {"tl": c(["tl_state"]), "lane": c(["lane_offset", "heading_error", "curvature"]),
            "obstacle": c(["obstacle_distance", "free_space"]), "control": c(["steering", "accel"])}


# ----------------------------------------------------------------------------------------------- inputs
_MEAN = np.asarray(IMAGE_MEAN, np.float32).reshape(1, 3, 1, 1)
_STD = np.asarray(IMAGE_STD, np.float32).reshape(1, 3, 1, 1)


def augment_images(images: np.ndarray, indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """(B, H, W, 3) uint8 → (B, 3, H, W) float32 normalised, with photometric augmentation seeded per sample
    by (seed, epoch, sample index): brightness, contrast, colour balance, gaussian noise, a small occluding
    patch. No geometric change, because the lane labels are geometric."""
    x = images.astype(np.float32) * (1.0 / 255.0)
    x = np.moveaxis(x, -1, 1)
    for j, idx in enumerate(indices):
        rng = np.random.default_rng([seed, epoch, int(idx)])
        # Mild on purpose: traffic-light state is a colour a few pixels wide, and strong gain or tint shifts
        # turn yellow into green or brown (measured: macro-F1 0.82 with gain 0.6-1.4 and tint ±10 %).
        gain = rng.uniform(0.8, 1.2)
        contrast = rng.uniform(0.85, 1.15)
        tint = rng.uniform(0.96, 1.04, size=(3, 1, 1))
        img = x[j]
        mean = img.mean()
        img = (img - mean) * contrast + mean
        img = img * gain * tint
        img = img + rng.normal(0.0, rng.uniform(0.0, 0.02), img.shape)
        if rng.random() < 0.1:
            h, w = img.shape[1:]
            ph, pw = int(rng.integers(4, h // 6)), int(rng.integers(4, w // 6))
            r0, c0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
            img[:, r0:r0 + ph, c0:c0 + pw] = rng.uniform(0, 1)
        x[j] = np.clip(img, 0.0, 1.0)
    return (x - _MEAN) / _STD


def normalised_images(images: np.ndarray) -> np.ndarray:
    x = np.moveaxis(images.astype(np.float32) * (1.0 / 255.0), -1, 1)
    return (x - _MEAN) / _STD


def one_hot(region_ids: np.ndarray | None, dim: int) -> torch.Tensor | None:
    if not dim:
        return None
    if region_ids is None:
        raise DataError("training data", "the global model needs region ids for every sample")
    return nn.functional.one_hot(torch.from_numpy(region_ids.astype(np.int64)), dim).float()


# ----------------------------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and os.environ.get("REGIONADAPT_DDP_CPU") != "1"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    return Dist(rank, dist.get_world_size(), device)


# ----------------------------------------------------------------------------------------------- training
@dataclass
class BatchInputs:
    """One batch: stem features (B, 3840) and (B, 2048), speed (B, 1), region one-hot or None, labels y
    (B, len(LABELS)); ``image`` (B, 3, H, W) and ``bev`` (B, 3, 64, 64) when the stems were computed from them
    (None when they came from the frozen-stem cache)."""

    image_stem: torch.Tensor
    bev_stem: torch.Tensor
    speed: torch.Tensor
    region: torch.Tensor | None
    y: torch.Tensor
    image: torch.Tensor | None = None
    bev: torch.Tensor | None = None


@dataclass
class TrainResult:
    weights: dict[str, dict[str, np.ndarray]]       # full named weights per model (LoRA merged)
    delta: dict[str, dict[str, np.ndarray]]         # what a delta bundle stores (method-specific)
    kind: str                                        # bundle kind: full | subset | lora
    history: list[dict[str, float]]
    best_epoch: int
    config: dict[str, Any]
    lora: dict[str, Any] | None = None


class Trainer:
    """Trains a DrivingPair on TrainArrays. ``base`` = starting weights per model (None: fresh init)."""

    def __init__(self, config: TrainConfig, base: dict[str, dict[str, np.ndarray]] | None = None,
                 dist: Dist | None = None) -> None:
        config.validate()
        self.cfg = config
        self.dist = dist or Dist()
        torch.manual_seed(config.seed)
        self.pair = DrivingPair(config.region_dim)
        self.teacher: DrivingPair | None = None
        self.fine_tuning = base is not None
        if base is not None:
            load_named_weights(self.pair.perception, base["perception"])
            load_named_weights(self.pair.decision, base["decision"])
            if config.distill:
                # The base model as it was: the teacher of the outputs the region's data does not label.
                self.teacher = copy.deepcopy(self.pair).eval().requires_grad_(False).to(self.dist.device)
        self.base_weights = {"perception": named_weights(self.pair.perception),
                             "decision": named_weights(self.pair.decision)}
        self.lora_wrappers: dict[str, dict[str, LoRALinear]] = {}
        if config.method == "lora":
            gen = torch.Generator().manual_seed(config.seed)
            with torch.random.fork_rng():
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                self.lora_wrappers = {
                    m: inject_lora(getattr(self.pair, m), LORA_TARGETS[m], config.lora_rank, config.lora_alpha)
                    for m in ("perception", "decision")
                }
        train_names = set(trainable_parameters(self.pair, config.method, config.tune_norms))
        for name, p in self.pair.named_parameters():
            p.requires_grad_(name in train_names)
        self.pair.to(self.dist.device)
        self.frozen_stems = config.method != "full" and not config.tune_norms
        self.frozen_prefixes: tuple[str, ...] = ()   # set by fit: what no label of the training data reaches
        self.distilling = False
        self.feature_scale = 1.0

    def trained_names(self) -> list[str]:
        """Names (in the pair) of the parameters this run trains: the method's, less what no label reaches."""
        return [n for n in trainable_parameters(self.pair, self.cfg.method, self.cfg.tune_norms)
                if not n.startswith(self.frozen_prefixes)]

    def _prepare_partial_labels(self, train: TrainArrays) -> None:
        """Freeze what no label reaches and decide whether to distil (fine-tuning only, see module doc)."""
        if self.cfg.freeze_unlabelled and self.fine_tuning:
            self.frozen_prefixes = partial_labels.frozen_parameter_prefixes(train.labels)
            if self.frozen_prefixes:
                _LOG.info("no label reaches %s: frozen", ", ".join(p.rstrip(".") for p in self.frozen_prefixes))
                for name, p in self.pair.named_parameters():
                    if name.startswith(self.frozen_prefixes):
                        p.requires_grad_(False)
        self.distilling = self.teacher is not None and partial_labels.has_unlabelled_cells(train.labels)
        if self.distilling:
            _LOG.info("distilling the unlabelled outputs towards the base model")

    # -- stems
    @torch.no_grad()
    def _stems(self, data: TrainArrays, view: int | None, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Stem features of every sample; ``view`` None = no augmentation, else augmentation view k."""
        p = self.pair.perception
        imgs, bevs = [], []
        for s in range(0, len(data), batch):
            idx = np.arange(s, min(len(data), s + batch))
            if view is None or not self.cfg.augment:
                x = normalised_images(data.images[idx])
            else:
                x = augment_images(data.images[idx], idx, self.cfg.seed + 7919 * (view + 1), 0)
            a, b = p.stem_features(torch.from_numpy(x).to(self.dist.device),
                                   torch.from_numpy(np.asarray(data.bev[idx], np.float32)).to(self.dist.device))
            imgs.append(a)
            bevs.append(b)
        return torch.cat(imgs), torch.cat(bevs)

    def _batch_inputs(self, data: TrainArrays, idx: np.ndarray, epoch: int,
                      cache: tuple[torch.Tensor, torch.Tensor] | None, train: bool) -> BatchInputs:
        dev = self.dist.device
        x = bev = None
        if cache is not None:
            t = torch.from_numpy(idx)
            img_stem, bev_stem = cache[0][t], cache[1][t]
        else:
            if train and self.cfg.augment:
                x_np = augment_images(data.images[idx], idx, self.cfg.seed, epoch)
            else:
                x_np = normalised_images(data.images[idx])
            x = torch.from_numpy(x_np).to(dev)
            bev = torch.from_numpy(np.asarray(data.bev[idx], np.float32)).to(dev)
            img_stem, bev_stem = self.pair.perception.stem_features(x, bev)
        y = torch.from_numpy(data.labels[idx]).to(dev)
        speed = torch.nan_to_num(y[:, L["speed"]:L["speed"] + 1], nan=0.0)
        region = one_hot(None if data.region_ids is None else data.region_ids[idx], self.cfg.region_dim)
        return BatchInputs(img_stem, bev_stem, speed, None if region is None else region.to(dev), y, x, bev)

    @torch.no_grad()
    def _teacher_outputs(self, inputs: BatchInputs) -> dict[str, torch.Tensor]:
        """The base model's outputs on the same (augmented) inputs as the student's."""
        assert self.teacher is not None
        if inputs.image is None:  # frozen stems: the cached stem features are the base's
            stems = inputs.image_stem, inputs.bev_stem
        else:
            stems = self.teacher.perception.stem_features(inputs.image, inputs.bev)
        return self.teacher(*stems, inputs.speed, inputs.region)

    def _loss(self, out: dict[str, torch.Tensor], inputs: BatchInputs, y_global: np.ndarray,
              tl_weight: torch.Tensor | None) -> torch.Tensor:
        loss = pair_loss(out, inputs.y, self.cfg.loss_weights, label_counts(y_global), tl_weight)
        if self.distilling:
            weights = {k: v * self.cfg.distill_weight for k, v in self.cfg.loss_weights.items()}
            loss = loss + partial_labels.distillation_loss(
                out, self._teacher_outputs(inputs), inputs.y, weights, partial_labels.distill_counts(y_global),
                self.feature_scale)
        return loss

    @torch.no_grad()
    def _teacher_feature_scale(self, data: TrainArrays, cache=None) -> float:
        """RMS deviation of the base model's feature vector over ``data``: the unit of feature distillation."""
        feats = []
        for s in range(0, len(data), 256):
            idx = np.arange(s, min(len(data), s + 256))
            inputs = self._batch_inputs(data, idx, 0, cache, train=False)
            feats.append(self._teacher_outputs(inputs)["features"])
        f = torch.cat(feats)
        return max(1e-3, float(f.var(dim=0).mean().sqrt())) if len(f) > 1 else 1.0

    @torch.no_grad()
    def validation_loss(self, data: TrainArrays, cache=None) -> float:
        self.pair.eval()
        idx_all = np.arange(len(data))
        total = 0.0
        for s in range(0, len(data), 256):
            idx = idx_all[s:s + 256]
            inputs = self._batch_inputs(data, idx, 0, cache, train=False)
            out = self.pair(inputs.image_stem, inputs.bev_stem, inputs.speed, inputs.region)
            total += float(self._loss(out, inputs, data.labels, None))
        return total

    def fit(self, train: TrainArrays, val: TrainArrays) -> TrainResult:
        cfg, dist = self.cfg, self.dist
        if len(train) < cfg.batch_size // 4 or len(val) == 0:
            need = (f"at least batch size / 4 = {cfg.batch_size // 4} training samples (--batch-size "
                    f"{cfg.batch_size})" if len(val) else "a validation split")
            raise DataError("training data", f"too few samples to train: {len(train)} train, {len(val)} validation; "
                                             f"training needs {need}")
        self._prepare_partial_labels(train)
        params = [p for p in self.pair.parameters() if p.requires_grad]
        if not params:
            raise DataError("training data", f"nothing to train: method {cfg.method!r} trains only parameters "
                                             "that no label of the data reaches")
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        model: nn.Module = self.pair
        if dist.world > 1:
            if dist.device.type == "cuda" and not self.frozen_stems:
                # batch statistics over the global batch, as one process would compute them
                self.pair = nn.SyncBatchNorm.convert_sync_batchnorm(self.pair)
            # On CPU PyTorch has no SyncBatchNorm: a full fine-tune then normalises each rank's share of the
            # batch by its own statistics, so it matches one process only approximately (methods that keep the
            # stems frozen match exactly).
            model = nn.parallel.DistributedDataParallel(self.pair, find_unused_parameters=False)

        caches: list[tuple[torch.Tensor, torch.Tensor]] = []
        val_cache = None
        if self.frozen_stems:
            views = max(1, cfg.aug_views) if cfg.augment else 1
            caches = [self._stems(train, k if cfg.augment else None) for k in range(views)]
            val_cache = self._stems(val, None)
        if self.distilling:
            self.feature_scale = self._teacher_feature_scale(train, self._stems(train, None) if caches else None)

        tl_weight = tl_class_weights(train.labels).to(dist.device) if cfg.balance_tl else None
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                    pct_start=0.15, anneal_strategy="cos")
        best = (math.inf, -1)
        best_state = copy.deepcopy(self.pair.state_dict())
        history = []
        learned_steps = 0
        bar = _progress(cfg.epochs * steps_per_epoch, f"train ({cfg.method})", cfg.progress and dist.main)
        for epoch in range(cfg.epochs):
            self.pair.train()
            if self.distilling and cfg.method == "full" and not cfg.tune_norms:
                # The running statistics are beyond the distillation's reach: re-estimated on the region's
                # images they would shift every output on the base's home data. The affine parameters train.
                for m in self.pair.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
            cache = caches[epoch % len(caches)] if caches else None
            running = 0.0
            for step in range(steps_per_epoch):
                gidx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                idx = gidx[dist.rank::dist.world]  # this rank's share of the global batch
                inputs = self._batch_inputs(train, idx, epoch, cache, train=True)
                out = model(inputs.image_stem, inputs.bev_stem, inputs.speed, inputs.region)
                loss = self._loss(out, inputs, train.labels[gidx], tl_weight) * dist.world
                if not loss.requires_grad and dist.world == 1:
                    # No sample of this batch has a label any trained output reaches: nothing to learn here.
                    # (Distributed ranks must all step together, so there the step runs.)
                    bar.update(1)
                    continue
                learned_steps += 1
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += float(loss.detach()) / dist.world
                bar.update(1)
            val_loss = self.validation_loss(val, val_cache)
            history.append({"epoch": epoch, "train_loss": running / steps_per_epoch, "val_loss": val_loss})
            bar.set_postfix(val=f"{val_loss:.4f}")
            if val_loss < best[0] - 1e-6:
                best = (val_loss, epoch)
                best_state = copy.deepcopy(self.pair.state_dict())
            elif epoch - best[1] >= cfg.patience:
                _LOG.info("early stop at epoch %d (best %d, val %.4f)", epoch, best[1], best[0])
                break
        bar.close()
        if learned_steps == 0:
            raise DataError("training data", "no sample has a label the trained outputs learn from (every label "
                                             "is NaN, or only speed is set)")
        if best[1] < 0:
            # every validation loss was NaN or inf: what would be written is the weights training started from
            raise DataError("training", f"the loss diverged: no epoch gave a finite validation loss (last "
                                        f"{history[-1]['val_loss']!r}); lower --lr or --weight-decay, or check the "
                                        "data for extreme values")
        self.pair.load_state_dict(best_state)
        return self._result(history, best[1])

    def _result(self, history: list[dict[str, float]], best_epoch: int) -> TrainResult:
        cfg = self.cfg
        delta: dict[str, dict[str, np.ndarray]] = {}
        lora_info = None
        trained = set(self.trained_names())
        if cfg.tune_norms:  # the adapted statistics belong to the delta too
            trained |= {f"{n}.{b}" for n in norm_layers(self.pair) for b in ("running_mean", "running_var")}
        for m in ("perception", "decision"):
            module = getattr(self.pair, m)
            state = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
            prefix = m + "."
            if cfg.method == "lora":
                d = {}
                for path, w in self.lora_wrappers[m].items():
                    if not w.lora_B.requires_grad:  # frozen: no label reaches it, nothing to carry
                        continue
                    d[f"{path}.weight.lora_A"] = w.lora_A.detach().cpu().numpy().copy()
                    d[f"{path}.weight.lora_B"] = w.lora_B.detach().cpu().numpy().copy()
                for name in trained:
                    if name.startswith(prefix) and ".lora_" not in name:
                        if ".base." in name:
                            raise RuntimeError(f"{name}: a LoRA-wrapped layer must not also be trained as a head")
                        d[name[len(prefix):]] = state[name[len(prefix):]]
                delta[m] = d
                lora_info = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha}
            else:
                delta[m] = {n[len(prefix):]: state[n[len(prefix):]] for n in trained if n.startswith(prefix)}
        if cfg.method == "lora":
            for m in ("perception", "decision"):
                remove_lora(getattr(self.pair, m), self.lora_wrappers[m])
            self.lora_wrappers = {}
        weights = {"perception": named_weights(self.pair.perception), "decision": named_weights(self.pair.decision)}
        kind = {"full": "full", "head": "subset", "adapter": "subset", "lora": "lora"}[cfg.method]
        if kind == "full":
            delta = weights
        return TrainResult(weights, delta, kind, history, best_epoch, asdict(cfg), lora_info)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
