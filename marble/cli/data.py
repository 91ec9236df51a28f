"""``marble data check|download|verify``: is a task's dataset complete, get it, and prove it intact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from marble.cli import options

TARGET_HELP = "A task id (see `marble tasks`), a dataset (gtzan mtt gs emo nsynth vocalset mtg musdb) or 'all'."
DATA_DIR_HELP = "Folder holding the datasets (default ./data)."
MIRROR_HELP = "Base URL that replaces each official host, serving the same paths (a lab mirror)."
REDIRECTS_HELP = ("Follow a redirect to another host for a file with no pinned checksum (refused by default; "
                  "pinned files follow such redirects, and every one is named).")


def resolve_targets(target: str, tasks_dir=None) -> list[tuple[object, tuple[str, ...]]]:
    """(recipe, tasks) pairs for a task id, a dataset name or 'all'. Task ids win over dataset names
    (``gtzan`` is the genre task; ``gtzan-beat`` adds the beat annotations)."""
    from marble.errors import MarbleError
    from marble.fetch.recipes import FAMILY, RECIPES
    from marble.registry import UnknownTaskError, all_cards, get_card

    if target == "all":
        return [(r, r.tasks) for r in RECIPES.values()]
    try:
        card = get_card(target, tasks_dir)
    except UnknownTaskError:
        if target in RECIPES:
            return [(RECIPES[target], RECIPES[target].tasks)]
        known = ", ".join(sorted(set(all_cards(tasks_dir)) | set(RECIPES)))
        raise MarbleError(f"unknown task or dataset {target!r} (known: {known}, all)") from None
    if card.dataset not in FAMILY:
        raise MarbleError(f"task {card.id!r} (dataset family {card.dataset!r}) has no download recipe; "
                                 f"its data source: {card.source.url or 'see the task card'}")
    return [(RECIPES[FAMILY[card.dataset]], (card.id,))]


def _print_check(console, card, report, show_missing: int, source: str) -> None:
    from rich.table import Table

    console.print(f"{card.id}: {report.root}", highlight=False, markup=False, soft_wrap=True)
    table = Table()
    for col in ("split", "expected", "found", "missing", "status"):
        table.add_column(col)
    for s in report.splits:
        table.add_row(s.split, "?" if s.expected is None else str(s.expected), f"{s.found} {s.unit}", str(s.n_missing),
                      _status(s, markup=True))
    console.print(table)
    for s in report.splits:
        if s.note:
            console.print(f"{s.split}: {s.note}", highlight=False, markup=False, soft_wrap=True)
        shown = s.missing[:1] if not s.found and s.missing else s.missing[:show_missing]  # absent: one example
        for m in shown:
            console.print(f"  missing ({s.split}): {_under(m, report.root)}"
                          + (f"  (and {len(s.missing) - 1} more)" if not s.found and len(s.missing) > 1 else ""),
                          highlight=False, markup=False, soft_wrap=True)
    console.print(f"data source: {source}", highlight=False, markup=False, soft_wrap=True)


def _status(s, markup: bool = False) -> str:
    word, colour = ("complete", "green") if s.complete else ("partial", "yellow") if s.found else ("absent", "red")
    return f"[{colour}]{word}[/{colour}]" if markup else word


def _under(path: str, root: Path) -> str:
    """A missing file as a path below its dataset folder (the table's title names the folder)."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _print_summary(console, reports, data_dir, allow_partial: bool) -> None:
    """One line per task after ``check all``: complete / partial / absent, the counts, and the downloads
    that would complete the rest."""
    from rich.table import Table

    table = Table(title="summary")
    for col in ("task", "folder", "found / expected", "status"):
        table.add_column(col)
    todo = []
    for card, report in reports:
        found = sum(s.found for s in report.splits)
        expected = "?" if any(s.expected is None for s in report.splits) else str(sum(s.expected for s in report.splits))
        status = ("complete" if report.complete else
                  "partial" if any(s.found for s in report.splits) else "absent")
        colour = {"complete": "green", "partial": "yellow", "absent": "red"}[status]
        table.add_row(card.id, report.root.name, f"{found} / {expected}", f"[{colour}]{status}[/{colour}]")
        if not report.complete and not (allow_partial and all(s.found > 0 for s in report.splits)):
            todo.append(card.id)
    console.print(table)
    console.print(f"{sum(r.complete for _, r in reports)} of {len(reports)} tasks complete", highlight=False, markup=False)
    where = f" --data-dir {data_dir}" if data_dir else ""
    if todo and len(todo) == len(reports):
        console.print(f"get them: marble data download all{where}", highlight=False, markup=False, soft_wrap=True)
    elif todo:
        console.print("get the rest:", highlight=False, markup=False)
        for t in todo:
            console.print(f"  marble data download {t}{where}", highlight=False, markup=False, soft_wrap=True)


def _instructions(recipe, data_dir) -> str:
    from marble.datasets.base import data_root

    root = data_root(data_dir)
    urls = recipe.urls()
    return recipe.instructions.format(root=root / recipe.subdir, data=root, url=urls[0] if urls else recipe.homepage)


def _source_line(card) -> str:
    from marble.fetch.recipes import FAMILY, RECIPES

    recipe = RECIPES.get(FAMILY.get(card.dataset, ""))
    return recipe.source_summary(frozenset([card.id])) if recipe else (card.source.url or "see the task card")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Get, check and verify the datasets.", no_args_is_help=True, epilog=("Examples:\n\n" "  marble data check gtzan --data-dir ~/data\n\n" "  marble data download gtzan --data-dir ~/data\n\n" "  marble data verify all\n\n"))

    @data_app.command("check")
    def check(
        task: str = typer.Argument(..., help="Task id (see `marble tasks`), a card .toml path, or 'all'."),
        data_dir: Optional[Path] = options.data_dir(DATA_DIR_HELP),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Extra folder of user task cards."),
        allow_partial: bool = typer.Option(False, "--allow-partial", help="Exit 0 when every split has some data."),
        show_missing: int = typer.Option(5, "--show-missing", help="Missing files listed per split."),
    ) -> None:
        """Per split: expected and found counts, a few missing files, the data source; exit 1 if incomplete.

        Example: marble data check all --data-dir ~/data
        """
        from rich.console import Console

        from marble.datasets import get_dataset
        from marble.registry import CardError, UnknownTaskError, all_cards, get_card

        console = Console()
        try:
            cards = list(all_cards(tasks_dir).values()) if task == "all" else [get_card(task, tasks_dir)]
            reports = [(card, get_dataset(card, data_dir).check()) for card in cards]
        except (CardError, UnknownTaskError, ValueError) as e:
            console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
            raise typer.Exit(2)
        ok = True
        for card, report in reports:
            _print_check(console, card, report, show_missing, _source_line(card))
            if report.complete:
                console.print("[green]all splits complete[/green]")
            elif allow_partial and all(s.found > 0 for s in report.splits):
                console.print("[yellow]incomplete, accepted with --allow-partial[/yellow]")
            else:
                ok = False
                console.print(f"get it: marble data download {card.id}" + (f" --data-dir {data_dir}" if data_dir else ""),
                              highlight=False, markup=False, soft_wrap=True)
        if len(reports) > 1:
            _print_summary(console, reports, data_dir, allow_partial)
        if not ok:
            raise typer.Exit(1)

    @data_app.command("download")
    def download(
        target: str = typer.Argument(..., help=TARGET_HELP),
        data_dir: Optional[Path] = options.data_dir(DATA_DIR_HELP),
        mirror: Optional[str] = typer.Option(None, "--mirror", help=MIRROR_HELP),
        allow_redirects: bool = typer.Option(False, "--allow-redirects", help=REDIRECTS_HELP),
        keep_archives: bool = typer.Option(False, "--keep-archives", help="Keep downloaded archives in <dataset>/.marble/downloads."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
        archive: Optional[Path] = typer.Option(None, "--archive", help="Install from an archive you already have "
                                               "(downloaded by hand, e.g. musdb18hq.zip after the access request); its "
                                               "pinned checksum is checked when the file name is the official one."),
    ) -> None:
        """Download, check and extract a dataset in its official layout (resumable: rerun after an interruption).

        Only what the requested tasks need is kept (e.g. `marble data download mtg-moodtheme` fetches the
        mood/theme tars only). Datasets behind an access request print the steps to get them by hand.

        A copy you already have (downloaded by hand) is installed with --archive FILE.

        Examples: marble data download gtzan-beat --data-dir ~/data ;
        marble data download musdb --archive ~/Downloads/musdb18hq.zip ;
        marble data download all --mirror http://mirror.lab/marble
        """
        from marble.datasets.base import data_root
        from marble.fetch.http import check_mirror
        from marble.fetch.install import install, install_local

        mirror = check_mirror(mirror)
        targets = resolve_targets(target)
        if archive is not None:
            if len(targets) != 1:
                raise typer.BadParameter("--archive needs one dataset or task, not 'all'")
            recipe, tasks = targets[0]
            rep = install_local(recipe, archive, data_dir, tasks, log=lambda m: typer.echo("  " + m, err=True))
            typer.echo(f"{recipe.title}: {len(rep.installed)} files installed from {archive}")
            typer.echo(f"next: marble data verify {target}" + (f" --data-dir {data_dir}" if data_dir else ""))
            return
        ok = True
        for recipe, tasks in targets:
            typer.echo(f"{recipe.title} -> {data_root(data_dir) / recipe.subdir} (licence: {recipe.licence}; size: {recipe.size})")
            if recipe.access != "download":
                from marble.fetch.verify import verify

                if verify(recipe, data_dir, tasks, sample=0).complete:
                    typer.echo("  already present and complete")
                    continue
                ok = False
                typer.echo("  not downloadable automatically:\n" + _instructions(recipe, data_dir))
                continue
            if recipe.instructions:  # e.g. GTZAN's host is offline: say so before trying it, not after
                typer.echo("  note: " + _instructions(recipe, data_dir))
            rep = install(recipe, data_dir, tasks, mirror=mirror, keep_archives=keep_archives, quiet=quiet,
                          allow_redirects=allow_redirects, log=lambda m: typer.echo("  " + m, err=True))
            typer.echo(f"  {len(rep.installed)} files installed, {len(rep.skipped)} sources already done, {len(rep.failed)} failed")
            _print_failed(rep)
            if rep.failed:
                ok = False
                if recipe.instructions:
                    typer.echo("  see the note above for other ways to get it")
        typer.echo(f"next: marble data verify {target}" + (f" --data-dir {data_dir}" if data_dir else ""))
        if not ok:
            raise typer.Exit(1)

    @data_app.command("verify")
    def verify_cmd(
        target: str = typer.Argument(..., help=TARGET_HELP),
        data_dir: Optional[Path] = options.data_dir(DATA_DIR_HELP),
        fix: bool = typer.Option(False, "--fix", help="Re-fetch only the missing, truncated or corrupt files."),
        mirror: Optional[str] = typer.Option(None, "--mirror", help=MIRROR_HELP + " Used by --fix."),
        allow_redirects: bool = typer.Option(False, "--allow-redirects", help=REDIRECTS_HELP + " Used by --fix."),
        sample: int = typer.Option(10, "--sample", help="Audio files decoded in full per dataset."),
        deep: bool = typer.Option(False, "--deep", help="Hash every file with a known checksum (published or recorded at download)."),
        show: int = typer.Option(10, "--show", help="Problem files listed per kind."),
    ) -> None:
        """Counts against the official split, sizes recorded at download, WAV headers, published checksums
        and a decode test of a sample; lists missing / deleted / truncated / corrupt files; exit 1 if any.

        Works on a copy you obtained yourself (e.g. MUSDB18). Example: marble data verify gs --fix
        """
        from marble.fetch.http import check_mirror
        from marble.fetch.install import install, leaving, remove_bad
        from marble.fetch.verify import verify

        mirror = check_mirror(mirror)
        ok, repairable = True, False
        for recipe, tasks in resolve_targets(target):
            rep = _verify_or_exit(verify, recipe, data_dir, tasks, sample=sample, deep=deep)
            _print_verify(rep, show)
            if rep.complete:
                continue
            if fix and recipe.access == "download":
                # wrong files go first (nothing wrong may pass as present), then only their sources are fetched;
                # with no file-level problem (e.g. an index file never downloaded) the whole recipe is run
                refused = leaving(rep.root, sorted(rep.problems))
                for rel, why in refused.items():
                    typer.echo(f"  refused: {rel}: {why}")
                remove_bad(rep.root, [p.rel for p in rep.problems.values()
                                      if p.kind in ("truncated", "corrupt") and p.rel not in refused])
                only = set(rep.problems) - set(refused)
                if rep.problems and not only:
                    typer.echo("fix: nothing to fetch")
                else:
                    res = install(recipe, data_dir, tasks, mirror=mirror, only=only or None, quiet=True,
                                  allow_redirects=allow_redirects, log=lambda m: typer.echo("  " + m, err=True))
                    typer.echo(f"fix: {len(res.installed)} files fetched, {len(res.failed)} sources failed")
                    _print_failed(res)
                rep = _verify_or_exit(verify, recipe, data_dir, tasks, sample=sample, deep=deep)
                _print_verify(rep, show)
            if not rep.complete:
                ok = False
                if recipe.access != "download":
                    typer.echo(_instructions(recipe, data_dir))
                else:
                    repairable = True
        if repairable and not fix:
            typer.echo(f"repair: marble data verify {target} --fix" + (f" --data-dir {data_dir}" if data_dir else ""))
        if not ok:
            raise typer.Exit(1)

    app.add_typer(data_app, name="data")


def _print_failed(rep) -> None:
    """The failures ``install`` did not print as they happened (it prints the first few), as a count."""
    more = len(rep.failed) - rep.shown
    if more > 0:
        skipped = f", {rep.not_tried} of them not tried: their host could not be reached" if rep.not_tried else ""
        typer.echo(f"  ... and {more} more failed sources{skipped} (rerun to retry; finished files are kept)")


def _verify_or_exit(verify, recipe, data_dir, tasks, **kw):
    """``verify``; a malformed card or metadata file becomes an ``error:`` line and exit 2 (as in ``check``)."""
    from marble.registry import CardError

    try:
        return verify(recipe, data_dir, tasks, **kw)
    except (CardError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)


def _print_verify(rep, show: int) -> None:
    counts = "; ".join(
        f"{c.task} " + " ".join(f"{s.split} {s.found}/{'?' if s.expected is None else s.expected}" for s in c.splits)
        for c in rep.checks)
    typer.echo(f"{rep.recipe.name}: {rep.root}: {counts}")
    typer.echo(f"  {rep.present} files present, {len(rep.decoded)} decoded, {rep.hashed} hashed")
    for note in dict.fromkeys(s.note for c in rep.checks for s in c.splits if s.note):
        typer.echo(f"  {note}")
    for kind in ("missing", "deleted", "truncated", "corrupt"):
        probs = rep.by_kind(kind)
        if probs:
            typer.echo(f"  {kind}: {len(probs)}")
            for p in sorted(probs, key=lambda p: p.rel)[:show]:
                typer.echo(f"    {p.rel}" + (f" ({p.detail})" if p.detail else ""))
    typer.echo("  status: " + ("complete" if rep.complete else "INCOMPLETE"))
