"""Image formats and modes: every one loads as a fully decoded RGB image of the right size."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from headstart import ImageReadError
from headstart.data import Preprocess, content_hash, open_image

W, H = 30, 20
RED = (200, 30, 40)


@pytest.mark.parametrize("ext, tol", [(".jpg", 12), (".jpeg", 12), (".png", 0), (".bmp", 0),
                                      (".webp", 12), (".gif", 0), (".PNG", 0),
                                      (".tif", 0), (".tiff", 0), (".TIF", 0)])
def test_formats_load_as_rgb(tmp_path, ext, tol):
    path = tmp_path / f"x{ext}"
    Image.new("RGB", (W, H), RED).save(path, format={".jpg": "JPEG", ".jpeg": "JPEG",
                                                     ".tif": "TIFF"}.get(ext.lower(),
                                                                         ext[1:].upper()))
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (W, H)
    assert np.abs(np.asarray(img, int)[5, 5] - RED).max() <= tol


def test_animated_gif_gives_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (W, H), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 3
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (W, H)
    assert img.getpixel((3, 3)) == (255, 0, 0)


@pytest.mark.parametrize("left, right, odd, expected", [
    (0.0, 0.5, None, (0, 127)),          # 0..1: x 255
    (0.0, 4000.0, None, (0, 255)),       # wider: by the range
    (-1.0, 1.0, None, (0, 255)),         # normalised -1..1: by the range, not clipped at 0
    (0.0, 0.51, 1.02, (0, 127)),         # 0..1 overshot by resampling: by the range
    (0.0, 0.5, np.inf, (0, 127)),        # an infinite pixel takes the finite top
    (0.0, 0.5, np.nan, (0, 127))])
def test_float_tiff_scales_to_8_bits(tmp_path, left, right, odd, expected):
    """Scientific TIFFs hold 32-bit floats: 0..1 maps to 0..255, anything else by the image's
    own range; one odd pixel (NaN, infinity) never blacks out the rest."""
    a = np.full((H, W), left, np.float32)
    a[:, W // 2:] = right
    if odd is not None:
        a[0, 0] = odd
    Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
    img = open_image(tmp_path / "f.tif")
    assert img.mode == "RGB" and img.size == (W, H)
    assert (img.getpixel((1, H - 1))[0], img.getpixel((W - 1, H - 1))[0]) == expected


def test_negative_32_bit_integers_are_not_wrapped(tmp_path):
    a = np.full((H, W), -50, np.int32)
    a[:, W // 2:] = -10
    Image.fromarray(a, mode="I").save(tmp_path / "i.tif")
    img = open_image(tmp_path / "i.tif")
    assert img.getpixel((1, 1)) == (0, 0, 0) and img.getpixel((W - 1, 1)) == (255, 255, 255)


def test_multipage_tiff_gives_first_page(tmp_path):
    pages = [Image.new("RGB", (W, H), c) for c in ((255, 0, 0), (0, 0, 255))]
    pages[0].save(tmp_path / "m.tiff", save_all=True, append_images=pages[1:])
    img = open_image(tmp_path / "m.tiff")
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (255, 0, 0)


def test_animated_webp_gives_first_frame(tmp_path):
    path = tmp_path / "anim.webp"
    frames = [Image.new("RGB", (W, H), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, lossless=True)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (W, H)
    assert img.getpixel((3, 3)) == (255, 0, 0)


def test_grayscale(tmp_path):
    Image.new("L", (W, H), 128).save(tmp_path / "g.png")
    img = open_image(tmp_path / "g.png")
    assert img.mode == "RGB" and img.size == (W, H) and img.getpixel((1, 1)) == (128, 128, 128)


def test_palette(tmp_path):
    p = Image.new("P", (W, H), 3)
    p.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 0, 255, 0] + [0] * (252 * 3))
    p.save(tmp_path / "p.png")
    img = open_image(tmp_path / "p.png")
    assert img.mode == "RGB" and img.size == (W, H) and img.getpixel((1, 1)) == (0, 255, 0)


def test_palette_with_transparency_goes_on_white(tmp_path):
    p = Image.new("P", (W, H), 1)
    p.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    p.info["transparency"] = 1
    p.save(tmp_path / "pt.gif", transparency=1)
    img = open_image(tmp_path / "pt.gif")
    assert img.mode == "RGB" and img.getpixel((1, 1)) == (255, 255, 255)


def test_rgba_composited_on_white(tmp_path):
    a = Image.new("RGBA", (W, H), (0, 0, 255, 255))
    a.paste((0, 0, 255, 0), (0, 0, W // 2, H))  # left half fully transparent
    a.save(tmp_path / "a.png")
    img = open_image(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (W, H)
    assert img.getpixel((1, 1)) == (255, 255, 255)
    assert img.getpixel((W - 2, 1)) == (0, 0, 255)


def test_grey_with_alpha(tmp_path):
    Image.new("LA", (W, H), (50, 255)).save(tmp_path / "la.png")
    img = open_image(tmp_path / "la.png")
    assert img.mode == "RGB" and img.getpixel((1, 1)) == (50, 50, 50)


def test_16_bit_grey_is_scaled(tmp_path):
    a = np.zeros((H, W), np.uint16)
    a[:, W // 2:] = 40000
    Image.fromarray(a).save(tmp_path / "i16.png")
    img = open_image(tmp_path / "i16.png")
    assert img.mode == "RGB" and img.size == (W, H)
    assert img.getpixel((1, 1)) == (0, 0, 0) and img.getpixel((W - 1, 1)) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    img = open_image(tmp_path / "c.jpg")
    assert img.mode == "RGB" and img.size == (W, H)
    r, g, b = img.getpixel((1, 1))
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert open_image(tmp_path / "phone.jpg").size == (20, 40)


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGB", (W, H), RED),
    lambda: Image.new("L", (W, H), 3),
    lambda: np.full((H, W, 3), 9, np.uint8),
    lambda: np.full((H, W), 9, np.uint8),
    lambda: np.full((3, H, W), 0.5, np.float32),  # CHW floats in [0, 1]
    lambda: np.full((H, W, 4), 200, np.uint8),
    lambda: np.full((H, W, 1), 9, np.uint8),
])
def test_in_memory_images(make):
    img = open_image(make())
    assert img.mode == "RGB" and img.size == (W, H)


def test_float_array_in_unit_range_is_scaled():
    img = open_image(np.full((H, W, 3), 0.5, np.float32))
    assert img.getpixel((0, 0)) == (127, 127, 127)


def test_bad_array_shape():
    with pytest.raises(ImageReadError) as e:
        open_image(np.zeros((4, 5, 6, 7), np.uint8))
    assert "array of shape (4, 5, 6, 7)" in str(e.value) and "HxWx3" in str(e.value)


def test_errors_name_the_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.png"
    text.write_text("hello")
    for path, words in ((cut, "corrupt or truncated"), (text, "not an image"),
                        (tmp_path / "none.png", "does not exist")):
        with pytest.raises(ImageReadError) as e:
            open_image(path)
        assert str(path) in str(e.value) and words in str(e.value)
        assert e.value.source == str(path)
        assert isinstance(e.value, ValueError)


def test_max_pixels(tmp_path):
    Image.new("RGB", (W, H)).save(tmp_path / "x.png")
    assert open_image(tmp_path / "x.png", max_pixels=W * H).size == (W, H)
    with pytest.raises(ImageReadError, match="30x20"):
        open_image(tmp_path / "x.png", max_pixels=W * H - 1)


def test_content_hash_follows_content(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (W, H), RED).save(a)
    Image.new("RGB", (W, H), RED).save(b)
    assert content_hash(a) == content_hash(b)
    Image.new("RGB", (W, H), (0, 0, 0)).save(b)
    assert content_hash(a) != content_hash(b)
    arr = np.zeros((H, W, 3), np.uint8)
    assert content_hash(arr) == content_hash(arr.copy()) != content_hash(arr + 1)


def test_preprocess_shape_and_normalisation():
    pre = Preprocess(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    img = Image.new("RGB", (64, 32), (255, 0, 255))
    x = pre(img)
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    assert np.allclose(x[0], 1.0) and np.allclose(x[1], -1.0)
    # centre crop of the longer side; flip mirrors it
    half = Image.new("RGB", (32, 16), (0, 0, 0))
    half.paste((255, 255, 255), (0, 0, 16, 16))
    plain, flipped = pre(half), pre(half, flip=True)
    assert np.allclose(plain[:, :, ::-1], flipped)



def test_normalisation_by_table_is_the_arithmetic_bit_for_bit():
    """Every byte of every channel, under the shipped backbones' normalisations and an odd
    one: the table (pre-computed per byte) gives what (x / 255 - mean) / std in float32 gives;
    the views written into a batch slot are the image and its mirror as __call__ makes them."""
    from headstart.backbones import get_config
    every = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij")[:1] * 3, -1)
    pixels = np.ascontiguousarray(every[:, :, :], np.uint8)  # (256, 256, 3): every value
    rng = np.random.default_rng(0)
    pixels[..., 1] = rng.permutation(pixels[..., 1].ravel()).reshape(256, 256)
    for mean, std in [(get_config("efficientnet_lite0").mean, get_config("efficientnet_lite0").std),
                      (get_config("tiny_cnn").mean, get_config("tiny_cnn").std),
                      ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ([0.1, 0.2, 0.3], [1, 2, 3])]:
        pre = Preprocess(256, mean, std)
        a = pixels.astype(np.float32) * (1.0 / 255.0)
        expected = ((a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)
        assert np.array_equal(pre.to_array(Image.fromarray(pixels)), expected)
        img = Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8))
        slot = np.full((2, 3, 256, 256), np.nan, np.float32)
        pre.views_into(np.asarray(pre.resize(img)), slot)
        assert np.array_equal(slot[0], pre(img)) and np.array_equal(slot[1], pre(img, flip=True))


def test_a_large_jpeg_is_decoded_at_the_scale_its_use_needs(tmp_path):
    """A photo shrunk to a shorter side of 100 is decoded at the smallest DCT scale whose
    shorter side stays >= 3 x 100 (1/4 here: 500 x 376); after the resize the pixels are
    within a few grey levels of the full decode; EXIF orientation still applies; PNGs and
    small JPEGs are decoded whole."""
    from headstart.data.transforms import Preprocess
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize(
        (2000, 1500), Image.BICUBIC)
    smooth.save(tmp_path / "big.jpg", quality=92)
    assert open_image(tmp_path / "big.jpg").size == (2000, 1500)
    drafted = open_image(tmp_path / "big.jpg", fit=100)
    assert drafted.size == (500, 375) and drafted.mode == "RGB"
    pre = Preprocess(100, (0.5,) * 3, (0.5,) * 3)
    full = pre.resize(open_image(tmp_path / "big.jpg"))
    diff = np.abs(np.asarray(pre.resize(drafted), int) - np.asarray(full, int))
    assert diff.mean() < 1.0 and diff.max() <= 8
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    smooth.save(tmp_path / "rot.jpg", quality=92, exif=exif)
    assert open_image(tmp_path / "rot.jpg", fit=100).size == (375, 500)
    smooth.save(tmp_path / "big.png")
    assert open_image(tmp_path / "big.png", fit=100).size == (2000, 1500)
    assert open_image(tmp_path / "big.jpg", fit=700).size == (2000, 1500)  # 3 x 700 > 1500


def test_heic_photos_load_as_rgb(tmp_path):
    """HEIF/HEIC, the iPhone's default format, through pillow-heif (registered on first use);
    a file that only says HEIC in its name is not trusted for it."""
    from pillow_heif import register_heif_opener
    register_heif_opener()  # to write one here; headstart registers it itself to read
    Image.new("RGB", (W, H), RED).save(tmp_path / "x.heic", quality=95)
    img = open_image(tmp_path / "x.heic")
    assert img.mode == "RGB" and img.size == (W, H)
    assert np.abs(np.asarray(img, int)[5, 5] - RED).max() <= 12
    (tmp_path / "fake.heic").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="fake.heic"):
        open_image(tmp_path / "fake.heic")
