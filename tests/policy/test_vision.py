"""The image encoder's crops: each training image gets its own random window, eval the center."""
import torch

from dpctrl.policy.nets.vision import ImageEncoder


def _windows(full: torch.Tensor, crop: torch.Tensor) -> list[tuple[int, int]]:
    """For each sample, every (i, j) where ``crop`` equals the window of ``full`` there."""
    c = crop.shape[-1]
    H, W = full.shape[-2:]
    found = []
    for b in range(full.shape[0]):
        hits = [(i, j) for i in range(H - c + 1) for j in range(W - c + 1)
                if torch.equal(full[b, :, i:i + c, j:j + c], crop[b])]
        assert len(hits) == 1, f"sample {b}: crop matches {len(hits)} windows of its own image"
        found.append(hits[0])
    return found


def test_training_crops_are_windows_of_each_image_with_their_own_offsets():
    torch.manual_seed(0)
    enc = ImageEncoder(crop=12, widths=(4, 8, 8), n_kp=4, out_dim=8).train()
    x = torch.randn(64, 3, 16, 16)
    offsets = _windows(x, enc._crop(x))
    assert len(set(offsets)) > 10  # 25 possible offsets over 64 samples: one shared shift would give 1
    assert {i for i, _ in offsets} == set(range(5)) and {j for _, j in offsets} == set(range(5))


def test_eval_crop_is_the_center_and_forward_shapes_hold():
    enc = ImageEncoder(crop=12, widths=(4, 8, 8), n_kp=4, out_dim=8).eval()
    x = torch.randn(3, 3, 16, 16)
    assert _windows(x, enc._crop(x)) == [(2, 2)] * 3
    img = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)
    assert enc(img).shape == (5, 8)
    assert enc.train()(img).shape == (5, 8)
