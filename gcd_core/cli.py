"""The ``gcd`` command: ``gcd train``, ``gcd generate`` and ``gcd inspect``.

Errors a user can fix (``GCDError``, bad arguments, missing or unreadable files) end the command with one line
``gcd: error: <reason>`` on stderr and a non-zero exit code; set ``GCD_DEBUG=1`` to see the traceback instead.
``python -m gcd_core.cli`` is the same command, so ``torchrun -m gcd_core.cli train ...`` trains with DDP.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from gcd_core import __version__
from gcd_core.checkpoint import DEFAULT_CRYSTAL_MODEL, DEFAULT_POLISH_MODEL, DEFAULT_XANES_MODEL
from gcd_core.errors import GCDError
from gcd_core.guidance import BRAGG_REFINE_ABOVE, SP3_REFINE_BELOW
from gcd_core.polish import POLISH_NOISE, POLISH_STEPS

PROG = "gcd"
EXIT_ERROR = 1
EXIT_USAGE = 2
MAX_CURVE_POINTS = 50


class _UsageError(Exception):
    """An argparse error, raised instead of argparse's print-usage-and-exit so main() reports one line."""


class _HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default where it has one worth showing (not None, False or already in the help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default == argparse.SUPPRESS  # 0 is a real default
        if hidden or "default" in text or not action.option_strings:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        return f"{text} (default: {shown})".strip()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# ------------------------------------------------------------------------------------------------ parsing
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def _noise_time(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a noise time in (0, 1], got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


_positive_int.__name__ = "positive integer"  # argparse names the type in its "invalid ... value" message
_positive_float.__name__ = "positive number"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gcd`` command and its subcommands."""
    from gcd_core.data.crystals import PHASES
    from gcd_core.diffusion.objective import PREDICTIONS
    from gcd_core.diffusion.schedules import SCHEDULES
    from gcd_core.io import FORMATS
    from gcd_core.representation.grid import ENCODINGS
    from gcd_core.training.trainer import TrainConfig

    defaults = TrainConfig()
    parser = _Parser(
        prog=PROG,
        description="Grand canonical diffusion: train, inspect and sample voxel-grid diffusion models of atoms.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # ---------------------------------------------------------------------------------------------- train
    p = sub.add_parser(
        "train",
        help="train a model (resumes from OUT_DIR/checkpoint.pt)",
        description="Train a model on structures from files or on one ideal crystal. Writes "
        "OUT_DIR/checkpoint.pt (training state; a later run with the same model options resumes from it), "
        "OUT_DIR/model.pt (EMA weights for inference) and OUT_DIR/model.json (metadata). "
        "Runs under torchrun for data-parallel training.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="output directory")
    data = p.add_argument_group("data (one of --structures / --crystal / --carbon / --gb-search)")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--structures",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="structure files or directories (any ASE-readable format, all frames)",
    )
    source.add_argument(
        "--crystal",
        nargs="+",
        choices=sorted(PHASES),
        metavar="PHASE",
        help=f"train on ideal crystals: {', '.join(sorted(PHASES))}; several phases make a phase-conditional "
        "model (classifier-free), each phase on its own voxel grid unless --voxel-size is given",
    )
    source.add_argument(
        "--carbon",
        nargs="?",
        const="default",
        metavar="ROOT",
        help="the amorphous-carbon cells (training split by structure; default ROOT: ../shared/data/a-C)",
    )
    source.add_argument(
        "--gb-search",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="grain-boundary windows of the lowest-energy structures of `gcd gb-search` folders (one GB model, "
        "each GB system its own class on its own voxels)",
    )
    data.add_argument("--gb-per-n", type=_positive_int, default=4, metavar="K",
                      help="--gb-search: the K lowest-energy structures of each [n]")
    data.add_argument("--gb-condition-n", action="store_true",
                      help="--gb-search: also condition on the GB atom density [n] (classifier-free)")
    data.add_argument(
        "--spectrum-condition",
        action="store_true",
        help="condition on each structure's mean XANES spectrum (classifier-free); needs site spectra",
    )
    data.add_argument(
        "--supercell",
        nargs="+",
        type=_positive_int,
        metavar="N",
        help="crystal supercell: N or NX NY NZ conventional cells (default: each phase's 8^3-voxel training cell)",
    )
    data.add_argument(
        "--cell-multiples",
        nargs="+",
        type=_positive_int,
        default=[1],
        metavar="M",
        help="crystal cells M times the supercell along every edge (several sizes train one model)",
    )
    data.add_argument(
        "--phase-weight",
        nargs=2,
        action="append",
        metavar=("PHASE", "W"),
        default=[],
        help="draw this phase's cells W times as often as the others (repeatable; a phase that learns slowly)",
    )
    data.add_argument(
        "--balance-densities",
        action="store_true",
        help="carbon: draw every 0.5 g/cm3 density bin equally often (the data hold five 1.5 g/cm3 cells per 3.5 one)",
    )
    data.add_argument("--element", help="crystal element (default: the phase's own)")
    data.add_argument("--a", type=_positive_float, help="crystal lattice constant a (A)")
    data.add_argument("--c", type=_positive_float, help="crystal lattice constant c (A, hcp)")
    data.add_argument(
        "--labels-from-info",
        metavar="KEY",
        help="class-conditional model: each structure's atoms.info[KEY] is its label",
    )

    grid = p.add_argument_group("voxel grid")
    grid.add_argument(
        "--voxel-size", type=_positive_float, metavar="A", help="voxel edge (A); required unless --crystal"
    )
    grid.add_argument("--encoding", choices=ENCODINGS, default="sharp", help="occupancy encoding")
    grid.add_argument("--blob-sigma", type=_positive_float, default=1.0, metavar="S", help="smooth blob width (voxels)")
    grid.add_argument(
        "--species", nargs="+", metavar="X", help="species channels (default: sorted species of the data)"
    )

    net = p.add_argument_group("network and diffusion")
    net.add_argument("--base-channels", type=_positive_int, default=32, metavar="N", help="U-Net width")
    net.add_argument(
        "--channel-mults",
        nargs="+",
        type=_positive_int,
        default=[1, 2, 2],
        metavar="M",
        help="width multiplier per level; grids must be multiples of 2^(levels-1) voxels",
    )
    net.add_argument("--num-res-blocks", type=_positive_int, default=1, metavar="N", help="per level")
    net.add_argument(
        "--self-condition",
        action="store_true",
        help="the network also reads its previous clean-grid estimate (Chen et al., Analog Bits); with "
        "--init-from a model without it, the new input starts at zero weight",
    )
    net.add_argument("--schedule", choices=sorted(SCHEDULES), default="cosine", help="noise schedule")
    net.add_argument("--prediction", choices=PREDICTIONS, default="x0", help="what the network predicts")

    opt = p.add_argument_group("training")
    opt.add_argument(
        "--steps",
        type=_positive_int,
        default=defaults.steps,
        metavar="N",
        help="total steps, counting those of a resumed checkpoint",
    )
    opt.add_argument(
        "--batch-size",
        type=_positive_int,
        default=defaults.batch_size,
        metavar="N",
        help="per process, for the smallest grid (larger grids take proportionally fewer structures)",
    )
    opt.add_argument("--lr", type=_positive_float, default=defaults.lr, help="peak learning rate (AdamW)")
    opt.add_argument(
        "--warmup-steps", type=_positive_int, default=defaults.warmup_steps, metavar="N", help="linear lr warm-up"
    )
    opt.add_argument("--ema-decay", type=_fraction, default=defaults.ema_decay, metavar="D", help="EMA of the weights")
    opt.add_argument(
        "--grad-clip", type=_positive_float, default=defaults.grad_clip, metavar="NORM", help="gradient norm cap"
    )
    opt.add_argument(
        "--occupied-weight",
        type=_non_negative_float,
        default=defaults.occupied_weight,
        metavar="W",
        help="extra loss weight on occupied voxels",
    )
    opt.add_argument(
        "--split-sites",
        type=_fraction,
        default=defaults.split_sites,
        metavar="P",
        help="share of structures trained from an input with doubled sites (an atom split over two voxels, at "
        f"noise times up to {defaults.split_sites_below}) back to the clean grid, so the net learns to undo them; "
        "sharp encoding, x0 prediction",
    )
    opt.add_argument(
        "--drop-probability",
        type=_fraction,
        default=defaults.drop_probability,
        metavar="P",
        help="conditioning dropout (classifier-free guidance)",
    )
    opt.add_argument(
        "--time-range",
        nargs=2,
        type=float,
        default=list(defaults.time_range),
        metavar=("LO", "HI"),
        help="draw noise times uniformly from [LO, HI] (fine-tune one part of the trajectory)",
    )
    opt.add_argument(
        "--fit-steps-to-budget",
        action="store_true",
        help="with --time-budget: every 200 steps, set --steps (never higher) to what the rest of the budget "
        "allows, so the learning rate still decays to its end",
    )
    opt.add_argument(
        "--checkpoint-every", type=_positive_int, default=defaults.checkpoint_every, metavar="N", help="steps"
    )
    opt.add_argument("--log-every", type=_positive_int, default=defaults.log_every, metavar="N", help="steps")
    opt.add_argument("--seed", type=int, default=defaults.seed, help="initial weights, batches and noise")
    opt.add_argument(
        "--time-budget",
        type=_positive_float,
        metavar="SECONDS",
        help="stop (and checkpoint) after this much training time",
    )
    opt.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    opt.add_argument("--no-resume", action="store_true", help="start afresh even if OUT_DIR has a checkpoint")
    opt.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL",
        help="start from these weights (a model.pt of the same network; fresh optimizer and schedule)",
    )
    p.set_defaults(func=cmd_train)

    # ------------------------------------------------------------------------------------------- generate
    p = sub.add_parser(
        "generate",
        help="sample structures from a trained model",
        description="Sample structures in a cell of your choice (sides must give voxel counts that are "
        "multiples of the network's stride).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        type=Path,
        nargs="?",
        default=DEFAULT_CRYSTAL_MODEL,
        help="model.pt or checkpoint.pt (default: the shipped phase-conditional crystal model)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="PATH",
        help="directory (one file per sample) or, with --one-file, a file",
    )
    cell = p.add_mutually_exclusive_group(required=True)
    cell.add_argument("--cell", nargs=3, type=float, metavar=("LX", "LY", "LZ"), help="cell edges (A)")
    cell.add_argument(
        "--supercell",
        nargs="+",
        type=_positive_int,
        metavar="N",
        help="N or NX NY NZ times the model's training cell (of the --label class, if it has its own)",
    )
    p.add_argument("--num-samples", type=_positive_int, default=1, metavar="N", help="structures to generate")
    p.add_argument("--steps", type=_positive_int, default=200, metavar="N", help="sampler steps")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddpm", help="ddpm (ancestral) or ddim")
    p.add_argument(
        "--resample", type=_positive_int, default=1, metavar="R", help="take each step R times, re-noising between"
    )
    p.add_argument(
        "--resample-window",
        type=_unit_interval,
        nargs=2,
        default=(0.0, 1.0),
        metavar=("LO", "HI"),
        help="resample only the steps that start at noise times LO <= t <= HI (1 is pure noise)",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed and options, same structures")
    p.add_argument("--label", help="class label (conditional models)")
    p.add_argument("--guidance-scale", type=float, default=1.0, metavar="S", help="classifier-free guidance scale")
    target = p.add_argument_group("XANES target (spectrum-conditioned models)")
    source = target.add_mutually_exclusive_group()
    source.add_argument(
        "--target-spectrum", type=Path, metavar="FILE", help="two columns, energy (eV) and intensity; resampled"
    )
    source.add_argument(
        "--target-structure", metavar="NAME", help="the mean spectrum of a cell of the a-C data (e.g. d3.5_2)"
    )
    target.add_argument(
        "--spectrum-guidance",
        type=_non_negative_float,
        default=0.0,
        metavar="G",
        help="gradient guidance toward the target through the XANES forward model (0: off)",
    )
    target.add_argument(
        "--sp3-guidance",
        type=_non_negative_float,
        default=0.0,
        metavar="G",
        help="gradient guidance toward the sp3 fraction the target's pi* peak indicates (or --target-sp3); 0: off",
    )
    target.add_argument(
        "--sp3-refine",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help=f"also N Adam steps of the sp3 loss on each clean estimate at noise times up to {SP3_REFINE_BELOW:g} "
        "(measured: 20 with --sp3-guidance 200)",
    )
    target.add_argument(
        "--target-sp3", type=_unit_interval, metavar="F", help="the sp3 fraction to guide to, instead of the estimate"
    )
    target.add_argument(
        "--bonding-guidance",
        type=_non_negative_float,
        default=0.0,
        metavar="G",
        help="gradient guidance toward the sp / sp2 / sp3 fractions the target's spectrum indicates (or "
        "--target-bonding); it pulls near-bonded two-bonded carbons into bonds (measured: 100); 0: off",
    )
    target.add_argument(
        "--bonding-refine",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="also N Adam steps of the bonding loss on each clean estimate at noise times up to 0.5",
    )
    target.add_argument(
        "--target-bonding",
        type=_unit_interval,
        nargs=3,
        metavar=("SP", "SP2", "SP3"),
        help="the sp / sp2 / sp3 fractions to guide to, instead of the estimate",
    )
    target.add_argument(
        "--xanes-model", type=Path, default=DEFAULT_XANES_MODEL, metavar="PATH", help="the forward model"
    )
    p.add_argument(
        "--fit-grid",
        action="store_true",
        help="lay the cell on the nearest grid the network takes (slightly stretched voxels) instead of refusing it",
    )
    p.add_argument(
        "--merge-distance",
        type=_positive_float,
        metavar="A",
        help="merge atoms closer than this (A), keeping the more occupied one",
    )
    p.add_argument(
        "--exclusion-distance",
        type=_positive_float,
        metavar="A",
        help="while sampling (noise times up to 0.3), of two sites closer than this (A) keep the fuller and empty the "
        "other's voxel, so the network goes on from one atom (e.g. 0.65 x the bond length)",
    )
    p.add_argument(
        "--min-bonds",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="while sampling (noise times 0.05-0.15), empty sites with fewer than N neighbours within --bond-cutoff "
        "and let the network go on without them (2 for amorphous carbon: no dangling chain ends); 0: off",
    )
    p.add_argument(
        "--bond-cutoff", type=_positive_float, metavar="A", help="longest bond (A) for --min-bonds (default 1.85: C)"
    )
    p.add_argument(
        "--bragg-refine",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help=f"crystals: N Adam steps per clean estimate (above noise time {BRAGG_REFINE_ABOVE:g}) toward the strong "
        "Bragg reflections of the --label phase, which pull grains out of register into one (measured: 10); 0: off",
    )
    polish = p.add_argument_group("atom-space polish (carbon)")
    polish.add_argument(
        "--polish",
        action="store_true",
        help="finish the decoded structures' positions with the atom-space refiner (bond lengths as sharp as real "
        "cells'; atoms are neither added nor removed)",
    )
    polish.add_argument(
        "--polish-model", type=Path, default=DEFAULT_POLISH_MODEL, metavar="PATH", help="the position refiner"
    )
    polish.add_argument(
        "--polish-noise", type=_positive_float, default=POLISH_NOISE, metavar="A",
        help=f"noise level (A) the refiner starts from (default {POLISH_NOISE})",
    )
    polish.add_argument(
        "--polish-steps", type=_positive_int, default=POLISH_STEPS, metavar="N",
        help=f"refiner steps (default {POLISH_STEPS})",
    )
    p.add_argument("--format", choices=sorted(FORMATS), default="extxyz", help="file format (vasp: POSCAR)")
    p.add_argument("--one-file", action="store_true", help="all samples in one file (cif, extxyz)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_generate)

    # -------------------------------------------------------------------------------------------- inspect
    p = sub.add_parser(
        "inspect",
        help="show a model's configuration and training metadata",
        description="Show a checkpoint's configuration and training metadata.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="model.pt or checkpoint.pt")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_inspect)

    # ------------------------------------------------------------------------------------------- gb-search
    from gcd_core.data.bicrystal import GB_SYSTEMS

    p = sub.add_parser(
        "gb-search",
        help="grand canonical grain-boundary search with EAM energies (GRIP's method)",
        description="Sample grain boundaries: random in-plane shifts of the upper grain, random removal or "
        "insertion of GB atoms to set [n], an optional MD anneal at a random temperature and length, relaxation "
        "(LAMMPS, EAM) and the GB energy. Appends every result to OUT/gb_search.csv with its structure in "
        "OUT/structures/; a second run into the same folder resumes (seeds already there are skipped). Prints "
        "the lowest E_gb per [n] bin.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("system", choices=sorted(GB_SYSTEMS), help="the grain boundary")
    p.add_argument("out_dir", metavar="OUT", type=Path, help="folder for the table and structures")
    p.add_argument("--samples", type=_positive_int, default=100, help="number of samples (seeds)")
    p.add_argument("--first-seed", type=int, default=0, help="seed of the first sample")
    p.add_argument("--processes", type=_positive_int, default=1, help="worker processes")
    p.add_argument("--repeat", type=_positive_int, nargs=2, metavar=("NX", "NY"),
                   help="in-plane periods (default: the GB model's window)")
    p.add_argument("--anneal-fraction", type=float, default=0.5, help="fraction of samples annealed by MD")
    p.add_argument("--bins", type=_positive_int, default=10, help="[n] bins of the printed summary")
    p.add_argument("--time-budget", type=_positive_float, metavar="S", help="stop starting samples after S seconds")
    p.add_argument("--rescore", action="store_true",
                   help="sample nothing: recompute every stored sample's E_gb with today's definition")
    p.add_argument("--summary", type=Path, metavar="FILE",
                   help="also write the lowest E_gb per [n] bin as JSON (the dashboard draws assets/gb_search/"
                   "SYSTEM.json beside generated GBs)")
    p.set_defaults(func=cmd_gb_search)

    # ----------------------------------------------------------------------------------------- gb-generate
    p = sub.add_parser(
        "gb-generate",
        help="grain boundaries by in-painting with the GB model, relaxed and scored by E_gb",
        description="Generate GBs: the two grains are known voxels, the GB slab between them is generated (its "
        "atom count is the model's choice); each sample is relaxed like the GB search's samples (LAMMPS, EAM) "
        "and scored. Writes OUT/gb_generated.csv, the relaxed structures in OUT/structures/ (extended XYZ) and, "
        "with --plot, a PNG of E_gb against [n] (with --search, beside the GB search's samples).",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("system", choices=sorted(GB_SYSTEMS), help="the grain boundary")
    p.add_argument("out_dir", metavar="OUT", type=Path, help="folder for the table and structures")
    p.add_argument("--model", type=Path, help="GB model (default: the shipped one)")
    p.add_argument("--samples", type=_positive_int, default=8)
    p.add_argument("--batch", type=_positive_int, default=8, help="samples denoised together")
    p.add_argument("--steps", type=_positive_int, default=50, help="sampler steps")
    p.add_argument("--resample", type=_positive_int, default=2, help="re-noising repeats per step (harmonises)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-n", type=float, metavar="N",
                   help="generate at this [n]: imposed on the slab's atom count late in sampling (whole planes stay "
                   "free); models trained with --gb-condition-n are also conditioned on it")
    p.add_argument("--condition-only", action="store_true",
                   help="--target-n: only condition on it, do not impose it (models trained with it)")
    p.add_argument("--shift", type=float, nargs=3, metavar=("DX", "DY", "DZ"),
                   help="upper grain's translation in A (default: the model's reference)")
    p.add_argument("--refine", type=_non_negative_int, default=0, metavar="ROUNDS",
                   help="then ROUNDS rounds in which the --parents lowest-energy GBs so far each get --children "
                   "variations: the GB slab noised back to --refine-time and in-painted again (partial diffusion; "
                   "--target-n holds, else the atom count stays free)")
    p.add_argument("--parents", type=_positive_int, default=2,
                   help="--refine: GBs varied per round (without --target-n: the lowest of as many [n] values)")
    p.add_argument("--children", type=_positive_int, default=2, help="--refine: variations per parent")
    p.add_argument("--refine-time", type=_noise_time, metavar="T",
                   help="--refine: noise time in (0, 1] a parent's slab is taken back to (default 0.4)")
    p.add_argument("--bins", type=_positive_int, metavar="B",
                   help="survey every [n]: --samples GBs from noise in each of B equal [n] bins (its [n] values in "
                   "turn, imposed); --refine rounds then vary, in each bin, the lowest GB of each of its --parents "
                   "lowest [n] values (--children each) and the lowest GB outside the bin (--hops, at the bin's [n])")
    p.add_argument("--hops", type=_non_negative_int, default=0, metavar="H",
                   help="--bins --refine: variations per bin and round of the lowest GB outside the bin, made at "
                   "the bin's [n] values in turn (the model inserts or removes the atoms)")
    p.add_argument("--focus", type=_positive_int, metavar="F",
                   help="--bins --refine: refine only the F bins of lowest E_gb so far (a hunt for the ground state)")
    p.add_argument("--search", type=Path, metavar="DIR", help="a gcd gb-search folder to plot beside")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write E_gb against [n]")
    p.set_defaults(func=cmd_gb_generate)

    # ---------------------------------------------------------------------------------------------- xanes
    p = sub.add_parser(
        "xanes",
        help="a structure's carbon K-edge spectrum: forward model, optionally checked with FEFF10",
        description="Print a carbon structure's density and sp / sp2 / sp3 fractions, and its spectrum features "
        "(pi* intensity, sigma* maximum) from the XANES forward model and, with --feff-sites, from FEFF10 full "
        "multiple scattering on sampled sites (slow: 5-30 s per site; results are cached). Writes the spectra "
        "with --out.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("structure", metavar="STRUCTURE", type=Path, help="a periodic orthorhombic carbon cell")
    p.add_argument("--feff-sites", type=_positive_int, metavar="N", help="also run FEFF10 on N sampled sites")
    p.add_argument("--seed", type=int, default=0, help="which sites are sampled")
    p.add_argument("--cache", type=Path, default=Path("runs/feff_cache"), metavar="DIR", help="FEFF results cache")
    p.add_argument("--xanes-model", type=Path, default=DEFAULT_XANES_MODEL, metavar="PATH", help="forward model")
    p.add_argument("--out", type=Path, metavar="FILE", help="columns: energy, forward model[, FEFF]")
    p.set_defaults(func=cmd_xanes)
    return parser


# -------------------------------------------------------------------------------------------------- train
def _cells(structures: Sequence[Any]) -> list[list[float]]:
    from gcd_core.representation.grid import cell_lengths_of

    return [list(c) for c in sorted({tuple(round(v, 6) for v in cell_lengths_of(a)) for a in structures})]


def _three(values: Sequence[int]) -> tuple[int, int, int]:
    return tuple(values) * 3 if len(values) == 1 else tuple(values)  # type: ignore[return-value]


def _load_training_data(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The training structures and a JSON description of where they came from (crystals: atoms.info["phase"])."""
    if args.crystal:
        from gcd_core.data.crystals import crystal, training_supercell

        phases = list(dict.fromkeys(args.crystal))
        if len(phases) > 1 and (args.a or args.c or args.element):
            raise GCDError("--element, --a and --c set one phase's crystal; train several phases with their defaults")
        if args.supercell is not None and len(args.supercell) not in (1, 3):
            raise GCDError(f"--supercell takes 1 or 3 integers, got {len(args.supercell)}")
        structures, cells = [], {}
        for phase in phases:
            base = training_supercell(phase) if args.supercell is None else _three(args.supercell)
            for multiple in args.cell_multiples:
                reps = tuple(n * multiple for n in base)
                structures.append(crystal(phase, reps, element=args.element, a=args.a, c=args.c))
            cells[phase] = [float(v) for v in crystal(phase, base, a=args.a, c=args.c).cell.lengths()]
        description = {
            "source": "crystal",
            "phase": phases[0] if len(phases) == 1 else None,
            "phases": phases,
            "supercell": args.supercell,
            "cell_multiples": list(args.cell_multiples),
            "element": args.element,
            "a": args.a,
            "c": args.c,
            "label_cells": cells,
        }
    elif args.carbon:
        from gcd_core.data.amorphous import load_carbon_dataset, split_by_structure

        root = None if args.carbon == "default" else args.carbon
        structures, held_out = split_by_structure(load_carbon_dataset(root))
        description = {
            "source": "carbon",
            "root": str(root or "../shared/data/a-C"),
            "split": "split_by_structure(validation_fraction=0.2, seed=0)",
            "train": [a.info["name"] for a in structures],
            "held_out": [a.info["name"] for a in held_out],
        }
    elif args.gb_search:
        from gcd_core.data.gb_search import low_energy_structures
        from gcd_core.data.gb_windows import gb_window

        structures, shifts, cells, lowest = [], {}, {}, {}
        for folder in args.gb_search:
            relaxed = low_energy_structures(folder, per_n=args.gb_per_n)
            for atoms in relaxed:
                system = str(atoms.info["gb_system"])
                window = gb_window(atoms)
                window.info["gb_n"] = float(len(atoms) % int(atoms.info["atoms_per_plane"])) / int(
                    atoms.info["atoms_per_plane"]
                )
                structures.append(window)
                if system not in lowest or atoms.info["e_gb"] < lowest[system]:
                    lowest[system] = float(atoms.info["e_gb"])
                    shifts[system] = [float(v) for v in atoms.info["final_shift"]]
                    cells[system] = [float(v) for v in window.cell.lengths()]
        description = {
            "source": "gb",
            "searches": [str(p) for p in args.gb_search],
            "per_n": args.gb_per_n,
            "phases": sorted(shifts),
            "gb_shifts": shifts,  # the reference translation of each system's upper grain (lowest E_gb)
            "lowest_e_gb": lowest,
            "label_cells": cells,
        }
    else:
        from gcd_core.io import read_structures

        structures = []
        for path in args.structures:
            structures.extend(read_structures(path))
        description = {"source": "files", "files": [str(p) for p in args.structures]}
    if not structures:
        raise GCDError("no training structures")
    description["num_structures"] = len(structures)
    description["num_atoms"] = int(sum(len(a) for a in structures))
    description["cells"] = _cells(structures)
    return structures, description


def _time_range(values: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if not 0 <= low < high <= 1:
        raise GCDError(f"--time-range {low} {high}: needs 0 <= LO < HI <= 1")
    return low, high


def _draw_weights(args: argparse.Namespace, structures: Sequence[Any], data: dict[str, Any]) -> list[float] | None:
    """Per-structure draw weights from ``--phase-weight PHASE W`` or ``--balance-densities`` (recorded in the data
    description)."""
    if args.balance_densities:
        if not args.carbon:
            raise GCDError("--balance-densities applies to --carbon training")
        from gcd_core.data.amorphous import density_balanced_weights

        weights = density_balanced_weights(structures)
        data["draw_weights"] = {a.info["name"]: round(w, 6) for a, w in zip(structures, weights, strict=True)}
        return weights
    if not args.phase_weight:
        return None
    if not args.crystal:
        raise GCDError("--phase-weight applies to --crystal training")
    weights: dict[str, float] = {}
    for phase, value in args.phase_weight:
        if phase not in data["phases"]:
            raise GCDError(f"--phase-weight {phase}: not one of the trained phases {data['phases']}")
        try:
            weights[phase] = _positive_float(value)
        except (ValueError, argparse.ArgumentTypeError):
            raise GCDError(f"--phase-weight {phase} {value}: the weight must be a positive number") from None
    data["phase_weights"] = weights
    return [weights.get(a.info["phase"], 1.0) for a in structures]


def _grids(args: argparse.Namespace, structures: Sequence[Any], data: dict[str, Any]) -> tuple[Any, dict[str, dict]]:
    """The model's voxel grid and, for crystals on their own voxels, each phase's grid options."""
    from gcd_core.data.crystals import phase_voxel_size
    from gcd_core.representation.grid import VoxelGrid

    options = {"encoding": args.encoding, "blob_sigma": args.blob_sigma}
    if args.gb_search:
        from gcd_core.data.bicrystal import gb_system
        from gcd_core.data.gb_windows import window_voxel_size

        label_grids = {
            key: {"voxel_size": list(window_voxel_size(key)), "species": [gb_system(key).element]}
            for key in data["phases"]
        }
        first = label_grids[data["phases"][0]]
        return VoxelGrid(tuple(first["species"]), first["voxel_size"], **options), label_grids
    if not args.crystal:
        if args.voxel_size is None:
            raise GCDError("--voxel-size is required when training on --structures")
        species = args.species or sorted({s for a in structures for s in a.get_chemical_symbols()})
        return VoxelGrid(tuple(species), args.voxel_size, **options), {}
    label_grids = {}
    for phase in data["phases"]:
        element = next(a for a in structures if a.info["phase"] == phase).get_chemical_symbols()[0]
        size = args.voxel_size or list(phase_voxel_size(phase, a=args.a, c=args.c))
        label_grids[phase] = {"voxel_size": size, "species": [element]}
    first = label_grids[data["phases"][0]]
    return VoxelGrid(tuple(first["species"]), first["voxel_size"], **options), label_grids


def _labels(structures: Sequence[Any], key: str) -> tuple[list[str], list[int]]:
    names = []
    for index, atoms in enumerate(structures):
        if key not in atoms.info:
            raise GCDError(f"structure {index} has no atoms.info[{key!r}] (--labels-from-info {key})")
        names.append(str(atoms.info[key]))
    classes = sorted(set(names))
    return classes, [classes.index(n) for n in names]


def _spectrum_vectors(structures: Sequence[Any]) -> np.ndarray:
    from gcd_core.data.amorphous import structure_spectrum
    from gcd_core.physics.spectra import conditioning_vector

    return np.stack([conditioning_vector(structure_spectrum(a)) for a in structures]).astype(np.float32)


def _target_spectrum(args: argparse.Namespace) -> np.ndarray | None:
    """The target spectrum on the model's energy grid (unit area), from a file or a named a-C cell."""
    if args.target_spectrum is not None:
        from gcd_core.physics.spectra import read_spectrum

        return read_spectrum(args.target_spectrum)
    if args.target_structure is not None:
        from gcd_core.data.amorphous import load_carbon_dataset, structure_spectrum

        cells = {a.info["name"]: a for a in load_carbon_dataset()}
        if args.target_structure not in cells:
            raise GCDError(f"no a-C cell named {args.target_structure!r}; the data holds {sorted(cells)}")
        return structure_spectrum(cells[args.target_structure])
    return None


def _loss_curve(loss_log: Sequence[dict], max_points: int = MAX_CURVE_POINTS) -> list[list[float]]:
    """``[step, loss]`` pairs, evenly subsampled to at most ``max_points`` (the last entry always kept)."""
    if not loss_log:
        return []
    keep = np.unique(np.linspace(0, len(loss_log) - 1, min(max_points, len(loss_log))).round().astype(int))
    return [[int(loss_log[i]["step"]), float(loss_log[i]["loss"])] for i in keep]


def cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``gcd train``: build the model, train it (resuming if possible), write model.pt and model.json."""
    import torch

    from gcd_core.diffusion.schedules import schedule_from_config
    from gcd_core.model import Conditioning, GCDModel
    from gcd_core.nn.unet import UNet3D
    from gcd_core.training import TrainConfig, VoxelDataset, init_distributed, train

    structures, data = _load_training_data(args)
    grid, label_grids = _grids(args, structures, data)
    conditioning, labels, structure_grids = Conditioning(), None, None
    label_key = args.labels_from_info or ("phase" if args.crystal and len(data["phases"]) > 1 else None)
    if args.gb_search:
        label_key = "gb_system"  # always a class: generation asks for the system by name
    if label_key:
        classes, labels = _labels(structures, label_key)
        conditioning = Conditioning(labels=classes, label_grids={c: label_grids[c] for c in classes if label_grids})
        data["labels_from_info"] = label_key
    if args.crystal:
        structure_grids = [grid.with_options(**label_grids[a.info["phase"]]) for a in structures]
    if args.gb_search:
        structure_grids = [grid.with_options(**label_grids[a.info["gb_system"]]) for a in structures]
    scalars = None
    if args.gb_condition_n:
        from gcd_core.grain_boundaries import GB_DENSITY_SCALARS, gb_density_scalars

        if not args.gb_search:
            raise GCDError("--gb-condition-n applies to --gb-search training")
        scalars = np.array([list(gb_density_scalars(a.info["gb_n"]).values()) for a in structures], np.float32)
        conditioning.scalars = list(GB_DENSITY_SCALARS)
        data["gb_condition_n"] = True
    vectors = None
    if args.spectrum_condition:
        from gcd_core.physics.spectra import SPECTRUM_VECTOR_NAME

        vectors = _spectrum_vectors(structures)
        conditioning.vector_dim, conditioning.vector_name = vectors.shape[1], SPECTRUM_VECTOR_NAME
        data["spectrum_condition"] = "mean site spectrum, gcd_core.physics.spectra.conditioning_vector"
    torch.manual_seed(args.seed)  # the same command builds the same initial weights
    net = UNet3D(
        in_channels=grid.n_channels,
        out_channels=grid.n_channels,
        base_channels=args.base_channels,
        channel_mults=args.channel_mults,
        num_res_blocks=args.num_res_blocks,
        num_classes=len(conditioning.labels),
        vector_dim=conditioning.vector_dim,
        num_scalars=len(conditioning.scalars),
        self_condition=args.self_condition,
    )
    model = GCDModel(net, grid, schedule_from_config(args.schedule), args.prediction, conditioning)
    if args.init_from is not None:
        start = GCDModel.load(args.init_from, device="cpu")
        try:
            net.load_weights_from(start.net)
        except GCDError as error:
            raise GCDError(f"--init-from {args.init_from}: {error}") from None
        data["init_from"] = str(args.init_from)
    dataset = VoxelDataset(
        structures, grid, labels=labels, vectors=vectors, stride=net.stride, structure_grids=structure_grids,
        equal_voxels=True, fit_to_stride=bool(args.carbon),  # amorphous cells of five sizes: no edge fits all
        weights=_draw_weights(args, structures, data), scalars=scalars,
        fixed_axes=(2,) if args.gb_search else (),  # GB windows: the GB stays in the middle, grains on their sides
    )
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        ema_decay=args.ema_decay,
        grad_clip=args.grad_clip,
        occupied_weight=args.occupied_weight,
        drop_probability=args.drop_probability,
        split_sites=args.split_sites,
        time_range=_time_range(args.time_range),
        fit_steps_to_budget=args.fit_steps_to_budget,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        seed=args.seed,
        time_budget_s=args.time_budget,
    )
    context = init_distributed(args.device)  # train() joins the same group; we need the rank for output
    command = " ".join([PROG, *argv])
    started = time.perf_counter()
    try:
        result = train(
            model,
            dataset,
            config,
            args.out_dir,
            resume=not args.no_resume,
            device=args.device,
            metadata={"command": command, "data": data},
        )
        if not context.is_main:
            return 0
        metadata = {
            "command": command,
            "data": data,
            "train_cells": [list(c) for c in dataset.cell_lengths],
            "steps": result.steps_done,
            "final_loss": result.final_loss,
            "loss_curve": _loss_curve(result.loss_log),
            "seconds": round(time.perf_counter() - started, 3),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "torch_version": str(torch.__version__),  # TorchVersion would not load with weights_only
            "device": str(context.device),
            "world_size": context.world_size,
            "parameters": sum(p.numel() for p in result.model.net.parameters()),
        }
        result.model.metadata.update(metadata)
        out_dir = Path(args.out_dir)
        result.model.save(out_dir / "model.pt")
        (out_dir / "model.json").write_text(json.dumps(metadata, indent=2) + "\n")
        print(
            f"trained to step {result.steps_done} (final loss {result.final_loss:.4g}, "
            f"{metadata['seconds']:.1f} s on {context.device} x{context.world_size}); "
            f"wrote {out_dir / 'model.pt'}, {out_dir / 'model.json'}, {out_dir / 'checkpoint.pt'}"
        )
        return 0
    finally:
        if context.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------------------------- generate
def _requested_cell(args: argparse.Namespace, model: Any) -> tuple[float, float, float]:
    if args.cell is not None:
        cell = tuple(float(v) for v in args.cell)
        if not all(np.isfinite(v) and v > 0 for v in cell):
            raise GCDError(f"--cell needs three positive lengths (A), got {list(args.cell)}")
        return cell  # type: ignore[return-value]
    base = model.training_cell(args.label)
    if base is None:
        raise GCDError("this model records no training cell, so --supercell has nothing to multiply; use --cell")
    if len(args.supercell) not in (1, 3):
        raise GCDError(f"--supercell takes 1 or 3 integers, got {len(args.supercell)}")
    return tuple(float(c) * n for c, n in zip(base, _three(args.supercell), strict=True))  # type: ignore[return-value]


def _bragg_refinement(model: Any, label: str | None, cell: Sequence[float], iterations: int) -> Any:
    """Bragg guidance toward the reflections of the phase of ``label`` (or of a one-phase model's metadata)."""
    from gcd_core.data.crystals import phase_reference
    from gcd_core.guidance import bragg_refinement

    data = model.metadata.get("data") if isinstance(model.metadata.get("data"), dict) else {}
    phase = label or model.metadata.get("phase") or data.get("phase")
    if phase is None:
        raise GCDError("--bragg-refine needs --label PHASE: the crystal whose Bragg reflections to guide toward")
    grid = model.grid_for(label)
    return bragg_refinement(grid, phase_reference(phase, grid), cell, iterations)


def cmd_generate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``gcd generate``: sample structures and write them."""
    from gcd_core.device import resolve_device
    from gcd_core.generate import GenerationRequest, generate, grid_layout_for
    from gcd_core.io import MULTI_FRAME_FORMATS, write_structures
    from gcd_core.model import GCDModel
    from gcd_core.representation.grid import GridStretchWarning

    if args.one_file and args.format not in MULTI_FRAME_FORMATS and args.num_samples > 1:
        # the same check write_structures makes, but before minutes of sampling rather than after
        raise GCDError(
            f"{args.format} holds one structure per file, but --num-samples is {args.num_samples}; drop "
            f"--one-file (one file per sample) or use --format {' or '.join(MULTI_FRAME_FORMATS)}"
        )
    device = resolve_device(args.device)
    model = GCDModel.load(args.checkpoint, device=device)
    cell = _requested_cell(args, model)
    # Check the cell first (errors before any sampling) and report the voxel stretch once, not per call.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GridStretchWarning)
        layout = grid_layout_for(model, cell, args.label, args.fit_grid)
    for warning in caught:
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    target = _target_spectrum(args)
    if args.spectrum_guidance and target is None:
        raise GCDError("--spectrum-guidance needs a target: --target-spectrum FILE or --target-structure NAME")
    vector = None
    if target is not None and model.conditioning.vector_dim:
        from gcd_core.physics.spectra import conditioning_vector

        vector = conditioning_vector(target)
    elif target is not None and not (
        args.spectrum_guidance or args.sp3_guidance or args.sp3_refine or args.bonding_guidance or args.bonding_refine
    ):
        raise GCDError("this model is not spectrum-conditioned; add --spectrum-guidance G to steer it by gradient")
    if (args.sp3_guidance or args.sp3_refine) and target is None and args.target_sp3 is None:
        raise GCDError("sp3 guidance needs --target-sp3 F, or a target spectrum to read the sp3 fraction from")
    if (args.bonding_guidance or args.bonding_refine) and target is None and args.target_bonding is None:
        raise GCDError("bonding guidance needs --target-bonding SP SP2 SP3, or a target spectrum to read them from")
    model.conditioning_tensors(1, args.label, vector)  # a bad label or vector fails here, before sampling
    bragg = _bragg_refinement(model, args.label, cell, args.bragg_refine) if args.bragg_refine else None
    refiner = None
    if args.polish:
        from gcd_core.polish import PositionRefiner, noise_levels

        noise_levels(args.polish_noise, args.polish_steps)  # out-of-range settings fail before sampling
        refiner = PositionRefiner.load(args.polish_model, device=device)
        refiner.check_species(model.grid_for(args.label).species, holder="this model makes")
    from gcd_core.guidance import steering

    forward = None
    if args.spectrum_guidance:
        from gcd_core.physics.xanes import XanesForwardModel

        forward = XanesForwardModel.load(args.xanes_model, device=device)
    steer = steering(
        model.grid_for(args.label), cell, target, forward, spectrum_scale=args.spectrum_guidance,
        sp3_scale=args.sp3_guidance, sp3_refine=args.sp3_refine, target_sp3=args.target_sp3,
        bonding_scale=args.bonding_guidance, target_bonding=args.target_bonding, bonding_refine=args.bonding_refine,
    )
    if steer.target_sp3 is not None:
        print(f"sp3 guidance toward {steer.target_sp3:.2f}", file=sys.stderr)
    if steer.target_bonding is not None:
        print("bonding guidance toward sp / sp2 / sp3 " + " / ".join(f"{f:.2f}" for f in steer.target_bonding),
              file=sys.stderr)
    request = GenerationRequest(
        cell_lengths=cell,
        num_samples=args.num_samples,
        steps=args.steps,
        sampler=args.sampler,
        resample=args.resample,
        resample_window=tuple(args.resample_window),
        seed=args.seed,
        label=args.label,
        guidance_scale=args.guidance_scale,
        merge_distance=args.merge_distance,
        exclusion_distance=args.exclusion_distance,
        min_bonds=args.min_bonds,
        **({"bond_cutoff": args.bond_cutoff} if args.bond_cutoff else {}),
        vector=vector,
        fit_to_stride=args.fit_grid,
    )
    request.validate()
    print(
        f"sampling {args.num_samples} structure(s) in a {' x '.join(f'{v:g}' for v in cell)} A cell "
        f"(grid {' x '.join(map(str, layout.shape))}) on {device}",
        file=sys.stderr,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridStretchWarning)
        structures = generate(
            model, request, progress=True, gradient_guidance=steer.gradient_guidance,
            gradient_scale=steer.gradient_scale, projection=bragg if bragg is not None else steer.projection,
        )
    if refiner is not None:
        from gcd_core.polish import polish

        structures = polish(structures, refiner, args.polish_noise, args.polish_steps)
    paths = write_structures(structures, args.out, args.format, one_file=args.one_file)
    for index, atoms in enumerate(structures):
        path = paths[0] if args.one_file else paths[index]
        where = f"{path} (frame {index})" if args.one_file and len(structures) > 1 else str(path)
        print(f"{index:4d}  {len(atoms):6d} atoms  {atoms.get_chemical_formula() or '-':>12}  {where}")
    return 0


# ------------------------------------------------------------------------------------------------ inspect
def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of a checkpoint: config, parameter count, metadata and training state."""
    import torch

    from gcd_core.checkpoint import read_checkpoint
    from gcd_core.nn.unet import UNet3D

    checkpoint = read_checkpoint(path)
    config = checkpoint["config"]
    try:
        with torch.device("meta"):  # no memory, no init cost: we only count parameters
            parameters = sum(p.numel() for p in UNet3D(**config["net"]).parameters())
    except (TypeError, KeyError) as exc:
        raise GCDError(f"{path} has a broken network config ({exc})") from exc
    info: dict[str, Any] = {
        "path": str(path),
        "kind": "training checkpoint" if "optimizer" in checkpoint else "model",
        "config": config,
        "parameters": parameters,
        "has_ema": "ema" in checkpoint,
        "metadata": checkpoint.get("metadata", {}),
    }
    if "step" in checkpoint:
        info["step"] = int(checkpoint["step"])
        info["loss_log_entries"] = len(checkpoint.get("loss_log", []))
    if "train" in checkpoint:
        info["train"] = checkpoint["train"]
    return info


def _format_description(info: dict[str, Any]) -> str:
    config, meta = info["config"], info["metadata"]
    grid, net, cond = config["grid"], config["net"], config.get("conditioning") or {}
    schedule = dict(config["schedule"])
    name = schedule.pop("name", "?")
    lines = [f"{info['path']}: {info['kind']}" + (" (EMA weights)" if info["has_ema"] else "")]
    encoding = grid["encoding"]
    if encoding == "smooth":
        encoding += f", blob sigma {grid['blob_sigma']} voxels"
    schedule_text = ", ".join(f"{k}={v}" for k, v in schedule.items())
    lines += [
        "grid:",
        f"  species       {', '.join(grid['species'])}",
        f"  voxel size    {grid['voxel_size']} A",
        f"  encoding      {encoding}",
        f"  threshold     {grid['threshold']}",
        "network:",
        f"  channels      in {net['in_channels']}, out {net['out_channels']}, base {net['base_channels']}, "
        f"mults {net['channel_mults']}",
        f"  res blocks    {net['num_res_blocks']}",
        f"  stride        {2 ** (len(net['channel_mults']) - 1)} voxels",
        f"  parameters    {info['parameters']:,}",
        f"schedule:       {name}" + (f" ({schedule_text})" if schedule_text else ""),
        f"prediction:     {config.get('prediction', 'x0')}",
    ]
    parts = []
    if cond.get("labels"):
        parts.append(f"labels {cond['labels']}")
    if cond.get("vector_dim"):
        parts.append(f"vector {cond.get('vector_name') or 'vector'} [{cond['vector_dim']}]")
    if cond.get("scalars"):
        parts.append(f"scalars {cond['scalars']}")
    lines.append(f"conditioning:   {'; '.join(parts) if parts else 'none'}")
    for name, spec in (cond.get("label_grids") or {}).items():
        edges = np.round(np.broadcast_to(spec.get("voxel_size", grid["voxel_size"]), 3), 5).tolist()
        lines.append(f"  {name:13s} {', '.join(spec.get('species', grid['species']))} on {edges} A voxels")
    lines.append("training:")
    steps = info.get("step", meta.get("steps"))
    rows = [
        ("steps", steps),
        ("final loss", None if meta.get("final_loss") is None else f"{meta['final_loss']:.6g}"),
        ("seconds", meta.get("seconds")),
        ("date", meta.get("date")),
        ("device", meta.get("device") and f"{meta['device']} x{meta.get('world_size', 1)}"),
        ("torch", meta.get("torch_version")),
        (
            "train cells",
            meta.get("train_cells") and "; ".join(" x ".join(f"{v:g}" for v in c) for c in meta["train_cells"]),
        ),
        ("command", meta.get("command")),
    ]
    data = meta.get("data")
    if isinstance(data, dict):
        if data.get("source") == "crystal":
            phases = ", ".join(data.get("phases") or [str(data.get("phase"))])
            supercell = data.get("supercell") or "per phase"
            text = f"crystal {phases}, supercell {supercell} x {data.get('cell_multiples', [1])}"
        else:
            text = f"files {data.get('files')}"
        rows.append(("data", f"{text}, {data.get('num_structures')} structure(s)"))
    curve = meta.get("loss_curve")
    if curve:
        shown = curve[:: max(1, len(curve) // 8)]
        rows.append(("loss curve", ", ".join(f"{int(step)}: {loss:.4g}" for step, loss in shown)))
    shown_rows = [f"  {key:<13} {value}" for key, value in rows if value is not None]
    lines += shown_rows or ["  (no training metadata recorded)"]
    if "train" in info:
        lines.append("  config        " + ", ".join(f"{k}={v}" for k, v in info["train"].items()))
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``gcd inspect``: print a checkpoint's configuration and metadata."""
    info = describe_checkpoint(args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(_format_description(info))
    return 0


def cmd_xanes(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``gcd xanes``: forward-model spectrum of a structure, with an optional FEFF10 check."""
    from gcd_core.io import read_structures
    from gcd_core.physics.analysis import DEFAULT_BOND_CUTOFF, carbon_summary
    from gcd_core.physics.spectra import ENERGY_GRID, pi_star_intensity, sigma_star_maximum
    from gcd_core.physics.xanes import XanesForwardModel

    structures = read_structures(args.structure)
    if len(structures) != 1:
        raise GCDError(f"{args.structure} holds {len(structures)} structures; give a file with one")
    atoms = structures[0]
    forward = XanesForwardModel.load(args.xanes_model, device="cpu")
    columns = {"forward model": forward.spectrum(atoms)}
    if args.feff_sites:
        from gcd_core.physics.feff import feff_structure_spectrum

        mean, _, sites = feff_structure_spectrum(atoms, args.feff_sites, cache_dir=args.cache, seed=args.seed,
                                                 skip_failed=True)  # a site it cannot do is named, not fatal
        columns[f"FEFF10 ({len(sites)} sites)"] = mean
    summary = carbon_summary(atoms)
    print(
        f"{args.structure}: {len(atoms)} atoms, {summary['density']:.2f} g/cm3, sp / sp2 / sp3 "
        f"{summary['sp']:.2f} / {summary['sp2']:.2f} / {summary['sp3']:.2f}, under-bonded (0-1 neighbours) "
        f"{summary['under']:.2f}, mean coordination {summary['mean_coordination']:.2f} "
        f"(bonds within {DEFAULT_BOND_CUTOFF} A)"
    )
    for name, spectrum in columns.items():
        print(
            f"  {name:>20}: pi* intensity {1000 * pi_star_intensity(spectrum):.1f} (x 1e-3), "
            f"sigma* maximum {sigma_star_maximum(spectrum):.1f} eV"
        )
    if args.out is not None:
        table = np.column_stack([ENERGY_GRID, *columns.values()])
        np.savetxt(args.out, table, fmt="%.6g", header="energy_eV " + " ".join(c.split()[0] for c in columns))
        print(f"wrote {args.out}")
    return 0


def cmd_gb_search(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``gcd gb-search``: the grand canonical GB search, resumable, with a summary of the lowest E_gb per [n]."""
    from gcd_core.data.gb_search import (
        GBSearchSettings,
        lowest_per_n,
        n_bin,
        rescore_gb_search,
        run_gb_search,
        search_summary,
    )
    from gcd_core.data.gb_windows import window_spec

    repeat = tuple(args.repeat) if args.repeat else window_spec(args.system).repeat
    if not 0 <= args.anneal_fraction <= 1:
        raise GCDError(f"--anneal-fraction must lie in [0, 1], got {args.anneal_fraction}")
    settings = GBSearchSettings(args.system, repeat=repeat, anneal_fraction=args.anneal_fraction)
    if args.rescore:
        rows = rescore_gb_search(args.out_dir, settings.surface_margin)
    else:
        rows = run_gb_search(settings, args.samples, args.out_dir, processes=args.processes,
                             first_seed=args.first_seed, time_budget=args.time_budget)
    print(f"{args.system}, {repeat[0]} x {repeat[1]} in-plane: {len(rows)} samples in {args.out_dir}")
    print(f"{'[n] bin':>12} {'samples':>8} {'lowest E_gb (J/m^2)':>20} {'[n]':>7} {'seed':>6}")
    counts = np.bincount([n_bin(float(r["n"]), args.bins) for r in rows], minlength=args.bins)
    for index, row in lowest_per_n(rows, args.bins).items():
        low, high = index / args.bins, (index + 1) / args.bins
        print(f"{low:5.2f}-{high:4.2f}  {counts[index]:8d} {float(row['e_gb']):20.4f} {float(row['n']):7.3f} "
              f"{int(row['seed']):6d}")
    if args.summary is not None:
        summary = search_summary(rows, args.bins, args.system, command="gcd " + " ".join(argv))
        summary["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {args.summary}")
    return 0


def cmd_gb_generate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``gcd gb-generate``: in-painted GBs, relaxed, with a table, structures and an optional plot."""
    import csv

    from ase.io import write

    from gcd_core.checkpoint import DEFAULT_GB_MODEL
    from gcd_core.data.gb_search import read_gb_table
    from gcd_core.grain_boundaries import (
        IMPOSE_N_BELOW,
        REFINE_START_TIME,
        GBRequest,
        evolve_gbs,
        plot_gb_energies,
        survey_gbs,
    )
    from gcd_core.model import GCDModel

    if args.bins is not None and (args.target_n is not None or args.condition_only):
        raise _UsageError("--bins sets each sample's [n] from its bin: drop --target-n and --condition-only")
    if args.bins is None and (args.hops or args.focus is not None):
        raise _UsageError("--hops and --focus work on a survey's [n] bins: give --bins")
    search = read_gb_table(args.search) if args.search is not None else []  # a bad folder fails before sampling
    model = GCDModel.load(args.model or DEFAULT_GB_MODEL, device=args.device if "device" in args else None)
    request = GBRequest(args.system, num_samples=args.samples, steps=args.steps, resample=args.resample,
                        seed=args.seed, target_n=args.target_n, shift=args.shift,
                        impose_n_below=None if args.condition_only else IMPOSE_N_BELOW)
    refine_time = REFINE_START_TIME if args.refine_time is None else args.refine_time
    if args.bins is None:
        results = evolve_gbs(model, request, args.refine, args.parents, args.children, refine_time, args.batch)
    else:
        results = survey_gbs(model, request, args.bins, 1, args.refine, args.parents, args.children, args.hops,
                             args.focus, True, refine_time, args.batch)
    (args.out_dir / "structures").mkdir(parents=True, exist_ok=True)
    with (args.out_dir / "gb_generated.csv").open("w", newline="") as handle:
        columns = ["sample", "n", "n_atoms", "e_gb", "cpu_seconds", "sampling_seconds", "parent"]
        columns += [] if args.bins is None else ["target_bin"]
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for atoms, row in results:
            writer.writerow(row)
            write(args.out_dir / "structures" / f"{row['sample']}.extxyz", atoms, format="extxyz")
    print(f"{'sample':>6} {'parent':>6} {'atoms':>6} {'[n]':>6} {'E_gb (J/m^2)':>13} {'CPU s':>7}")
    for _, row in results:
        parent = "-" if row["parent"] < 0 else str(row["parent"])
        print(f"{row['sample']:6d} {parent:>6} {row['n_atoms']:6d} {row['n']:6.3f} {row['e_gb']:13.4f} "
              f"{row['cpu_seconds']:7.1f}")
    if args.bins is not None:
        from gcd_core.data.gb_search import lowest_per_n

        print(f"{'[n] bin':>10} {'lowest E_gb':>12} {'[n]':>6} {'sample':>6}")
        for index, row in lowest_per_n([row for _, row in results], args.bins).items():
            print(f"{index / args.bins:4.2f}-{(index + 1) / args.bins:4.2f} {row['e_gb']:12.4f} {row['n']:6.3f} "
                  f"{row['sample']:6d}")
    best = min(results, key=lambda item: item[1]["e_gb"])[1]
    print(f"lowest E_gb {best['e_gb']:.4f} J/m^2 at [n] = {best['n']:.3f}; wrote {args.out_dir}")
    if args.plot is not None:
        plot_gb_energies(search, [row for _, row in results], args.system, args.plot)
        print(f"wrote {args.plot}")
    return 0


# --------------------------------------------------------------------------------------------------- main
def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    """Run the ``gcd`` command; returns the exit code (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("GCD_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args, argv) or 0)
    except SystemExit as exc:  # --help and --version print and exit 0
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_ERROR)
    except _UsageError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `gcd inspect --json m.pt | head`: the reader left, which is no error
        # keep Python's exit-time flush of stdout from raising again (no descriptor when captured in tests)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except (GCDError, OSError, ValueError) as exc:  # GCDError is a ValueError; OSError: files we can't use
        if debug:
            raise
        message = str(exc) if isinstance(exc, GCDError) else f"{type(exc).__name__}: {exc}"
        print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
