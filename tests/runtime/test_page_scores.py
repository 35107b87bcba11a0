"""The C++ page scorer (runtime/csrc/page_scores.cpp) against a float64 reference, and in use."""

from __future__ import annotations

import pytest
import torch

from runtime import fp8
from runtime.sparse import PageSummaries, key_bounds

needs_kernel = pytest.mark.skipif(not fp8.kernel_available(), reason="C++ kernels did not build")


@needs_kernel
@pytest.mark.parametrize(("heads", "group", "pages", "width"),
                         [(2, 4, 1000, 128), (2, 7, 333, 128), (1, 1, 1, 16), (3, 5, 7, 24), (2, 4, 0, 128)])
def test_scores_match_a_float64_reference(heads: int, group: int, pages: int, width: int) -> None:
    gen = torch.Generator().manual_seed(pages)
    boxes = torch.randn(4, heads, pages + 9, width, generator=gen).bfloat16()
    box = boxes[2, :, :pages]  # a strided view, as PageSummaries passes it
    q = torch.randn(heads, group, width, generator=gen)
    out = torch.ops.strata_sparse.page_scores(q, box)
    ref = torch.matmul(q.double(), box.double().transpose(1, 2))
    assert out.shape == (heads, group, pages) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-5)


@needs_kernel
def test_scores_are_the_same_bits_whatever_the_threads() -> None:
    gen = torch.Generator().manual_seed(1)
    box = torch.randn(2, 5000, 128, generator=gen).bfloat16()
    q = torch.randn(2, 4, 128, generator=gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.strata_sparse.page_scores(q, box)
        torch.set_num_threads(max(2, threads))
        many = torch.ops.strata_sparse.page_scores(q, box)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@needs_kernel
def test_bad_operands_are_refused() -> None:
    with pytest.raises(RuntimeError, match="bfloat16"):
        torch.ops.strata_sparse.page_scores(torch.randn(2, 4, 16), torch.randn(2, 3, 16))
    with pytest.raises(RuntimeError, match="shapes differ"):
        torch.ops.strata_sparse.page_scores(torch.randn(2, 4, 16), torch.randn(2, 3, 8).bfloat16())


def test_summaries_score_the_same_pages_with_and_without_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel and the torch fallback rank pages alike: each score bounds every key of its page."""
    gen = torch.Generator().manual_seed(2)
    keys = torch.randn(300, 64, 2, 32, generator=gen)  # [pages, P, H, D]
    summaries = PageSummaries(1, 2, 32)
    summaries.set_layer(0, 0, key_bounds(keys))
    q = torch.randn(2, 3, 32, generator=gen)
    true_max = torch.einsum("hgd,nphd->hgnp", q, keys).amax(dim=-1)  # the best key of each page
    got = summaries.scores(0, 300, q)
    monkeypatch.setenv(fp8.KERNEL_ENV, "0")
    monkeypatch.setattr(fp8, "_load_tried", False)
    fallback = summaries.scores(0, 300, q)
    assert (got >= true_max - 1e-4).all()  # fp32 sums of a box that contains every key
    assert (fallback >= true_max - 1e-2 * true_max.abs()).all()  # the score itself rounded to bf16
    torch.testing.assert_close(got, fallback, atol=0.5, rtol=1e-2)
