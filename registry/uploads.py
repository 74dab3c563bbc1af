"""An upload handler that streams every uploaded file to disk, hashing and size-capping it.

It replaces Django's in-memory and temporary-file handlers (FILE_UPLOAD_HANDLERS), so a large
body never sits in memory, the sha256 is known without a second read, and a file over the cap
is deleted at once and answered with 413 before the rest of the body is read.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from registry.errors import ModelTooLarge


class HashingUploadHandler(TemporaryFileUploadHandler):
    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self._digest = hashlib.sha256()
        self._size = 0

    def receive_data_chunk(self, raw_data, start):
        self._size += len(raw_data)
        if self._size > settings.MAX_MODEL_SIZE_BYTES:
            self.file.close()  # a NamedTemporaryFile: closing deletes it
            raise ModelTooLarge(settings.MAX_MODEL_SIZE_MB)
        self._digest.update(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size):
        uploaded = super().file_complete(file_size)
        uploaded.sha256 = self._digest.hexdigest()
        return uploaded
