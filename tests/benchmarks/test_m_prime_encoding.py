"""`benchmarks/m_prime_encoding.py`: lossless formats store the build's m' exactly; jpeg_blocks takes less than half
of WebP's bytes, changes no pixel beyond the mask's blocks and keeps the negative as strong; the README gives
what it measures (all but the CPU times, which the machine moves)."""

from __future__ import annotations

import pytest

from tests.paths import REPO


pytest.importorskip("jpeglib")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from benchmarks.m_prime_encoding import measure, rows_of_default_build

    rows = rows_of_default_build(40, tmp_path_factory.mktemp("m-prime") / "build")
    return len(rows), measure(rows, rounds=1)


def test_lossless_formats_store_the_builds_m_prime(result):
    _, r = result
    for f in ("webp", "png"):
        assert r[f]["outside"]["changed"] == 0 and r[f]["outside"]["outside"] > 0
    assert r["webp"]["kept"] == r["png"]["kept"]
    assert r["webp"]["bytes"] < r["png"]["bytes"]


def test_jpeg_blocks_is_small_local_and_keeps_the_negative(result):
    _, r = result
    blocks, webp = r["jpeg_blocks"], r["webp"]
    assert blocks["bytes"] < 0.5 * webp["bytes"]
    assert blocks["outside"]["beyond_blocks"] == 0
    assert 0 < blocks["outside"]["changed"] < 0.2 * blocks["outside"]["outside"]
    for blur, kept in webp["kept"].items():
        assert abs(blocks["kept"][blur] - kept) <= 0.002, blur


def test_the_readme_gives_the_measured_numbers(result):
    n, r = result
    text = " ".join((REPO / "README.md").read_text().split())
    blocks, webp, png = r["jpeg_blocks"], r["webp"], r["png"]
    o = blocks["outside"]
    kept = lambda f: ", ".join(f"{r[f]['kept'][b]:.3f}" for b in (1.0, 2.0)) + f" and {r[f]['kept'][4.0]:.3f}"  # noqa: E731
    assert f"On the {n} rows ({webp['masks']} distinct key masks)" in text
    assert f"WebP {webp['bytes'] / n / 1e3:.1f} KB" in text
    assert f"PNG {png['bytes'] / webp['bytes']:.2f}x" in text
    assert f"jpeg_blocks {blocks['bytes'] / webp['bytes']:.2f}x ({blocks['bytes'] / n / 1e3:.1f} KB)" in text
    assert f"jpeg_blocks changes {100 * o['changed'] / o['outside']:.2f}% of the pixels outside the masks, by " \
           f"{o['abs_diff'] / o['changed']:.2f} levels on average" in text  # fmt: skip
    assert f"keeps {kept('jpeg_blocks')} of the appearance against the lossless m''s {kept('webp')}" in text
