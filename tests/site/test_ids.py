"""Request and prediction ids: random version-4 UUIDs, distinct across threads and forked workers."""

from __future__ import annotations

import os
import threading
import uuid

from core import ids


def test_ids_are_version_4_uuids_and_never_repeat():
    made = [ids.uuid4() for _ in range(5_000)]  # several 4 KiB reads from the kernel
    assert len(set(made)) == len(made)
    assert all(isinstance(value, uuid.UUID) and value.version == 4 for value in made)
    assert all(value.variant == uuid.RFC_4122 for value in made)


def test_threads_get_distinct_ids():
    found: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def make(index: int) -> None:
        found[index].extend(ids.uuid4() for _ in range(1_000))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for values in found for value in values]
    assert len(set(every)) == len(every) == 4_000


def test_a_forked_worker_does_not_repeat_its_parents_ids():
    ids.uuid4()  # the parent has a buffer with 255 ids left in it
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: its first ids, to the parent
        try:
            os.write(write_end, b"".join(ids.uuid4().bytes for _ in range(10)))
        finally:
            os._exit(0)
    os.close(write_end)
    received = b""
    while len(received) < 160:
        chunk = os.read(read_end, 160 - len(received))
        assert chunk, "the child wrote nothing"
        received += chunk
    os.close(read_end)
    os.waitpid(child, 0)
    from_child = {uuid.UUID(bytes=received[i : i + 16]) for i in range(0, 160, 16)}
    from_parent = {ids.uuid4() for _ in range(10)}
    assert not from_child & from_parent
