"""A local, in-memory Google Cloud Storage for tests: `gcp-storage-emulator` with one fix.

    python -m tests.gcs_emulator PORT BUCKET

Serves the JSON API on 127.0.0.1:PORT with BUCKET created. The fix: object downloads carry the
`x-goog-generation` header, as real GCS sends. tensorstore (orbax's array writer) reads an
object's generation from it to update the object safely — an OCDBT checkpoint's manifest is read,
then rewritten on the condition that nobody changed it — and fails with "Malformed
StorageGeneration" without it. The package does not send it (2026.7.19).
"""
import sys

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.exceptions import NotFound

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except NotFound:
    return
  response["x-goog-generation"] = str(obj["generation"])
  response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))


def _install() -> None:
  # `objects.get` (?alt=media) calls `download` through the module; the route table holds the
  # function itself for the download endpoints.
  objects.download = _download_with_generation
  server.HANDLERS = tuple(
      (pattern, {method: _download_with_generation if fn is _download else fn
                 for method, fn in methods.items()})
      for pattern, methods in server.HANDLERS)


def main(port: int, bucket: str) -> None:
  _install()
  emulator = server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
  emulator.run()


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2])
