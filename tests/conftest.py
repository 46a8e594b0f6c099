import pytest

from tests.procs import Proc


@pytest.fixture
def procs():
    """Start component processes; every one is stopped when the test ends."""
    started: list[Proc] = []

    def start(args, **kw) -> Proc:
        p = Proc(args, **kw)
        started.append(p)
        return p

    yield start
    for p in reversed(started):
        p.kill()
        for stream in (p.proc.stdout, p.proc.stderr):
            if stream:
                stream.close()
