"""One epoch of training and an evaluation, as plain functions that return numbers, and the
losses they minimise."""

import contextlib

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import eval_batch_size


class CrossEntropy:
    """Cross-entropy on the labels, with label smoothing (Szegedy et al., 2016): the target
    puts `label_smoothing` of its mass evenly on all classes."""

    def __init__(self, label_smoothing=0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, logits, images, labels):
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


cross_entropy = CrossEntropy()


class Distillation:
    """Knowledge distillation (Hinton et al., 2015): the labels' cross-entropy mixed with the
    KL divergence from the teacher's outputs, both softened by the temperature (the T^2
    factor keeps the soft term's gradients the size of the hard term's)."""

    def __init__(self, teacher, weight, temperature, label_smoothing=0.0):
        self.teacher, self.weight, self.temperature = teacher, weight, temperature
        self.hard = CrossEntropy(label_smoothing)

    def __call__(self, logits, images, labels):
        t = self.temperature
        with torch.no_grad():
            soft_targets = F.softmax(self.teacher(images).float() / t, dim=1)
        soft = F.kl_div(F.log_softmax(logits.float() / t, dim=1), soft_targets, reduction="batchmean") * t * t
        return (1 - self.weight) * self.hard(logits, images, labels) + self.weight * soft


def train_one_epoch(model, optimizer, pixels, labels, normalise, batch_size, generator, amp, loss_fn=cross_entropy,
                    augment=None):
    """One pass over shuffled batches of the in-memory `pixels`, each normalised (`normalise`),
    then augmented if `augment` is given, in `amp`'s precision, minimising loss_fn(logits,
    images, labels). Returns (mean loss, accuracy % on the batches as trained)."""
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    total_loss = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for start in progress(range(0, len(labels), batch_size)):
        idx = order[start:start + batch_size]
        x, y = normalise(pixels[idx]), labels[idx]
        if augment:
            x = augment(x, generator)
        optimizer.zero_grad(set_to_none=True)
        with amp.autocast():
            logits = model(x)
            loss = loss_fn(logits, x, y)
        amp.step(loss, optimizer)
        total_loss += loss.detach() * len(y)  # summed on the device: no sync per batch
        correct += (logits.argmax(1) == y).sum()
    return total_loss.item() / len(labels), 100.0 * correct.item() / len(labels)


def progress(batches, file=None, delay=3.0):
    """A progress bar on a terminal (stderr) once an epoch has run `delay` seconds; nothing
    in a log file or pipe, which keeps one `epoch=` line per epoch."""
    return tqdm(batches, desc="train", unit="batch", leave=False, delay=delay, file=file, disable=None)


def evaluate(model, pixels, labels, normalise, amp=None):
    """Accuracy % on `pixels` (each batch normalised by `normalise`) in eval mode, under inference mode (no autograd records at all), in `amp`'s
    precision if given (the training precision: cheaper per epoch; what a run reports at its end
    is evaluated in fp32, as exported), in batches of data.eval_batch_size."""
    model.eval()
    batch_size = eval_batch_size(pixels)
    with torch.inference_mode(), (amp.autocast() if amp else contextlib.nullcontext()):
        correct = sum((model(normalise(pixels[i:i + batch_size])).argmax(1) == labels[i:i + batch_size]).sum()
                      for i in range(0, len(labels), batch_size))
    return 100.0 * int(correct) / len(labels)
