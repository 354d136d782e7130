"""``glance://``: the images of a Glance service as an fsspec filesystem.

``glance://`` lists every active image of the cloud (``glance://IMAGE_ID``: one image) through
the Glance v2 API with openstacksdk, whose settings come from the usual ``OS_*`` variables or
``clouds.yaml`` (storage option ``cloud``, ``--os-cloud``).  Reads are ``Range`` requests on
``/v2/images/{id}/file``, so the block cache fetches only the blocks ``introspect()`` reads, as
for S3 or HTTP.  Images that hold no data (``queued``, ``saving``, ``killed``...) are not
listed.  Credentials stay inside openstacksdk's session; nothing here prints them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

PROTOCOL = "glance"


def register() -> None:
    """Make ``glance://`` URLs open through :class:`GlanceFileSystem` (idempotent)."""
    fsspec.register_implementation(PROTOCOL, GlanceFileSystem, clobber=True)


class GlanceFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Glance images as files named by image id (read-only)."""

    protocol = PROTOCOL
    root_marker = ""

    def __init__(self, cloud: str | None = None, **connect_options: Any) -> None:
        super().__init__(cloud=cloud, **connect_options)
        import openstack

        self.connection = openstack.connect(cloud=cloud, **connect_options)

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = str(path)
        if text.startswith(f"{PROTOCOL}://"):
            text = text[len(PROTOCOL) + 3 :]
        return text.strip("/")

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{name}"

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        entries = [self.info(path)] if path else self._images()
        return entries if detail else [entry["name"] for entry in entries]

    def find(
        self, path: str, maxdepth: int | None = None, withdirs: bool = False, **kwargs: Any
    ) -> Any:
        entries = self.ls(path, detail=True)
        if kwargs.get("detail"):
            return {entry["name"]: entry for entry in entries}
        return [entry["name"] for entry in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if not path:
            return {"name": "", "type": "directory", "size": 0}
        image = self.connection.image.get_image(path)
        if image.status != "active":
            raise FileNotFoundError(f"image {path} holds no data (status {image.status})")
        return image_info(image)

    def iter_files(self, path: str) -> Iterator[dict[str, Any]]:
        """The images under ``path`` one by one, as the listing pages arrive (the audit's
        lazy listing; ``find`` would hold them all)."""
        path = self._strip_protocol(path)
        if path:
            yield self.info(path)
            return
        # the proxy pages through /v2/images by itself (marker/limit)
        for image in self.connection.image.images(status="active"):
            yield image_info(image)

    def _images(self) -> list[dict[str, Any]]:
        return list(self.iter_files(""))

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> GlanceFile:
        if mode != "rb":
            raise NotImplementedError("glance:// is read-only")
        if not self._strip_protocol(path):
            raise IsADirectoryError("glance:// is the list of images, not an image")
        return GlanceFile(
            self,
            self._strip_protocol(path),
            mode=mode,
            block_size=block_size or "default",
            cache_options=cache_options,
            **kwargs,
        )


def image_info(image: Any) -> dict[str, Any]:
    return {
        "name": image.id,
        "type": "file",
        "size": image.size,
        # the multihash when Glance computed one, else the legacy MD5
        "etag": image.hash_value or image.checksum,
        "mtime": image.updated_at,
        "disk_format": image.disk_format,
    }


class GlanceFile(AbstractBufferedFile):  # type: ignore[misc]
    """One image's data, read by ``Range`` requests."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        response = self.fs.connection.image.get(
            f"/images/{self.path}/file",
            # identity: a compressed answer (Glance's gzip filter) would not be these bytes
            headers={"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"},
            stream=True,
        )
        try:
            whole = start == 0 and end >= self.size
            if response.status_code != 206 and not (response.status_code == 200 and whole):
                # a 200 would be the whole image: never download it for a few KiB
                raise OSError(f"Glance answered {response.status_code} to a Range request")
            data: bytes = response.raw.read(end - start)
            return data
        finally:
            response.close()
