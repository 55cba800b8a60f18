"""Reading and writing structures through ASE, with errors that name the file.

Generated structures carry a per-atom ``occupancy`` array. Extended XYZ keeps it (ASE writes every per-atom
array as a column); CIF and POSCAR have no place for it, so it is dropped there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ase import Atoms

from gcd_core.errors import GCDError

FORMATS: dict[str, str] = {"cif": ".cif", "extxyz": ".extxyz", "vasp": ".vasp"}
MULTI_FRAME_FORMATS = ("cif", "extxyz")
# Extensions (and VASP's extension-less names) that read_structures picks up from a directory.
READ_EXTENSIONS = (".cif", ".extxyz", ".xyz", ".vasp", ".poscar", ".traj", ".xsf", ".res", ".pdb")
READ_NAME_PREFIXES = ("POSCAR", "CONTCAR")
_EXTRA_ARRAYS_OK = ("extxyz",)


def sample_name(index: int, fmt: str) -> str:
    """File name of sample ``index`` when each sample gets its own file."""
    return f"sample_{index:04d}{FORMATS[fmt]}"


def _prepared(atoms: Atoms, fmt: str) -> Atoms:
    """A copy the format can hold: custom per-atom arrays only where the format stores them."""
    if fmt in _EXTRA_ARRAYS_OK:
        return atoms
    out = atoms.copy()
    for name in list(out.arrays):
        if name not in ("numbers", "positions"):
            del out.arrays[name]
    return out


def _write(path: Path, images: Atoms | list[Atoms], fmt: str) -> None:
    import ase.io

    try:
        ase.io.write(path, images, format=fmt)
    except Exception as exc:  # ASE raises many types (IndexError, ValueError, ...) for unwritable input
        raise GCDError(f"could not write {path} as {fmt} ({type(exc).__name__}: {exc})") from exc


def write_structures(
    structures: Sequence[Atoms], out: str | Path, fmt: str, one_file: bool = False
) -> list[Path]:
    """Write ``structures`` as ``fmt`` ("cif", "extxyz" or "vasp"); returns the files written.

    ``one_file=False``: ``out`` is a directory (created if needed) holding ``sample_0000.<ext>``, ...
    ``one_file=True``: ``out`` is one multi-frame file (cif or extxyz; vasp only for a single structure).
    """
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise GCDError(f"unknown output format {fmt!r}; choose one of {sorted(FORMATS)}")
    structures = list(structures)
    if not structures:
        raise GCDError("there are no structures to write")
    if fmt != "extxyz":
        # ASE's cif and POSCAR writers crash on an empty structure; say so before writing anything.
        empty = [i for i, atoms in enumerate(structures) if len(atoms) == 0]
        if empty:
            raise GCDError(
                f"sample(s) {empty} have no atoms and {fmt} cannot hold an empty structure; use extxyz"
            )
    out = Path(out)
    if one_file:
        if fmt not in MULTI_FRAME_FORMATS and len(structures) > 1:
            raise GCDError(
                f"{fmt} holds one structure per file, but there are {len(structures)}; drop --one-file "
                f"(one file per sample) or use one of {list(MULTI_FRAME_FORMATS)}"
            )
        if out.is_dir():
            raise GCDError(f"{out} is a directory; one_file needs a file name")
        out.parent.mkdir(parents=True, exist_ok=True)
        images = [_prepared(a, fmt) for a in structures]
        _write(out, images if len(images) > 1 else images[0], fmt)
        return [out]
    if out.exists() and not out.is_dir():
        raise GCDError(f"{out} is a file; writing one file per sample needs a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, atoms in enumerate(structures):
        path = out / sample_name(index, fmt)
        _write(path, _prepared(atoms, fmt), fmt)
        paths.append(path)
    return paths


def _is_structure_file(path: Path) -> bool:
    return path.is_file() and (
        path.suffix.lower() in READ_EXTENSIONS or path.name.upper().startswith(READ_NAME_PREFIXES)
    )


def read_structures(path: str | Path) -> list[Atoms]:
    """Every frame of an ASE-readable file, or of every structure file in a directory (sorted by name)."""
    import ase.io

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _is_structure_file(p))
        if not files:
            raise GCDError(
                f"directory {path} holds no structure files (looked for {', '.join(READ_EXTENSIONS)}, "
                f"POSCAR*, CONTCAR*)"
            )
    elif path.is_file():
        files = [path]
    else:
        raise GCDError(f"structure file {path} does not exist")
    structures: list[Atoms] = []
    for file in files:
        try:
            frames = ase.io.read(file, index=":")
        except Exception as exc:  # unknown format, parse errors, ...: ASE uses many exception types
            raise GCDError(f"could not read structures from {file} ({type(exc).__name__}: {exc})") from exc
        frames = frames if isinstance(frames, list) else [frames]
        if not frames:
            raise GCDError(f"{file} holds no structures")
        structures.extend(frames)
    return structures
