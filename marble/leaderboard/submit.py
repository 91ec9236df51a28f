"""``marble submit``: check a model's results and put them on a new branch of a leaderboard repository.

Every check runs before anything is written, so a refused submission leaves the repository exactly as
it was. An accepted one becomes one commit on a new branch ``submit/<model>@<revision>``, built with
a private index (``GIT_INDEX_FILE``): the user's working tree, index and current branch are not
touched. The user pushes the branch and opens a pull request; maintainers review and merge.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from marble.errors import MarbleError
from marble.leaderboard.repo import MODEL_JSON, MODELS, folder_name, model_json_errors, read_config
from marble.results import result_bytes


class SubmissionRefused(MarbleError):
    """The submission failed a check; ``reasons`` holds one ``"<file>: <reason>"`` line per problem."""

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__(f"submission refused ({len(self.reasons)} problem(s)); the leaderboard repository "
                         "was not changed:\n" + "\n".join(f"  {r}" for r in self.reasons))


@dataclass
class Submission:
    branch: str
    commit: str
    folder: str  # models/<slug>@<revision>
    files: list[str]
    tasks: list[str]
    marble_score: float | None
    missing_tasks: list[str] = field(default_factory=list)
    pushed: bool = False

    def hint(self, remote: str = "origin") -> str:
        """What to run and write to open the pull request."""
        score = (f"MARBLE score {self.marble_score:.1f}" if self.marble_score is not None else
                 f"{len(self.tasks)} of {len(self.tasks) + len(self.missing_tasks)} tasks, no MARBLE score "
                 f"(missing: {', '.join(self.missing_tasks)})")
        push = "" if self.pushed else f"  git push {remote} {self.branch}\n"
        return (f"submission committed on branch {self.branch} ({self.commit[:12]}): {self.folder}, "
                f"{len(self.files)} file(s); {score}\n"
                f"next:\n{push}  then open a pull request from {self.branch} titled "
                f"\"Add {self.folder}\" and paste this summary into its description.")


def _git(repo: Path, *args: str, env: dict | None = None, input: bytes | None = None) -> str:
    try:
        p = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True,
                           env={**os.environ, **(env or {})}, check=False)
    except FileNotFoundError:
        raise MarbleError("git not found; install git to submit results") from None
    if p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip().splitlines()
        raise MarbleError(f"{repo}: git {' '.join(args[:2])} failed: {msg[-1] if msg else p.returncode}")
    return p.stdout.decode().strip()


def encoder_fingerprint(result: dict) -> str:
    """What identifies the encoder a result came from: its weights hash when recorded, else its whole
    manifest identity (name, config, dims)."""
    enc = (result.get("manifest") or {}).get("encoder") or {}
    if enc.get("weights_sha256"):
        return f"weights sha256 {enc['weights_sha256']}"
    return "identity " + json.dumps(enc, sort_keys=True)


def _short(fp: str) -> str:
    import hashlib

    return fp if len(fp) < 40 else hashlib.sha256(fp.encode()).hexdigest()[:12] if fp.startswith("identity") else fp[:28]


def submit(results_dir: str | os.PathLike, model: str, repo: str | os.PathLike, *, info: str | os.PathLike | None = None,
           cards: dict | None = None, push: bool = False, remote: str = "origin") -> Submission:
    """Check every result of ``model`` under ``results_dir`` and commit the accepted set on a new branch of
    the leaderboard repository ``repo`` (a clone). Raises :class:`SubmissionRefused` listing every problem."""
    from marble.io import slug
    from marble.metrics.aggregate import default_task_ids, marble_score
    from marble.leaderboard.table import _cell
    from marble.registry import all_cards
    from marble.results.submission import check_file

    repo, results_dir = Path(repo), Path(results_dir)
    cards = cards or all_cards()
    if not (repo / ".git").exists():
        _git(repo, "rev-parse", "--git-dir")  # also accepts a linked worktree; raises with git's reason otherwise
    cfg = read_config(repo)
    model_dir = results_dir / slug(model)
    if not model_dir.is_dir():
        raise MarbleError(f"{model_dir}: no results of model {model!r} (run `marble probe --model {model}` with "
                          f"--results-dir {results_dir} first)")

    reasons: list[str] = []
    info_path = Path(info) if info else model_dir / MODEL_JSON
    try:
        meta = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MarbleError(f"{info_path}: no model.json describing the model; write one (fields: "
                          f"{', '.join(_model_template())}) or pass --info FILE; see docs/leaderboard.md") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MarbleError(f"{info_path}: not valid JSON ({e})") from None
    reasons += [f"{info_path}: {e}" for e in model_json_errors(meta)]
    if isinstance(meta, dict):
        if meta.get("source", "ours") != "ours":
            reasons.append(f"{info_path}: field 'source': a submission is 'ours' (published numbers are added by maintainers)")
        if meta.get("name") not in (None, model):
            reasons.append(f"{info_path}: field 'name': {meta['name']!r} but the submitted model is {model!r}")
    if reasons:
        raise SubmissionRefused(reasons)
    track = meta["track"]

    files = sorted(model_dir.glob(f"*/{track}.json"))
    if not files:
        raise MarbleError(f"{model_dir}: no {track}-track results (<task>/{track}.json) to submit")
    tasks_cfg = cfg["tasks"]
    accepted: list[tuple[Path, dict]] = []
    for f in files:
        c = check_file(f, cards)
        if not c.accepted:
            reasons += c.reasons()
            continue
        r = c.result
        if r["model"] != model:
            reasons.append(f"{f}: field 'model': {r['model']!r} but the submitted model is {model!r}")
        if r["source"] != "ours":
            reasons.append(f"{f}: field 'source': {r['source']!r}; only results computed with marble ('ours') are submitted")
        if f.parent.name != r["task"] or r["track"] != track:
            reasons.append(f"{f}: holds task {r['task']!r}, track {r['track']!r}; expected {f.parent.name}/{track}")
        known = tasks_cfg.get(r["task"])
        if known is None:
            reasons.append(f"{f}: task {r['task']!r} is not a task of this leaderboard ({repo / 'leaderboard.json'})")
        elif r["task_version"] not in known.get("versions", []):
            reasons.append(f"{f}: task card {r['task']} version {r['task_version']} is not known to this leaderboard "
                           f"(it accepts version(s) {', '.join(map(str, known.get('versions', [])))})")
        accepted.append((f, r))

    prints: dict[str, list[str]] = {}
    for f, r in accepted:
        prints.setdefault(encoder_fingerprint(r), []).append(r["task"])
    if len(prints) > 1:
        parts = "; ".join(f"{', '.join(t)}: encoder {_short(fp)}" for fp, t in prints.items())
        reasons.append(f"{model_dir}: results of {len(prints)} different encoders under the one name {model!r} "
                       f"({parts}); submit each encoder under its own name and revision")

    folder = f"{MODELS}/{folder_name(model, meta['revision'])}"
    branch = f"submit/{folder_name(model, meta['revision'])}"
    if _git(repo, "ls-tree", "HEAD", "--", folder):
        reasons.append(f"{repo / folder}: this model revision is already on the leaderboard; a new run of the "
                       "same weights replaces it only through a maintainer, new weights need a new 'revision' in "
                       f"{info_path}")
    if _git(repo, "branch", "--list", branch):
        reasons.append(f"{repo}: branch {branch} already exists (an earlier submission); delete it or push it")
    if reasons:
        raise SubmissionRefused(reasons)

    # write: a private index from HEAD + the new files -> one commit -> a new branch
    contents = {f"{folder}/{MODEL_JSON}": (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()}
    for f, r in accepted:  # the canonical form of what was checked, never the submitter's bytes (padding, layout)
        contents[f"{folder}/{r['task']}/{track}.json"] = result_bytes(r)
        for rec in (r.get("artifacts") or {}).values():  # per-item test outputs and the probe (hash-checked above)
            contents[f"{folder}/{r['task']}/{rec['file']}"] = (f.parent / rec["file"]).read_bytes()
    head = _git(repo, "rev-parse", "--verify", "HEAD")
    with tempfile.TemporaryDirectory(prefix="marble-submit-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", head, env=env)
        for path, data in contents.items():
            blob = _git(repo, "hash-object", "-w", "--stdin", input=data)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = _git(repo, "write-tree", env=env)
    tasks = sorted(r["task"] for _, r in accepted)
    bench = default_task_ids()
    scores = {r["task"]: _cell(r, cards[r["task"]], None).score for _, r in accepted}
    ms = marble_score(scores, bench)
    missing = [t for t in bench if t not in scores]
    msg = (f"Add {meta['display_name']} ({model} @ {meta['revision']}), {track} track\n\n"
           f"{len(tasks)} task(s): {', '.join(tasks)}\n"
           + (f"MARBLE score: {ms:.2f}\n" if ms is not None else f"no MARBLE score (missing: {', '.join(missing)})\n")
           + "Submitted with `marble submit`; every file passed `marble leaderboard check --submission`.\n")
    try:
        commit = _git(repo, "commit-tree", tree, "-p", head, "-m", msg)
    except MarbleError as e:
        raise MarbleError(f"{e}; set your git identity (git config user.name / user.email) and submit again") from None
    _git(repo, "update-ref", f"refs/heads/{branch}", commit, "0" * 40)  # fails if the branch appeared meanwhile
    out = Submission(branch, commit, folder, sorted(contents), tasks, ms, missing)
    if push:
        _git(repo, "push", remote, f"{branch}:{branch}")
        out.pushed = True
    return out


def _model_template() -> list[str]:
    from marble.leaderboard.repo import MODEL_FIELDS

    return list(MODEL_FIELDS)


#: encoders without weights (their parameter count is 0 and nothing needs downloading), by the class their results
#: record (``manifest.encoder.class``)
WEIGHT_FREE = ("marble.encoders.handcrafted.HandcraftedEncoder",)


def init_info(results_dir: str | os.PathLike, model: str, out: str | os.PathLike | None = None,
              *, overwrite: bool = False) -> tuple[Path, dict, list[str]]:
    """Write a ``model.json`` template for ``model`` filled from its results under ``results_dir`` (name, track,
    sample rate, revision and, for a weight-free encoder, ``parameters: 0``); what the results cannot tell is
    ``null``, for the user to fill in before ``marble submit`` (which refuses a null). Returns ``(path, info,
    fields left null)``. An existing file is kept unless ``overwrite``."""
    from collections import Counter

    from marble.io import slug, write_json
    from marble.leaderboard.repo import MODEL_FIELDS
    from marble.results import read_result

    model_dir = Path(results_dir) / slug(model)
    files = sorted(model_dir.glob("*/*.json"))
    if not files:
        raise MarbleError(f"{model_dir}: no results of model {model!r} to fill a model.json from (run `marble "
                          f"probe --model {model}` with --results-dir {results_dir} first)")
    path = Path(out) if out else model_dir / MODEL_JSON
    if path.exists() and not overwrite:
        raise MarbleError(f"{path}: already exists; edit it, or remove it to write a new template")
    results = [read_result(f, check=False) for f in files]
    tracks = Counter(r["track"] for r in results)
    encs = [(r.get("manifest") or {}).get("encoder") or {} for r in results]
    enc = encs[0]
    weight_free = bool(encs) and all(e.get("class") in WEIGHT_FREE for e in encs)
    revision = enc.get("revision") or (enc.get("weights_sha256") or "")[:12] or ("v" + str(enc.get("version") or 1))
    info = {"name": model, "revision": str(revision).replace("/", "-"), "display_name": model,
            "parameters": 0 if weight_free else None, "sample_rate": enc.get("sample_rate"),
            "link": None, "license": None, "weights_public": True if weight_free else None,
            "track": tracks.most_common(1)[0][0], "source": "ours",
            "description": f"{len(results)} result(s) under {model_dir}: "
                           + ", ".join(sorted(f"{r['task']} ({r['track']})" for r in results))}
    info = {k: info.get(k) for k in [*MODEL_FIELDS, "description"]}
    write_json(path, info)
    return path, info, [k for k in MODEL_FIELDS if info[k] is None]
