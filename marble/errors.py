"""The common base of marble's user-facing errors: bad input, missing data or cache, malformed
cards or results. The CLI prints their message (which names the file and the fix) without a
traceback and exits with status 2; anything else is a bug and keeps its traceback."""


class MarbleError(Exception):
    pass


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a command that works through several pieces (tasks, files): says how many finished, so the user
    knows what a rerun resumes. The CLI prints it and exits 130."""

    def __init__(self, finished: int, total: int, what: str = "tasks", detail: str = ""):
        super().__init__(finished, total, what, detail)
        self.finished, self.total, self.what, self.detail = finished, total, what, detail

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return (f"interrupted; {self.finished} of {self.total} {self.what} finished{detail}, "
                "rerun the same command to resume")
