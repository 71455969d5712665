"""PDF documents for ``/ocr``: each page's text layer when it has one, else the page rendered and read.

PDFium (``pypdfium2``, whose wheels ship the library) opens the document from the bytes in memory; nothing is
written to disk. PDFium is not thread-safe, so every call into it holds :data:`_PDFIUM`; the plugin makes the
calls through ``ctx.run_cpu``. Pages are handled one at a time (open, extract or render, read, release), so a
long PDF costs the memory of one rendered page. At most ``max_pdf_pages`` pages are read; the answer says when
there were more. A password-protected or damaged PDF gets its own message (:class:`PdfError`), as does a
single page that cannot be rendered.

Rendering: :data:`RENDER_DPI`, but never more than ``max_side`` pixels on the longest side (a poster-sized
page is rendered smaller, not refused).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from PIL import Image

from core.contract.chat import Context
from core.contract.errors import UserFacingError
from plugins.ocr.reader import STOP_ERRORS, PageResult

log = logging.getLogger(__name__)

#: Rendering resolution for pages without a text layer (dots per inch; PDF units are 1/72 inch).
RENDER_DPI = 200
#: Where the ``%PDF-`` header may start (PDF readers accept leading junk up to 1 KB).
_HEADER_WINDOW = 1024
_PDFIUM = threading.Lock()
#: PDFium's error code for a document that needs a password.
_ERR_PASSWORD = 4


class PdfError(UserFacingError):
    """The PDF cannot be opened (damaged, or protected by a password)."""

    key = "ocr.pdf_broken"


def is_pdf(data: bytes) -> bool:
    """Whether ``data`` starts like a PDF file (whatever its name or MIME type said)."""
    return b"%PDF-" in data[:_HEADER_WINDOW]


@dataclass
class PdfPage:
    """One page: its text layer (``text``), or, when it has none, the page rendered (``image``, RGB)."""

    text: str | None = None
    image: Image.Image | None = None


def to_png(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (a rendered page for an engine that takes bytes)."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def clean_text(text: str) -> str:
    """A text layer as lines: PDFium's ``\\r\\n`` made ``\\n``, trailing spaces and blank runs removed."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n")


class Pdf:
    """An open PDF (raises :class:`PdfError` when it cannot be opened). Close it with :meth:`close`."""

    def __init__(self, data: bytes) -> None:
        """Open ``data`` in memory."""
        import pypdfium2 as pdfium

        with _PDFIUM:
            try:
                self._doc = pdfium.PdfDocument(data)
                self.page_count = len(self._doc)
            except pdfium.PdfiumError as exc:
                if getattr(exc, "err_code", None) == _ERR_PASSWORD:
                    raise PdfError(f"encrypted PDF ({len(data)} bytes)", key="ocr.pdf_encrypted") from None
                raise PdfError(f"PDFium cannot open it ({len(data)} bytes): {exc}") from None

    def page(self, index: int, max_side: int) -> PdfPage:
        """Page ``index`` (0-based): its text layer, or the page rendered within ``max_side`` pixels.

        Raises :class:`PdfError` (``ocr.pdf_page_broken``) when PDFium cannot read this page.
        """
        import pypdfium2 as pdfium

        with _PDFIUM:
            page = None
            try:
                page = self._doc[index]
                textpage = page.get_textpage()
                text = clean_text(textpage.get_text_range())
                textpage.close()
                if text.strip():
                    return PdfPage(text=text)
                width, height = page.get_size()
                scale = min(RENDER_DPI / 72, max_side / max(width, height, 1.0))
                bitmap = page.render(scale=scale)
                image = bitmap.to_pil().convert("RGB")
                bitmap.close()
                return PdfPage(image=image)
            except pdfium.PdfiumError as exc:
                raise PdfError(f"page {index + 1}: {exc}", key="ocr.pdf_page_broken") from None
            finally:
                if page is not None:
                    page.close()

    def close(self) -> None:
        """Release the document."""
        with _PDFIUM:
            self._doc.close()


async def read_pdf(
    ctx: Context, data: bytes, read: Callable[[Image.Image], Awaitable[PageResult]], max_side: int
) -> tuple[str, int]:
    """The text of every page (``Page 1:`` …) and the number of lines, reading rendered pages with ``read``.

    Progress goes into one status message, edited page by page (for more than one page). Raises
    :class:`PdfError` when the document cannot be opened; errors of ``read`` other than
    :class:`UserFacingError` (and the admin-only errors the plugin stops at) propagate.
    """
    pdf = await ctx.run_cpu(Pdf, data)
    try:
        total = pdf.page_count
        if total == 0:
            raise PdfError("PDF without pages", key="ocr.pdf_empty")
        limit = min(total, ctx.config["max_pdf_pages"])
        sections = [ctx.t("ocr.pdf_page_limit", total=total, limit=limit)] if limit < total else []
        status = await ctx.reply(ctx.t("ocr.pdf_progress", n=1, total=limit)) if limit > 1 else None
        lines = 0
        for index in range(limit):
            if status is not None and index:
                await ctx.edit(status, ctx.t("ocr.pdf_progress", n=index + 1, total=limit))
            head = ctx.t("ocr.pdf_page_label", n=index + 1) + ":"
            try:
                page = await ctx.run_cpu(pdf.page, index, max_side)
                if page.text is not None:
                    body = page.text
                    lines += body.count("\n") + 1
                else:
                    assert page.image is not None
                    result = await read(page.image)
                    page.image = None
                    notes = [ctx.t(key, **params) for key, params in result.notes]
                    body = "\n".join([*notes, result.text or ctx.t("ocr.no_text")])
                    lines += len(result.lines)
            except STOP_ERRORS:
                raise
            except UserFacingError as err:
                log.warning("/ocr PDF page %d for user %s: %s", index + 1, ctx.user.id, err.detail)
                body = ctx.t(err.key, **err.params)
            sections.append(f"{head}\n{body}")
        if status is not None:
            await ctx.edit(status, ctx.t("ocr.pdf_done", n=limit, total=total))
        return "\n\n".join(sections), lines
    finally:
        await ctx.run_cpu(pdf.close)
