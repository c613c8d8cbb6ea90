"""Stage 1, ``detect``: find the digits of a strip and cut the crops that feed the classifier.

- ``det_cc``: blur, threshold, clean up, connected components, split blobs too wide for one digit. No
  weights; only the threshold is chosen, on calibration strips.
- ``det_fcn_s/m/l``: a CenterNet-style fully convolutional net at stride 4: a centre heat-map plus the
  centre's sub-cell offset and the box's size. Decoding (peaks of the heat-map) is part of ``predict``.

Every detector returns, per strip, its boxes left to right and one 28x28 crop per box: exactly what the
classifier stage receives, so a detector's misses, extra boxes and off-centre crops reach stage 2.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from ipa_tasks.demo_pipelines import Log
from ipa_tasks.demo_pipelines.digit_strips.boxes import Box, crop_boxes, exact_detection_rate
from ipa_tasks.demo_pipelines.digit_strips.scenes import SceneSet
from ipa_tasks.demo_pipelines.digit_strips.training import fit, load_weights, parameter_count, save_weights

STRIDE = 4
SIZE_UNIT = 20.0
"""Box sizes are regressed in units of MNIST's 20-pixel ink box, so targets are near 1."""
WEIGHTS_FILE = "model.pt"
SETTINGS_FILE = "detector.json"


@dataclass(frozen=True, eq=False)
class Detections:
    """One strip's detections: boxes left to right and the (k, 28, 28) crops cut around them."""

    boxes: tuple[Box, ...]
    crops: np.ndarray


def as_strips(items: Sequence[Any]) -> np.ndarray:
    if isinstance(items, np.ndarray) and items.ndim == 3 and items.dtype == np.float32:
        return items
    return np.stack([np.asarray(item, dtype=np.float32) for item in items])


def detection_accuracy(predictions: Sequence[Detections], labels: Sequence[Sequence[Box]]) -> float:
    """Fraction of strips detected exactly: every true centre matched, nothing extra."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} strips")
    if not labels:
        raise ValueError("no strips to score")
    return exact_detection_rate([p.boxes for p in predictions], labels)


class _Detector:
    """What both detector kinds share: cropping, held-out strips and scoring."""

    def __init__(self, validation: SceneSet) -> None:
        self.validation = validation

    def find_boxes(self, strips: np.ndarray) -> list[tuple[Box, ...]]:
        raise NotImplementedError

    def predict(self, items: Sequence[Any]) -> list[Detections]:
        strips = as_strips(items)
        boxes = self.find_boxes(strips)
        crops = crop_boxes(strips, boxes)
        return [Detections(b, c) for b, c in zip(boxes, crops, strict=True)]

    def held_out(self) -> tuple[Sequence[Any], Sequence[Any]]:
        return self.validation.strips, self.validation.boxes

    def score(self, predictions: Sequence[Any], labels: Sequence[Any]) -> float:
        return detection_accuracy(predictions, labels)


# --- det_cc -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentSettings:
    """Hand-set by looking at training strips, except the threshold (:func:`build_component_detector`)."""

    threshold: float = 0.32
    min_area: int = 25
    min_height: int = 9
    max_aspect: float = 1.15
    """A blob wider than this x its height is taken for touching digits and cut into equal pieces."""
    piece_aspect: float = 0.75


BINOMIAL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def _smooth(strips: np.ndarray) -> np.ndarray:
    """Separable binomial [1, 4, 6, 4, 1] / 16 blur (about a Gaussian of sigma 1) along both image axes,
    as sums of shifted slices: several times faster than scipy's filters on a batch of small strips."""
    height, width = strips.shape[1:]
    padded = np.pad(strips, ((0, 0), (2, 2), (0, 0)), mode="edge")
    rows = sum(w * padded[:, k : k + height, :] for k, w in enumerate(BINOMIAL))
    padded = np.pad(rows, ((0, 0), (0, 0), (2, 2)), mode="edge")
    return sum(w * padded[:, :, k : k + width] for k, w in enumerate(BINOMIAL))


def _open(mask: np.ndarray) -> np.ndarray:
    """Binary opening with a 2x2 square per strip: removes specks and one-pixel noise and bridges."""
    eroded = np.zeros_like(mask)
    eroded[:, :-1, :-1] = mask[:, :-1, :-1] & mask[:, 1:, :-1] & mask[:, :-1, 1:] & mask[:, 1:, 1:]
    opened = eroded.copy()
    opened[:, 1:, :] |= eroded[:, :-1, :]
    opened[:, :, 1:] |= eroded[:, :, :-1]
    opened[:, 1:, 1:] |= eroded[:, :-1, :-1]
    return opened


