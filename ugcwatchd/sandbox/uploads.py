"""An S3-like host for DubLab's presigned uploads: signature, expiry, Content-Type, Content-Length.

It runs on its own port so that a client sending its DubLab API key to the upload host is caught,
and it is stricter than S3 about that: an ``apikey`` header is refused, not ignored.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from .common import Clock, RequestStats

BUCKET = "dublab-app-1"
MAX_SINGLE_PUT = 5 * 1024**3  # S3's limit for one PUT
_REGION = "eu-central-1"


def s3_error(status: int, code: str, message: str) -> Response:
    """An S3-style XML error document."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


class UploadSigner:
    """Makes and checks presigned PUT URLs; the Content-Type is bound into the signature."""

    def __init__(self, clock: Clock, expires: int) -> None:
        self._secret = secrets.token_bytes(32)
        self._clock = clock
        self.expires = expires
        self.public_url = ""

    def _signature(self, method: str, path: str, content_type: str, amz_date: str, expires: str) -> str:
        message = "\n".join((method, path, content_type, amz_date, expires)).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def url(self, owner: str, file_id: str, name: str, content_type: str) -> str:
        path = f"/{BUCKET}/{owner}/{file_id}/{quote(name, safe='')}"
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"SANDBOXACCESSKEY/{amz_date[:8]}/{_REGION}/s3/aws4_request",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(self.expires),
            "X-Amz-SignedHeaders": "content-type;host",
            "X-Amz-Signature": self._signature("PUT", path, content_type, amz_date, str(self.expires)),
        }
        return f"{self.public_url}{path}?{urlencode(query)}"

    def check(self, request: Request) -> Response | None:
        """None when the request matches its signature and is unexpired, else the S3 error."""
        q = request.query_params
        amz_date, expires, signature = q.get("X-Amz-Date"), q.get("X-Amz-Expires"), q.get("X-Amz-Signature")
        if not (amz_date and expires and signature and q.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256"):
            return s3_error(403, "AccessDenied", "Query-string authentication requires the X-Amz-* parameters")
        # The raw path is what was signed: the URL is used exactly as it was handed out.
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        content_type = request.headers.get("content-type", "")
        expected = self._signature(request.method, raw_path, content_type, amz_date, expires)
        if not hmac.compare_digest(expected, signature):
            return s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check the method and that Content-Type is exactly the one given to init-dub.",
            )
        try:
            issued = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
            lifetime = int(expires)
        except ValueError:
            return s3_error(403, "AccessDenied", "X-Amz-Date or X-Amz-Expires is malformed")
        if self._clock() > issued + lifetime:
            return s3_error(403, "AccessDenied", "Request has expired")
        return None


class Uploads:
    """The upload host: stores each PUT on disk (streamed) and tells the owner what arrived."""

    def __init__(
        self,
        signer: UploadSigner,
        data_dir: Path,
        on_upload: Callable[[str, str, Path], None],
        stats: RequestStats,
    ) -> None:
        self.signer = signer
        self.data_dir = data_dir
        self.on_upload = on_upload
        self.stats = stats

    def routes(self) -> list[Route]:
        methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
        return [
            Route("/sandbox/stats", self.sandbox_stats, methods=["GET"]),
            Route("/{bucket}/{owner}/{file_id}/{name}", self.put, methods=methods),
        ]

    @staticmethod
    def route_of(scope: Scope) -> str:
        return f"{scope['method']} {scope['path'] if scope['path'].startswith('/sandbox/') else '/{bucket}/{key}'}"

    async def put(self, request: Request) -> Response:
        headers = request.headers
        if "authorization" in headers:
            return s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
                "string parameter or the Authorization header should be specified",
            )
        if "apikey" in headers:
            return s3_error(400, "InvalidArgument", "Unexpected apikey header: a presigned URL takes no API key")
        refused = self.signer.check(request)
        if refused is not None:
            return refused
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return s3_error(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented: Transfer-Encoding",
            )
        length_header = headers.get("content-length")
        if length_header is None or not length_header.isdigit():
            return s3_error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
        length = int(length_header)
        if length > MAX_SINGLE_PUT:
            return s3_error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        return await self._store(request, length)

    async def _store(self, request: Request, length: int) -> Response:
        owner, file_id = request.path_params["owner"], request.path_params["file_id"]
        target = self.data_dir / f"{file_id}.upload"
        partial = target.with_suffix(".partial")
        md5 = hashlib.md5(usedforsecurity=False)
        received = 0
        try:
            with partial.open("wb") as out:
                async for chunk in request.stream():
                    received += len(chunk)
                    md5.update(chunk)
                    out.write(chunk)
        except ClientDisconnect:
            partial.unlink(missing_ok=True)
            return s3_error(
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
            )
        if received != length:
            partial.unlink(missing_ok=True)
            return s3_error(
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
            )
        partial.replace(target)
        await asyncio.to_thread(self.on_upload, owner, file_id, target)
        return Response(status_code=200, headers={"ETag": f'"{md5.hexdigest()}"'})

    async def sandbox_stats(self, request: Request) -> Response:
        return JSONResponse({"answers": self.stats.answers})
