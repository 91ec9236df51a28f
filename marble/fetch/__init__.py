"""Getting the datasets: per-dataset recipes (``recipes``), resumable verified downloads (``http``),
atomic extraction (``archives``), the install step with its manifest (``install``) and ``verify``."""
