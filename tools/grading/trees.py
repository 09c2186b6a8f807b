"""File trees: names as reports show them, capped walks, digests, copies of the instructor tree.

Trusts no tree it walks: a submission or a graded copy may hold any name (bytes that are not
UTF-8), links, special files, or more files and folders than anyone needs; walks are iterative and
capped (``limits``), never recursive, and every name is kept, escaped. The instructor tree is
trusted only as the source of the copies.
"""
import fnmatch
import hashlib
import json
import os
import shutil
from pathlib import Path

from given.manifest import BUILD_OUTPUTS, DELIVERABLES, PROJECT_ROOT, is_python_environment
from grading.limits import WALK_LIMITS
from solution_markers import strip_python_solutions

NOT_COPIED = (".git", *BUILD_OUTPUTS)


def escaped_name(name):
    """A file name as reports show it: bytes that are not UTF-8 (e.g. Latin-1 ``Jos\\xe9`` from an
    LMS zip) are escaped as ``\\xNN``, so every name is printable, writable and kept."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def printable(text):
    """``text`` with any unencodable character (a lone surrogate) escaped: safe to write as UTF-8."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def is_ignored(name, patterns):
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def walk(root, max_depth, max_entries, ignore=(), skip_environments=False):
    """Every file and folder under ``root``, without recursion: ``(entries, limit_note)``.

    ``entries`` is a sorted list of ``(relative name, path, is_dir)`` (names escaped); names
    matching ``ignore`` are skipped with what is below them, and so are Python environments of
    any name with ``skip_environments`` (the instructor's own tree, never a graded copy). The walk stops descending below
    ``max_depth`` and stops after ``max_entries``; ``limit_note`` then says so (else ``""``).
    An unreadable folder is an entry with ``is_dir=None``.
    """
    entries, stack, note = [], [(Path(root), "", 0)], ""
    while stack:
        folder, prefix, depth = stack.pop()
        try:
            children = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
        except OSError as error:
            entries.append((prefix.rstrip("/") or ".", folder, None))
            note = note or f"could not read {prefix or '.'}: {error.strerror}"
            continue
        for child in children:
            if is_ignored(child.name, ignore) or (
                    skip_environments and child.is_dir(follow_symlinks=False) and is_python_environment(child.path)):
                continue
            if len(entries) >= max_entries:
                return sorted(entries), f"more than {max_entries} files and folders"
            relative = prefix + escaped_name(child.name)
            is_dir = child.is_dir(follow_symlinks=False)
            entries.append((relative, Path(child.path), is_dir))
            if is_dir and depth + 1 >= max_depth:
                note = note or f"folders nested deeper than {max_depth} levels ({relative}/...)"
            elif is_dir:
                stack.append((Path(child.path), relative + "/", depth + 1))
    return sorted(entries), note


def file_digests(tree, skip=(), ignore=(), skip_environments=False):
    """``{relative path: sha256}`` of every file under ``tree`` except the names in ``skip``;
    a symlink or special file is ``"not a file"``; a walk cut short by its caps is the entry
    ``"<walk>"`` (so a run that makes the tree huge or deep shows as tampering)."""
    entries, note = walk(tree, ignore=ignore, skip_environments=skip_environments, **WALK_LIMITS)
    digests = {"<walk>": note} if note else {}
    for relative, path, is_dir in entries:
        if relative in skip or is_dir:
            continue
        try:
            digests[relative] = (_sha256_of_file(path) if is_dir is False and path.is_file()
                                 and not path.is_symlink() else "not a file")
        except OSError as error:
            digests[relative] = f"unreadable: {error.strerror}"
    return digests


def _sha256_of_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_of(digests, *extra):
    """One hash for a ``file_digests`` mapping (and any extra strings, e.g. options)."""
    return hashlib.sha256(json.dumps([digests, *extra], sort_keys=True).encode()).hexdigest()


def tampered_files(before, after):
    """Files of the instructor tree that a run added, changed or removed."""
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def not_copied(folder, names):
    """``shutil.copytree``'s ignore: ``NOT_COPIED`` names, and Python environments of any name
    (a ``venv/`` inside the instructor tree is neither copied into each run nor hashed)."""
    return {name for name in names
            if is_ignored(name, NOT_COPIED) or is_python_environment(os.path.join(folder, name))}


def copy_instructor_tree(destination, stub_deliverables, source=PROJECT_ROOT):
    """Copy the instructor tree to ``destination``; with ``stub_deliverables`` the deliverables
    become the student-release stubs."""
    shutil.copytree(source, destination, ignore=not_copied)
    if stub_deliverables:
        for name in DELIVERABLES:
            path = destination / name
            if path.exists():
                path.write_text(strip_python_solutions(path.read_text(), name)[0])