class ComponentDetector(_Detector):
    def __init__(self, settings: ComponentSettings, validation: SceneSet) -> None:
        super().__init__(validation)
        self.settings = settings
        # The whole batch is labelled as one 3-D array; this connectivity never reaches across strips.
        self._connectivity = np.zeros((3, 3, 3), dtype=bool)
        self._connectivity[1] = ndimage.generate_binary_structure(2, 1)

    def find_boxes(self, strips: np.ndarray) -> list[tuple[Box, ...]]:
        s = self.settings
        mask = _open(_smooth(strips) > s.threshold)
        labels, count = ndimage.label(mask, structure=self._connectivity)
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        per_strip: list[list[Box]] = [[] for _ in range(len(strips))]
        for index, found in enumerate(ndimage.find_objects(labels), start=1):
            if found is None:
                continue
            strip, ys, xs = found
            height, width = ys.stop - ys.start, xs.stop - xs.start
            if height < s.min_height or areas[index] < s.min_area:
                continue
            pieces = round(width / (s.piece_aspect * height)) if width > s.max_aspect * height else 1
            pieces = max(pieces, 1)
            step = width / pieces
            for k in range(pieces):
                x0 = xs.start + k * step
                per_strip[strip.start].append(
                    Box(float(x0), float(ys.start), float(x0 + step), float(ys.stop))
                )
        return [tuple(sorted(boxes, key=lambda b: b.cx)) for boxes in per_strip]


CC_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.24, 0.45, 0.02))


def build_component_detector(
    calibration: SceneSet, directory: Path, log: Log
) -> dict[str, str | int | float]:
    """Nothing is learned but the binarisation threshold, chosen like the nets' peak threshold: the best
    exact-detection rate on fresh strips of training digits."""
    rates = {}
    for threshold in CC_THRESHOLDS:
        detector = ComponentDetector(ComponentSettings(threshold=threshold), calibration)
        rates[threshold] = detection_accuracy(detector.predict(calibration.strips), calibration.boxes)
    threshold = max(CC_THRESHOLDS, key=lambda t: rates[t])
    log(
        f"det_cc: threshold {threshold} (exact detection {rates[threshold]:.3f} on {len(calibration)} strips)"
    )
    settings = ComponentSettings(threshold=threshold)
    (directory / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2))
    return {"parameters": 0, "threshold": threshold, "calibration_strips": len(calibration)}


def load_component_detector(directory: Path, validation: SceneSet) -> ComponentDetector:
    settings = ComponentSettings(**json.loads((directory / SETTINGS_FILE).read_text()))
    return ComponentDetector(settings, validation)


# --- det_fcn_* ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FcnShape:
    layers: tuple[tuple[int, int, int], ...]
    """(out channels, stride, dilation) of each 3x3 conv + batch norm + ReLU; the strides multiply to 4."""
    epochs: int
    learning_rate: float = 3e-3
    batch_size: int = 32


FCN_SHAPES = {
    "det_fcn_s": FcnShape(layers=((8, 2, 1), (16, 2, 1), (16, 1, 1), (16, 1, 2)), epochs=6),
    "det_fcn_m": FcnShape(layers=((12, 2, 1), (24, 2, 1), (24, 1, 1), (24, 1, 2), (24, 1, 4)), epochs=6),
    "det_fcn_l": FcnShape(
        layers=((16, 2, 1), (32, 2, 1), (32, 1, 1), (32, 1, 2), (32, 1, 4), (32, 1, 2)), epochs=8
    ),
}
HEAD_CHANNELS = 5
"""Centre logit, x and y offset within the cell, box width and height (in :data:`SIZE_UNIT`)."""
PEAK_THRESHOLD = 0.35
"""Until calibrated on the calibration strips (:func:`calibrate_threshold`)."""
HEAT_SIGMA = 0.8
"""Of the Gaussian around each true centre in the heat-map target, in cells."""


class CenterNet(nn.Module):
    def __init__(self, shape: FcnShape) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for out, stride, dilation in shape.layers:
            layers += [
                nn.Conv2d(channels, out, 3, stride, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
            ]
            channels = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, HEAD_CHANNELS, 1)
        # Start the heat-map near 1% everywhere, as CenterNet does, so the first steps are not spent
        # unlearning a 50% prior over a map that is almost all background.
        nn.init.constant_(self.head.bias, 0.0)
        with torch.no_grad():
            self.head.bias[0] = -4.6

    def forward(self, strips: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(strips.contiguous(memory_format=torch.channels_last)))


def new_centernet(shape: FcnShape) -> CenterNet:
    # Channels-last runs these small convolutions (and their batch norms) markedly faster on CPU, in
    # training and in predict.
    return CenterNet(shape).to(memory_format=torch.channels_last)


