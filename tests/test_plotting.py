"""The book's figures fit a phone: at most PHONE_WIDTH inches wide, rows of images wrapped."""
import json

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from soteria_lib.plotting import PHONE_WIDTH, save_comparison, show_images, show_saved_reconstructions

matplotlib.use("Agg")


@pytest.mark.parametrize("count, size, rows", [(1, 2.0, 1), (4, 2.0, 2), (5, 2.0, 3), (9, 0.88, 3), (3, 1.4, 1)])
def test_a_row_of_images_wraps_to_stay_within_a_phone(count, size, rows):
    images = [torch.full((1, 8, 8), i / count) for i in range(count)]
    fig = show_images(images, [f"image {i}" for i in range(count)], size=size)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == count and fig.get_size_inches()[0] <= PHONE_WIDTH
    assert len({round(ax.get_position().y0, 3) for ax in drawn}) == rows
    assert [ax.get_title() for ax in drawn] == [f"image {i}" for i in range(count)]
    plt.close(fig)


def test_saved_reconstructions_show_the_truth_once_then_each_run_with_its_psnr(tmp_path):
    truth = torch.zeros(3, 16, 16)
    runs = {}
    for name, value, psnr in (("none", 0.9, 23.54), ("soteria", 0.2, 12.3)):
        folder = tmp_path / name
        folder.mkdir()
        save_comparison(folder / "reconstruction.png", truth, torch.full((3, 16, 16), value), None)
        (folder / "metrics.json").write_text(json.dumps({"psnr": psnr}))
        runs[name] = folder
    fig = show_saved_reconstructions(runs)
    drawn = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in drawn] == ["private image", "none\n23.5 dB", "soteria\n12.3 dB"]
    shown = [ax.images[0].get_array() for ax in drawn]
    assert shown[0].max() < 0.05  # the black truth, cropped to the image: no white margin or title
    assert abs(float(shown[1].mean()) - 0.9) < 0.02 and abs(float(shown[2].mean()) - 0.2) < 0.02
    assert fig.get_size_inches()[0] <= PHONE_WIDTH
    plt.close(fig)
