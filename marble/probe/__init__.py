"""Probes on frozen features, one engine for every task: ``run.run_probe`` dispatches on the card's
prediction type to the clip runner (``clip``: batched sweep ``sweep`` on cached clip features,
validation choice and file/song aggregation ``select``, head/grid plans ``config``) or the frame-task
runner (``sequence``, on the frame engine ``frames``); heads come from ``heads.HEADS`` by the card's
``head.kind``; every result goes through ``report``."""
