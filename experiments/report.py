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

