"""PDF files made by the tests: a text PDF written by hand (Helvetica text layer), scanned PDFs via Pillow,
an encrypted one via pypdf (a test-only dependency). Nothing here touches the disk."""

from __future__ import annotations

import io

from PIL import Image


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF with one page per item of ``pages``, each line of text in the page's text layer."""
    bodies: dict[int, bytes] = {1: b"<< /Type /Catalog /Pages 2 0 R >>"}
    bodies[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    kids, number = [], 4
    for lines in pages:
        stream = "BT /F1 14 Tf 72 760 Td 18 TL " + " ".join(f"({_escape(line)}) Tj T*" for line in lines) + " ET"
        bodies[number] = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {number + 1} 0 R >>"
        ).encode()
        bodies[number + 1] = f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream".encode()
        kids.append(number)
        number += 2
    bodies[2] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>".encode()
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for index in range(1, number):
        offsets[index] = len(out)
        out += f"{index} 0 obj\n".encode() + bodies[index] + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {number}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offsets[i]:010d} 00000 n \n".encode() for i in range(1, number))
    out += f"trailer\n<< /Size {number} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def scanned_pdf(images: list[Image.Image], resolution: float = 150) -> bytes:
    """A PDF whose pages are only pictures (no text layer), as a scanner makes them."""
    out = io.BytesIO()
    first, *rest = [im.convert("RGB") for im in images]
    first.save(out, "PDF", resolution=resolution, save_all=True, append_images=rest)
    return out.getvalue()


def encrypted_pdf(data: bytes, password: str = "secret") -> bytes:
    """``data`` protected with a user password (RC4, which pypdf writes without extra packages)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(data)))
    writer.encrypt(password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
