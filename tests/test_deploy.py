"""experiments/common/deploy.py on rows made by hand: the winner is chosen by validation, never by test,
and the answer says "helped" or "did not help" only where the seeds' spreads do not overlap."""
from pathlib import Path

from experiments.common import deploy


def row(budget, method, val, test):
    records = [{"val_acc": v, "test_acc": t, "seed": s, "onnx": {"test_acc": t}} for s, (v, t) in
               enumerate(zip(val, test), 1)]
    return {"budget": budget, "method": method, "n": len(records), "records": records,
            "test_acc": [r["test_acc"] for r in records]}


def test_the_winner_is_the_best_method_and_seed_on_validation_whatever_test_says():
    rows = [row(100, "plain", val=[90, 91], test=[95, 96]),     # the best on test, not on validation
            row(100, "pruned", val=[92, 94], test=[80, 81]),
            row(200, "plain", val=[90, 91], test=[90, 90]),
            row(200, "pruned", val=[92], test=[92])]            # a seed missing: no winner at 200 yet
    picks = deploy.chosen(rows, seeds=2)
    assert list(picks) == [100]
    chosen_row, record = picks[100]
    assert (chosen_row["method"], record["seed"]) == ("pruned", 2)


def test_the_answer_resolves_a_difference_only_beyond_the_seeds_spread():
    def answer(dendritic, matched):
        rows = [row(100, "dendritic", val=dendritic, test=dendritic), row(100, "matched", val=matched, test=matched)]
        return deploy.answer(rows, {100: (rows[1], rows[1]["records"][0], None)}, "t", Path("."))
    assert "dendrites did not help" in answer([80, 81], [85, 86])
    assert "dendrites helped" in answer([90, 91], [85, 86])
    assert "no difference the seeds can resolve" in answer([84, 88], [85, 86])  # 86 ± 2.8 overlaps 85.5 ± 0.7
    assert "use **matched** (the best on validation)." in answer([80, 81], [85, 86])
