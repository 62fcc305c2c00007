"""An image uploaded to the explorer: checked, then predicted by the run's model and placed among its
embeddings (its nearest neighbours), through the same library paths as ``galmo predict`` and
``galmo similar --image`` (images of another size or band count reach the model by
:mod:`galmo.core.resample`).

An upload is a form field ``file`` (``multipart/form-data``), or the raw bytes with ``?filename=``. It
is refused with a message naming the file when it is larger than :data:`MAX_UPLOAD` (413), empty, not
named as a PNG, JPEG or FITS image, not one by its first bytes, or not readable as one (400). The file is
kept in a temporary folder only while it is read.
"""

from __future__ import annotations

import base64
import io
import tempfile
import warnings
from pathlib import Path

from starlette.exceptions import HTTPException

from galmo.core.errors import GalmoError

MAX_UPLOAD = 16 * 2 ** 20  # bytes
TYPES = {".png": ("PNG", (b"\x89PNG\r\n\x1a\n",)), ".jpg": ("JPEG", (b"\xff\xd8\xff",)),
         ".jpeg": ("JPEG", (b"\xff\xd8\xff",)), ".fits": ("FITS", (b"SIMPLE  =",)), ".fit": ("FITS", (b"SIMPLE  =",)),
         ".fits.gz": ("gzipped FITS", (b"\x1f\x8b",))}


async def read_upload(request) -> tuple[str, bytes]:
    """(the file's name, its bytes) of an upload request; 413 past :data:`MAX_UPLOAD`, GalmoError (400) for
    a request that holds no file."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD + 65536:  # the form's own fields are small
            raise HTTPException(413, f"the upload is larger than the {MAX_UPLOAD // 2 ** 20} MiB limit")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        name, data = _form_file(ctype, bytes(body))
    else:
        name, data = request.query_params.get("filename", ""), bytes(body)
    if len(data) > MAX_UPLOAD:
        raise HTTPException(413, f"{name}: larger than the {MAX_UPLOAD // 2 ** 20} MiB limit")
    return Path(name.replace("\\", "/")).name, data


def _form_file(ctype: str, body: bytes) -> tuple[str, bytes]:
    from email import policy
    from email.parser import BytesParser

    msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
    for part in msg.iter_parts() if msg.is_multipart() else ():
        if part.get_param("name", header="content-disposition") == "file" and part.get_filename():
            return part.get_filename(), part.get_payload(decode=True) or b""
    raise GalmoError("no file in the upload: choose an image (PNG, JPEG or FITS) to send")


def check_upload(name: str, data: bytes) -> str:
    """The image type's suffix of an upload named ``name``; GalmoError naming it when it is not an image."""
    suffix = next((s for s in sorted(TYPES, key=len, reverse=True) if name.lower().endswith(s)), None)
    if not name or suffix is None:
        raise GalmoError("not a PNG, JPEG or FITS image (the name must end in "
                         f"{', '.join(TYPES)})", path=name or "the upload")
    if not data:
        raise GalmoError("empty file", path=name)
    kind, magic = TYPES[suffix]
    if not data.startswith(magic):
        raise GalmoError(f"not a {kind} image: its first bytes are not those of a {kind} file", path=name)
    return suffix


def analyse(ex, run, name: str, data: bytes) -> dict:
    """The run's answer on an uploaded image: its picture (a data URI), the prediction of the run's model
    and its nearest neighbours in the run's embeddings (each when the run has them)."""
    from galmo.sources import open_source

    suffix = check_upload(name, data)
    with tempfile.TemporaryDirectory(prefix="galmo-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings(record=True) as said:  # what was done to it (resized, bands), shown
                warnings.simplefilter("always", UserWarning)
                src = open_source(path)
                out = {"name": name, "shape": list(src.shape), "picture": picture(src.read([0], kind="image")[0])}
                if run.can_predict:
                    out["prediction"] = _predict(ex, run, src)
                if run.embeddings_file is not None:
                    out["neighbours"] = _neighbours(ex, run, path)
        except GalmoError as e:  # name the user's file, not the temporary copy
            raise GalmoError(str(e).replace(str(path), name)) from None
    notes = [str(w.message).replace(str(path), name) for w in said if issubclass(w.category, UserWarning)]
    return {**out, "notes": list(dict.fromkeys(notes))}


def _predict(ex, run, src) -> dict:
    from galmo.core.schema import ANSWER_COLUMNS
    from galmo.methods.supervised.run import predict
    from galmo.web.runs import item

    models, sup = ex.model(run)
    row = predict(run.path, src, model=models, sup=sup, device="cpu", batch_size=1).iloc[0].to_dict()
    if sup.get("target") == "class":
        return {**item(row, list(sup["class_names"])), "votes": []}
    return {"votes": [(c, float(row[c])) for c in ANSWER_COLUMNS if c in row]}


def _neighbours(ex, run, path: Path) -> list[dict]:
    from galmo.methods.embeddings.run import query_vector

    _, emb, _ = ex.index(run)
    return ex.neighbours(run, query_vector(emb, str(path), ex.encoder(run)))


def picture(img) -> str:
    """A PNG data URI of one (C, H, W) image in galmo's display stretch (shown inline, nothing stored)."""
    from PIL import Image

    from galmo.web.thumbs import render

    buf = io.BytesIO()
    Image.fromarray(render(img, "rgb")).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