def fcn_targets(scenes: SceneSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heat-map (n, h, w), regression targets (n, 4, h, w) and the mask of cells that hold a centre."""
    n, height, width = scenes.strips.shape
    h, w = height // STRIDE, width // STRIDE
    heat = np.zeros((n, h, w), dtype=np.float32)
    regression = np.zeros((n, 4, h, w), dtype=np.float32)
    mask = np.zeros((n, h, w), dtype=bool)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i, boxes in enumerate(scenes.boxes):
        for box in boxes:
            gx, gy = box.cx / STRIDE, box.cy / STRIDE
            cx, cy = min(int(gx), w - 1), min(int(gy), h - 1)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * HEAT_SIGMA**2))
            np.maximum(heat[i], blob, out=heat[i])
            regression[i, :, cy, cx] = (
                gx - cx,
                gy - cy,
                (box.x1 - box.x0) / SIZE_UNIT,
                (box.y1 - box.y0) / SIZE_UNIT,
            )
            mask[i, cy, cx] = True
    return torch.from_numpy(heat), torch.from_numpy(regression), torch.from_numpy(mask)


def centernet_loss(
    model: nn.Module, strips: torch.Tensor, heat: torch.Tensor, regression: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the heat-map plus L1 on offsets and sizes at centres."""
    out = model(strips[:, None])
    logits = out[:, 0]
    p = torch.sigmoid(logits)
    positive = heat >= 0.999
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    focal = torch.where(positive, -((1 - p) ** 2) * log_p, -((1 - heat) ** 4) * (p**2) * log_not_p).sum()
    centres = mask.sum().clamp(min=1)
    predicted = out[:, 1:].permute(0, 2, 3, 1)[mask]
    regression_loss = (predicted - regression.permute(0, 2, 3, 1)[mask]).abs().sum()
    return (focal + regression_loss) / centres


class FcnDetector(_Detector):
    def __init__(self, model: CenterNet, threshold: float, validation: SceneSet) -> None:
        super().__init__(validation)
        self.model = model.eval()
        self.threshold = threshold

    def find_boxes(self, strips: np.ndarray) -> list[tuple[Box, ...]]:
        return self.decode(self.heads(strips), self.threshold)

    def heads(self, strips: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(torch.from_numpy(strips)[:, None])

    @staticmethod
    def decode(out: torch.Tensor, threshold: float) -> list[tuple[Box, ...]]:
        """Boxes at the local maxima (3x3) of the heat-map above ``threshold``, left to right."""
        with torch.inference_mode():
            heat = torch.sigmoid(out[:, 0])
            peaks = (heat == F.max_pool2d(heat[:, None], 3, 1, 1)[:, 0]) & (heat > threshold)
            strip, cy, cx = peaks.nonzero(as_tuple=True)
            values = out[strip, 1:, cy, cx].numpy()
        centre_x = (cx.numpy() + values[:, 0]) * STRIDE
        centre_y = (cy.numpy() + values[:, 1]) * STRIDE
        half_w = np.maximum(values[:, 2], 0.1) * SIZE_UNIT / 2
        half_h = np.maximum(values[:, 3], 0.1) * SIZE_UNIT / 2
        per_strip: list[list[Box]] = [[] for _ in range(len(out))]
        for i, x, y, hw, hh in zip(strip.tolist(), centre_x, centre_y, half_w, half_h, strict=True):
            per_strip[i].append(Box(float(x - hw), float(y - hh), float(x + hw), float(y + hh)))
        return [tuple(sorted(boxes, key=lambda b: b.cx)) for boxes in per_strip]


THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.2, 0.65, 0.05))


def calibrate_threshold(model: CenterNet, scenes: SceneSet) -> tuple[float, float]:
    """The peak threshold with the best exact-detection rate on ``scenes``, and that rate. The scenes are
    fresh strips of training digits: the validation strips stay unseen, and the training strips would
    favour the confident thresholds the net only reaches on what it was fitted to."""
    out = FcnDetector(model, PEAK_THRESHOLD, scenes).heads(scenes.strips)
    rates = {}
    for threshold in THRESHOLDS:
        rates[threshold] = exact_detection_rate(FcnDetector.decode(out, threshold), scenes.boxes)
    best = max(THRESHOLDS, key=lambda t: rates[t])
    return best, rates[best]


def build_fcn_detector(
    variant: str, train: SceneSet, calibration: SceneSet, directory: Path, seed: int, log: Log
) -> dict[str, str | int | float]:
    shape = FCN_SHAPES[variant]
    torch.manual_seed(seed)
    model = new_centernet(shape)
    heat, regression, mask = fcn_targets(train)
    losses = fit(
        model,
        centernet_loss,
        (torch.from_numpy(train.strips), heat, regression, mask),
        epochs=shape.epochs,
        batch_size=shape.batch_size,
        learning_rate=shape.learning_rate,
        seed=seed,
        log=log,
        name=variant,
    )
    save_weights(model, directory / WEIGHTS_FILE)
    threshold, rate = calibrate_threshold(model, calibration)
    log(f"{variant}: peak threshold {threshold} (exact detection {rate:.3f} on {len(calibration)} strips)")
    (directory / SETTINGS_FILE).write_text(json.dumps({"threshold": threshold}))
    return {
        "parameters": parameter_count(model),
        "peak_threshold": threshold,
        "epochs": shape.epochs,
        "training_strips": len(train),
        "calibration_strips": len(calibration),
        "layers": len(shape.layers),
        "final_loss": round(losses[-1], 5),
    }


def load_fcn_detector(variant: str, directory: Path, validation: SceneSet) -> FcnDetector:
    model = load_weights(new_centernet(FCN_SHAPES[variant]), directory / WEIGHTS_FILE)
    threshold = float(json.loads((directory / SETTINGS_FILE).read_text())["threshold"])
    return FcnDetector(model, threshold, validation)
