"""soteria_lib.widgets: a slider over precomputed frames, linked in the browser."""
import ipywidgets as widgets
from ipywidgets.widgets.widget_link import Link
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import torch  # noqa: E402

from soteria_lib.plotting import show_images  # noqa: E402
from soteria_lib.widgets import FRAME_SLIDER_CLASS, figure_png, frame_slider  # noqa: E402


def _png(text: str) -> bytes:
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.set_title(text)
    return figure_png(fig, dpi=20)


@pytest.fixture(scope="module")
def frames():
    return [_png(str(rate)) for rate in (0, 30, 60)]


def test_a_frame_of_images_carries_its_titles():
    fig = show_images([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)], ["private", "soteria"], suptitle="rate 60 %")
    assert [ax.get_title() for ax in fig.axes] == ["private", "soteria"]
    assert fig.get_suptitle() == "rate 60 %"
    assert show_images([torch.zeros(1, 4, 4)], ["alone"]).get_suptitle() == ""
    plt.close("all")


def test_figure_png_closes_the_figure():
    fig = plt.figure()
    data = figure_png(fig, dpi=10)
    assert data.startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)


def test_structure(frames):
    box = frame_slider(frames, [0, 30, 60], description="rate", value=30, label_format="{} %")
    assert isinstance(box, widgets.VBox) and FRAME_SLIDER_CLASS in box._dom_classes
    assert box.children[0].children == (box.slider, box.hint) and box.children[1] is box.stack
    assert "arrow keys" in box.hint.value
    assert isinstance(box.slider, widgets.SelectionSlider)
    assert box.slider.options == (("0 %", 0), ("30 %", 30), ("60 %", 60))
    assert box.slider._options_labels == ("0 %", "30 %", "60 %")
    assert box.slider.value == 30 and box.slider.index == 1
    assert box.slider.continuous_update is False
    assert len(box.stack.children) == 3
    assert all(isinstance(c, widgets.Image) for c in box.stack.children)
    assert [c.value for c in box.stack.children] == frames
    assert box.stack.selected_index == 1


def test_link_is_in_the_browser(frames):
    """A jslink between slider.index and stack.selected_index, executed by the front end only:
    no Python callback follows the slider (without a browser the stack does not move)."""
    box = frame_slider(frames, [0, 30, 60])
    assert isinstance(box.link, Link)
    assert box.link.source == (box.slider, "index")
    assert box.link.target == (box.stack, "selected_index")
    box.slider.value = 60
    assert box.slider.index == 2 and box.stack.selected_index == 0


@pytest.mark.parametrize("values, kwargs, message", [
    ([0, 30], {}, "3 frames but 2 values"),
    ([0, 30, 30], {}, "distinct"),
    ([0.1, 0.12, 0.3], {"label_format": "{:.1f}"}, "labels must be distinct"),
    ([0, 30, 60], {"value": 45}, "not one of the slider values"),
])
def test_bad_input(frames, values, kwargs, message):
    with pytest.raises(ValueError, match=message):
        frame_slider(frames, values, **kwargs)


def test_frames_must_be_png():
    with pytest.raises(ValueError, match="at least one frame"):
        frame_slider([], [])
    with pytest.raises(ValueError, match="frame 1 is not PNG"):
        frame_slider([_png("a"), b"GIF89a"], [1, 2])
