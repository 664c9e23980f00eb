"""Click to segment, like SAM's web demo: show an image, click on an object, see its mask (Lab 3).

A left click adds a foreground point (label 1); a click with the toggle on "background", a shift-click or a right
click adds a background point (label 0). The mask overlay and the predicted IoU update after every click; buttons undo
the last point or reset. The state lives in :class:`ClickToSegment` (``points``, ``labels``, ``mask``, ``score``) and
its methods (``click``, ``undo``, ``reset``, ``overlay``) run without a browser; ``widget`` builds the ipywidgets
box to display. Clicks on an image reach Python through ``ipyevents`` (ipywidgets alone cannot report where an
image was clicked); on Colab, third-party widgets need ``google.colab.output.enable_custom_widget_manager()``, which
``widget`` calls.

The segmenter is any callable ``segment(points_xy (N, 2) float, labels (N,) int) -> (mask (H, W) bool, score)``.
:func:`predictor_segmenter` drives a ``segment_anything.SamPredictor``, :func:`model_segmenter` the course's
:class:`helpers.sam.Sam` directly. Both refine as SAM's interactive use does (Kirillov et al., 2023, §3 and
appendix A): the first click asks for three masks (``multimask_output=True``; one click is ambiguous) and keeps the
one with the highest predicted IoU; each later click sends all the points so far plus the previous round's
low-resolution logits as the mask prompt, for one mask. Rounds are cached by their points, so undoing a click gives
back the earlier mask exactly.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from helpers.sam.transforms import prepare_image, transform_coords

if TYPE_CHECKING:
    import ipywidgets

    from helpers.sam.model import Sam

Segmenter = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]
MASK_COLOUR = np.array([30, 144, 255])  # the blue of segment_anything's notebooks
POINT_COLOURS = {1: (40, 200, 60), 0: (230, 40, 40)}  # foreground green, background red
DISPLAY_SIZE = 512  # default displayed long side, in screen pixels


# ----------------------------------------------------------------------------------------------------------------
# Segmenters: SAM's interactive refinement, one round per click


class _Refinement:
    """Turns a one-round ``step`` into a segmenter of the whole click sequence, with rounds cached by their points.

    ``step(points (N, 2), labels (N,), mask_input (1, h, w) or None, multimask) -> (masks (C, H, W) bool,
    scores (C,), low_res_logits (C, h, w))``."""

    def __init__(self, step: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.step = step
        self.rounds: list[tuple[tuple[float, float, int], np.ndarray, float, np.ndarray]] = []

    def __call__(self, points_xy: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
        points_xy, labels = _check_prompts(points_xy, labels)
        clicks = [(float(x), float(y), int(label)) for (x, y), label in zip(points_xy, labels, strict=True)]
        kept = 0
        while kept < min(len(clicks), len(self.rounds)) and self.rounds[kept][0] == clicks[kept]:
            kept += 1
        del self.rounds[kept:]
        for n in range(kept, len(clicks)):
            first = n == 0
            mask_input = None if first else self.rounds[-1][3][None]
            masks, scores, logits = self.step(points_xy[: n + 1], labels[: n + 1], mask_input, first)
            best = int(np.argmax(scores)) if first else 0
            self.rounds.append((clicks[n], np.asarray(masks[best], dtype=bool), float(scores[best]), logits[best]))
        return self.rounds[-1][1], self.rounds[-1][2]


def _check_prompts(points_xy: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    points_xy, labels = np.asarray(points_xy, dtype=float), np.asarray(labels)
    if points_xy.ndim != 2 or points_xy.shape[1] != 2 or len(points_xy) == 0 or labels.shape != (len(points_xy),):
        raise ValueError(f"expected points_xy (N, 2) as (x, y) with N ≥ 1 and labels (N,), "
                         f"got {points_xy.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 1 (foreground) or 0 (background), got {labels.tolist()}")
    return points_xy, labels.astype(np.int64)


def predictor_segmenter(predictor: Any) -> Segmenter:
    """A segmenter for :class:`ClickToSegment` from a ``segment_anything.SamPredictor`` whose ``set_image`` was
    called: first click → ``multimask_output=True`` and the mask with the highest predicted IoU; later clicks →
    every point, the previous best low-resolution logits as ``mask_input``, ``multimask_output=False``."""
    if not getattr(predictor, "is_image_set", False):
        raise ValueError("predictor: call predictor.set_image(image) before making a segmenter of it")

    def step(points, labels, mask_input, multimask):
        return predictor.predict(point_coords=points, point_labels=labels, mask_input=mask_input,
                                 multimask_output=multimask)

    return _Refinement(step)


def model_segmenter(model: Sam, image: np.ndarray) -> Segmenter:
    """The same segmenter as :func:`predictor_segmenter`, driving the course's :class:`helpers.sam.Sam` directly:
    the image (H, W, 3) uint8 RGB is embedded once, then each click runs the prompt encoder and mask decoder."""
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8):
        raise ValueError(f"image: expected an (H, W, 3) uint8 RGB array, got "
                         f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}")
    S, original = model.image_encoder.img_size, image.shape[:2]
    with torch.no_grad():
        resized = prepare_image(image, S).to(model.device)
        embedding = model.image_encoder(model.preprocess(resized)[None])

    @torch.no_grad()
    def step(points, labels, mask_input, multimask):
        coords = torch.as_tensor(transform_coords(points, original, S), dtype=torch.float, device=model.device)
        labels = torch.as_tensor(labels, dtype=torch.int, device=model.device)
        masks_in = None if mask_input is None else torch.as_tensor(mask_input, dtype=torch.float,
                                                                    device=model.device)[None]
        logits, iou = model.decode(embedding, coords[None], labels[None], None, masks_in, multimask)
        masks = model.postprocess_masks(logits, resized.shape[-2:], original) > model.mask_threshold
        return masks[0].cpu().numpy(), iou[0].float().cpu().numpy(), logits[0].float().cpu().numpy()

    return _Refinement(step)


# ----------------------------------------------------------------------------------------------------------------
# The widget


class ClickToSegment:
    """Click-to-segment state and widget for one image (H, W, 3) uint8 RGB.

    ``segment(points_xy (N, 2), labels (N,)) -> (mask (H, W) bool, score)`` is called after every change with all
    the points so far. ``size``: the displayed long side in screen pixels (default: 512). Attributes: ``points``
    (N, 2) float as (x, y) pixels, ``labels`` (N,) int (1 foreground, 0 background), ``mask`` (H, W) bool (empty
    before the first click), ``score`` (the segmenter's predicted IoU; NaN before the first click)."""

    def __init__(self, image: np.ndarray, segment: Segmenter, *, size: int | None = None) -> None:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3
                and image.dtype == np.uint8):
            raise ValueError(f"image: expected an (H, W, 3) uint8 RGB array, got "
                             f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}")
        if not callable(segment):
            raise TypeError("segment: expected a callable (points_xy (N, 2), labels (N,)) -> (mask (H, W), score)")
        size = DISPLAY_SIZE if size is None else size
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size: expected a positive int (displayed long side in pixels), got {size!r}")
        self.image, self.segment = image, segment
        H, W = image.shape[:2]
        scale = size / max(H, W)
        self.display_size = (max(1, round(W * scale)), max(1, round(H * scale)))  # (width, height) on screen
        self.foreground = True  # what a plain click adds (the toggle)
        self._widgets: dict[str, Any] | None = None
        self.reset()

    # ---- state

    @property
    def shape(self) -> tuple[int, int]:
        """The image's (H, W)."""
        return self.image.shape[:2]

    def click(self, x: float, y: float, foreground: bool = True) -> None:
        """Add a point at (x, y) pixels (foreground or background) and segment again."""
        H, W = self.shape
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < W and 0 <= y < H):
            raise ValueError(f"click ({x}, {y}) lies outside the {W} × {H} image (x in [0, {W}), y in [0, {H}))")
        self.points = np.concatenate([self.points, [[float(x), float(y)]]])
        self.labels = np.append(self.labels, int(bool(foreground)))
        self._update()

    def undo(self) -> None:
        """Remove the last point (nothing happens without one) and segment again."""
        if len(self.labels):
            self.points, self.labels = self.points[:-1], self.labels[:-1]
            self._update()

    def reset(self) -> None:
        """Remove every point: empty mask, score NaN."""
        self.points = np.zeros((0, 2), dtype=float)
        self.labels = np.zeros(0, dtype=np.int64)
        self._update()

    def _update(self) -> None:
        if len(self.labels) == 0:
            self.mask, self.score = np.zeros(self.shape, dtype=bool), float("nan")
        else:
            mask, score = self.segment(self.points.copy(), self.labels.copy())
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.shape:
                raise ValueError(f"segment returned a mask of shape {mask.shape}, expected {self.shape} (H, W)")
            self.mask, self.score = mask, float(score)
        self._refresh()

    # ---- pictures

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        """The image with the mask tinted blue (``alpha`` of the colour) and its outline solid: (H, W, 3) uint8."""
        from scipy import ndimage

        out = self.image.astype(np.float64)
        out[self.mask] = (1 - alpha) * out[self.mask] + alpha * MASK_COLOUR
        outline = self.mask & ~ndimage.binary_erosion(self.mask, border_value=0)
        out[outline] = MASK_COLOUR
        return out.round().astype(np.uint8)

    def _png(self) -> bytes:
        """The overlay at the displayed size (nearest-neighbour, so pixels stay sharp) with the points drawn."""
        from PIL import Image, ImageDraw

        picture = Image.fromarray(self.overlay()).resize(self.display_size, Image.NEAREST)
        draw = ImageDraw.Draw(picture)
        sx, sy = self.display_size[0] / self.shape[1], self.display_size[1] / self.shape[0]
        r = max(3, round(min(self.display_size) / 80))
        for (x, y), label in zip(self.points, self.labels, strict=True):
            cx, cy = (x + 0.5) * sx, (y + 0.5) * sy  # the centre of the clicked pixel
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=POINT_COLOURS[int(label)], outline=(255, 255, 255))
        buffer = io.BytesIO()
        picture.save(buffer, format="png")
        return buffer.getvalue()

    def status(self) -> str:
        """One line: the points and the predicted IoU."""
        n_fg, n_bg = int((self.labels == 1).sum()), int((self.labels == 0).sum())
        if not len(self.labels):
            return "Click on an object (shift-click or right-click: background)."
        return f"{n_fg} foreground, {n_bg} background point(s) · predicted IoU {self.score:.3f}"

    # ---- browser events

    def event_to_pixel(self, event: dict[str, Any]) -> tuple[int, int]:
        """The image pixel (x, y) of an ipyevents mouse event on the displayed image.

        ``relativeX/Y`` are screen pixels from the image element's top-left corner and ``boundingRectWidth/Height``
        its size on screen (which the page may shrink below ``display_size``); without them, ``dataX/Y`` are pixels
        of the displayed PNG (``display_size``). Either is scaled to the image's (H, W) and clamped inside it."""
        H, W = self.shape
        width, height = event.get("boundingRectWidth"), event.get("boundingRectHeight")
        if "relativeX" in event and width and height:
            fx, fy = event["relativeX"] / width, event["relativeY"] / height
        elif "dataX" in event:
            fx, fy = event["dataX"] / self.display_size[0], event["dataY"] / self.display_size[1]
        else:
            raise ValueError(f"event: expected relativeX/relativeY with boundingRectWidth/Height, or dataX/dataY; "
                             f"got keys {sorted(event)}")
        return min(max(int(np.floor(fx * W)), 0), W - 1), min(max(int(np.floor(fy * H)), 0), H - 1)

    def handle_event(self, event: dict[str, Any]) -> None:
        """An ipyevents ``click`` or ``contextmenu`` event → :meth:`click`. Background when the toggle says so, the
        shift key is down, or it is a right click (``contextmenu``)."""
        if event.get("type") not in ("click", "contextmenu"):
            return
        x, y = self.event_to_pixel(event)
        background = not self.foreground or event.get("shiftKey", False) or event.get("type") == "contextmenu"
        self.click(x, y, foreground=not background)

    # ---- the widget

    @property
    def widget(self) -> ipywidgets.VBox:
        """The box to display: mode toggle, undo and reset buttons, the image, a status line."""
        if self._widgets is None:
            self._widgets = self._build()
        return self._widgets["box"]

    def _build(self) -> dict[str, Any]:
        import ipywidgets as w

        try:
            from ipyevents import Event
        except ImportError as error:
            raise ImportError("the click-to-segment widget needs ipyevents: pip install ipyevents") from error
        try:  # Colab shows third-party widgets only through its custom widget manager
            from google.colab import output

            output.enable_custom_widget_manager()
        except ImportError:
            pass
        width, height = self.display_size
        image = w.Image(value=self._png(), format="png", width=width, height=height,
                        layout=w.Layout(width=f"{width}px", height=f"{height}px", max_width="none"))
        mode = w.ToggleButtons(options=[("foreground", True), ("background", False)], value=self.foreground,
                               description="click adds", style={"button_width": "90px"})
        undo = w.Button(description="undo", icon="undo")
        reset = w.Button(description="reset", icon="refresh")
        status = w.HTML(self.status())
        events = Event(source=image, watched_events=["click", "contextmenu"], prevent_default_action=True)

        mode.observe(lambda change: setattr(self, "foreground", change["new"]), names="value")
        undo.on_click(lambda _: self.undo())
        reset.on_click(lambda _: self.reset())
        events.on_dom_event(self.handle_event)
        box = w.VBox([w.HBox([mode, undo, reset]), image, status])
        return {"box": box, "image": image, "mode": mode, "undo": undo, "reset": reset, "status": status,
                "events": events}

    def _refresh(self) -> None:
        if self._widgets is not None:
            self._widgets["image"].value = self._png()
            self._widgets["status"].value = self.status()
