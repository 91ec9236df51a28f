"""Layer-wise feature caches: on-disk format (``store``) and the extraction pipeline (``extract``: units,
manifest, merging), with its parts by job: ``decode`` (worker processes), ``encode`` (batched encoder
runs and their checks), ``checksums`` (what identifies the input), ``duplicates`` (the same file twice)."""
