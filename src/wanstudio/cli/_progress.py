"""A download progress bar on stderr when it is a terminal; silence otherwise (logs say what happened)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from wanstudio.orchestrator.orchestrator import DownloadProgress, ProgressListener


@contextmanager
def download_progress(*, enabled: bool) -> Iterator[ProgressListener | None]:
    """Yield a listener that draws one bar per ensure (bytes, rate, ETA), or None when not `enabled`."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task_id = None

        def listener(event: DownloadProgress) -> None:
            nonlocal task_id
            description = escape(f"{event.model} [{event.variant}] {event.files_done}/{event.files_total} files")
            if task_id is None:
                task_id = bar.add_task(description, total=event.bytes_total)
            bar.update(task_id, completed=event.bytes_done, total=event.bytes_total, description=description)

        yield listener
