"""Decodes every stream of a PDF (filters, predictors, object streams) and its embedded files.

The decoders are written here rather than taken from pypdf: pypdf decodes a whole stream into
memory before anyone can look at its size, so a Flate bomb would be inflated in full before the
context's compression-ratio limit could stop it. Here every filter is a generator of blocks,
chained, and the context reads the last one, so a bomb stops one block after the limit. Damaged
input decodes as far as it goes (a truncated Flate stream still yields its readable part).

A PDF encrypted with the standard security handler and an empty user password (the usual case
for "cannot print / cannot copy" documents) is decrypted when it uses RC4 (R2-R4); AES (AESV2,
AESV3) documents and those with a real user password yield one PROTECTED member.

``syntax`` parses PDF objects, ``document`` finds streams, trailers and object offsets,
``lengths`` reads indirect stream lengths, ``embedded`` names embedded files, ``filters`` and
``predictors`` decode streams, ``crypt`` holds the standard security handler, ``handler`` the
PdfHandler that puts them together.
"""

from .handler import PdfHandler

__all__ = ["PdfHandler"]
