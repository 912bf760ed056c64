"""Sliders over precomputed frames that work with a kernel and on the static site alike
(chapters 4 and 5).

:func:`frame_slider` shows one precomputed image per slider position. The slider's ``index``
is tied to a :class:`ipywidgets.Stack` of :class:`ipywidgets.Image` frames by
:func:`ipywidgets.jslink`, a link that lives in the browser: moving the slider switches the
visible frame without any Python callback, so it also works on a built HTML page with no
kernel, where the widget state saved in the notebook is all there is.
"""
from __future__ import annotations

import io
from typing import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt

#: CSS class of the box that :func:`frame_slider` returns (the browser test looks for it).
FRAME_SLIDER_CLASS = "soteria-frame-slider"


def figure_png(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (it is not shown again)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


#: The hint shown beside every frame slider: the slider is interactive, and how to move it.
SLIDER_HINT = "◀ drag, or click and use the arrow keys ▶"


class FrameSlider(widgets.VBox):
    """A slider, with a hint beside it, above a stack of image frames, linked in the browser.

    Attributes ``slider`` (a ``SelectionSlider``), ``hint`` (an ``HTML`` line saying how to move
    it), ``stack`` (a ``Stack`` of ``Image``) and ``link`` (the ``jslink`` between
    ``slider.index`` and ``stack.selected_index``). On the book's pages a script gives the
    slider's handle the current label as its accessible value (``aria-valuetext``: "60 %",
    not the position "2"; ``tools/site_scripts.py``).
    """

    def __init__(self, frames: Sequence[bytes], values: Sequence, description: str = "",
                 value=None, label_format: str = "{}"):
        frames, values = list(frames), list(values)
        labels = [label_format.format(v) for v in values]
        _check_frames(frames, values, labels)
        if value is None:
            value = values[0]
        elif value not in values:
            raise ValueError(f"value {value!r} is not one of the slider values {values}")
        self.slider = widgets.SelectionSlider(
            options=list(zip(labels, values)), value=value,
            description=description, continuous_update=False,
            style={"description_width": "initial"}, layout=widgets.Layout(width="min(32rem, 100%)"))
        images = [widgets.Image(value=frame, format="png", layout=widgets.Layout(max_width="100%"))
                  for frame in frames]
        self.hint = widgets.HTML(f'<span class="soteria-slider-hint">{SLIDER_HINT}</span>')
        self.stack = widgets.Stack(images, selected_index=self.slider.index)
        self.link = widgets.jslink((self.slider, "index"), (self.stack, "selected_index"))
        super().__init__([widgets.HBox([self.slider, self.hint], layout=widgets.Layout(flex_flow="row wrap")),
                          self.stack])
        self.add_class(FRAME_SLIDER_CLASS)


def frame_slider(frames: Sequence[bytes], values: Sequence, description: str = "", value=None,
                 label_format: str = "{}") -> FrameSlider:
    """A :class:`FrameSlider`: ``frames[i]`` (PNG bytes, e.g. from :func:`figure_png`) is shown
    while the slider sits at ``values[i]``.

    ``value`` is the starting position (default: the first value); ``label_format`` formats a
    value as the slider's label, e.g. ``"{} %"``. Raises ``ValueError`` when there are no
    frames, when frames and values differ in number, when values or labels repeat, or when a
    frame is not PNG bytes.
    """
    return FrameSlider(frames, values, description, value, label_format)


def _check_frames(frames: list, values: list, labels: list[str]) -> None:
    if not frames:
        raise ValueError("frame_slider needs at least one frame")
    if len(frames) != len(values):
        raise ValueError(f"{len(frames)} frames but {len(values)} values: one frame per value is needed")
    if len(set(values)) != len(values):
        raise ValueError(f"slider values must be distinct, got {values}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"slider labels must be distinct, got {labels} (check label_format)")
    for i, frame in enumerate(frames):
        if not isinstance(frame, (bytes, bytearray)) or not frame.startswith(b"\x89PNG"):
            raise ValueError(f"frame {i} is not PNG bytes (use figure_png(fig) to make one)")
