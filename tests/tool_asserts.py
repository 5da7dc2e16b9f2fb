"""Assertions shared by the tests that run tools as subprocesses."""


def assert_user_error(proc, *fragments):
    """A user mistake: exit code 2, exactly one ``error: ...`` line naming every fragment, no traceback.

    Returns the error line.
    """
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for f in fragments:
        assert str(f) in lines[0], lines[0]
    return lines[0]
