"""Records of runs made by older versions, brought up to date: what each setting added since the
first records was before it existed, and what was measured only since.

A run's record (results.json) carries its resolved RunConfig in "settings" and a schema number.
"""

SCHEMA = 2  # of a run's record; 1: before RunConfig (no "schema" key)

# What each setting added since the first records was before it existed: a run recorded
# earlier was trained so.
BEFORE_IT_EXISTED = {"recipe": "default", "weight_decay": 0.0, "warmup": 0, "label_smoothing": 0.0, "augment": "none",
                     "channels_last": False, "switch": "history", "train_images": None,
                     "prune_importance": "magnitude", "precision": "fp32"}
MEASURED_SINCE = ("inference_ms", "onnx", "int8")  # a sweep record's fields added since; None before


def migrate(record):
    """A record of a run brought up to date (a copy; the record itself is left): a run's
    results.json, or a sweep's record of one (experiments/common/runner.py: its run's settings, final
    metrics and exported files). Schema 1 (no "schema" key) held the command line's namespace,
    from before some settings existed: those take the values the run was trained with; what was
    measured only since is None."""
    if record.get("schema", 1) >= SCHEMA or "settings" not in record:
        return record
    settings = {**BEFORE_IT_EXISTED, "cpu": None, **record["settings"]}  # cpu: not recorded then
    settings.setdefault("schedule_epochs", settings["epochs"])  # the cosine schedule spanned the cap
    for mode in ("given", "out", "evaluate", "resume"):  # the command line's, not the run's
        settings.pop(mode, None)
    if "format" not in record:  # a sweep's record of a run; the precision it trained in recorded since
        precision = settings["precision"] or BEFORE_IT_EXISTED["precision"]  # None: from before --precision
        return {**dict.fromkeys(MEASURED_SINCE), "precision": precision, **record, "settings": settings}
    final = record["final"] and {"inference_ms": None, **record["final"]}  # timed since (onnx, int8: optional)
    return {"precision": {"chosen": settings["precision"]}, **record,  # auto's choice recorded since
            "schema": SCHEMA, "settings": settings, "final": final}
