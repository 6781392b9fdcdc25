"""Numbers and figures the experiments' reports share: mean ± std over seeds, and plots drawn
off-screen."""

import statistics


def mean_std(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(pair, digits=2):
    """A (mean, std) pair as `mean ± std`."""
    return f"{pair[0]:,.{digits}f} ± {pair[1]:,.{digits}f}"


def new_figure():
    """A figure drawn off-screen (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5))


def save_figure(fig, ax, path, xlabel, ylabel, title):
    """Accuracy against parameters on a log scale, labelled, saved and closed."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def deployment_table(groups, key_header):
    """What deploying each group's models pays, mean ± std over its seeds: the fp32 ONNX file's
    bytes and ONNX Runtime milliseconds on one thread, the int8 file's test accuracy, bytes and
    milliseconds. `groups`: [(key cells, records)]. Records made before ONNX export existed have
    none of it: their cells are blank, and the report says so."""
    if not any(r["onnx"] for _, records in groups for r in records):
        return ["Deployment (bytes, ONNX Runtime milliseconds, int8): not measured for these runs, which were "
                "recorded before ONNX export existed.", ""]
    lines = ["Deployment: ONNX Runtime on one CPU thread, median ms per forward pass; fp32 is model.onnx, int8 "
             "model.int8.onnx (static quantization calibrated on training images). Mean ± std over the seeds that "
             "have it; blank: recorded before ONNX export, or not quantized.", "",
             f"| {key_header} | fp32 bytes | fp32 ms, batch 1 | fp32 ms, batch 256 | int8 test acc % | int8 bytes "
             "| int8 ms, batch 1 | int8 ms, batch 256 |",
             "|" + "---|" * (len(key_header.split(" | ")) + 7)]
    for key, records in groups:
        onnx, int8 = [r["onnx"] for r in records if r["onnx"]], [r["int8"] for r in records if r["int8"]]

        def cells(models, fields):
            return [fmt(mean_std([get(m) for m in models]), digits) if models else "" for get, digits in fields]
        ms = [(lambda m, b=b: m["ort_ms"][b], 3 if b == "1" else 2) for b in ("1", "256")]
        row = (cells(onnx, [(lambda m: m["bytes"], 0), *ms])
               + cells(int8, [(lambda m: m["test_acc"], 2), (lambda m: m["bytes"], 0), *ms]))
        lines.append(f"| {' | '.join(key)} | " + " | ".join(row) + " |")
    return lines + [""]
