"""The upload handler for job input files: streamed to this node's disk (JOB_STORAGE_PATH/tmp,
beside the local job folders), size-capped. The file is checked there, then stored
(jobs.storage: renamed into its folder, or uploaded to the bucket in parts).

It is listed first in FILE_UPLOAD_HANDLERS and claims only the ``input_file`` field of
``POST /api/v1/jobs`` (raising StopFutureHandlers); every other upload goes on to the next
handler untouched. A file over JOB_MAX_INPUT_FILE_MB is deleted at once and answered 413
before the rest of the body is read.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers

from jobs import storage
from jobs.errors import InputFileTooLarge

FIELD = "input_file"
JOBS_PATH = "/api/v1/jobs"


class JobInputFile(UploadedFile):
    """An uploaded input file in JOB_STORAGE_PATH/tmp, deleted when closed unless stored."""

    def __init__(self, name, content_type, size, charset, content_type_extra=None):
        super().__init__(storage.new_temp_file(), name, content_type, size, charset, content_type_extra)

    def temporary_file_path(self) -> str:
        return self.file.name

    def close(self):
        try:
            return self.file.close()
        except FileNotFoundError:
            pass  # moved into the job's folder: nothing left to delete


class JobInputUploadHandler(FileUploadHandler):
    def _is_job_upload(self) -> bool:
        request = self.request
        return request is not None and request.method == "POST" and request.path_info.rstrip("/") == JOBS_PATH

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        # A body far over the cap is refused before a byte of it is read.
        slack = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
        if self._is_job_upload() and content_length > settings.JOB_MAX_INPUT_FILE_BYTES + slack:
            raise InputFileTooLarge(settings.JOB_MAX_INPUT_FILE_MB)
        return None

    def new_file(self, field_name, *args, **kwargs):
        if field_name != FIELD or not self._is_job_upload():
            self.file = None
            return  # not ours: the next handler takes it
        super().new_file(field_name, *args, **kwargs)
        self.file = JobInputFile(self.file_name, self.content_type, 0, self.charset, self.content_type_extra)
        self.size = 0
        raise StopFutureHandlers()

    def receive_data_chunk(self, raw_data, start):
        if self.file is None:
            return raw_data
        self.size += len(raw_data)
        if self.size > settings.JOB_MAX_INPUT_FILE_BYTES:
            self.file.close()
            self.file = None
            raise InputFileTooLarge(settings.JOB_MAX_INPUT_FILE_MB)
        self.file.write(raw_data)
        return None

    def upload_interrupted(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    def file_complete(self, file_size):
        if self.file is None:
            return None
        self.file.seek(0)
        self.file.size = file_size
        uploaded, self.file = self.file, None
        return uploaded
