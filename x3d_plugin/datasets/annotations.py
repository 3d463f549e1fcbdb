"""Read annotation lists and label maps as people actually write them.

Lists made on Windows end their lines with CRLF, editors add a UTF-8 byte
order mark, scripts leave trailing spaces and blank lines, and video names
contain spaces and non-ASCII letters. All of that is read as meant. What
cannot be meant (text that is not UTF-8, a line without a label) is an
:class:`AnnotationError` naming ``file:line``.

The files are always read as UTF-8, never in the locale's encoding, so a
list reads the same on every machine.
"""
import os.path as osp
from typing import List, Optional, Tuple

_UTF8_BOM = b'\xef\xbb\xbf'
_UTF16_BOMS = (b'\xff\xfe', b'\xfe\xff')
# Problems listed in one error; the rest are counted.
MAX_LISTED = 10


class AnnotationError(ValueError):
    """A bad annotation list, label map or line of one."""


def problems_error(path: str, problems: List[str]) -> AnnotationError:
    """An :class:`AnnotationError` listing ``problems`` of the file
    ``path`` (``'path:line: ...'``), in line order whichever check found
    them, the first :data:`MAX_LISTED` one a line."""
    problems = sorted(problems, key=lambda p: _line_of(p, path))
    shown = '\n  '.join(problems[:MAX_LISTED])
    more = (f'\n  ... and {len(problems) - MAX_LISTED} more'
            if len(problems) > MAX_LISTED else '')
    return AnnotationError(
        f'{len(problems)} bad lines in {path}:\n  {shown}{more}')


def _line_of(problem: str, path: str) -> int:
    """The line number of a ``'path:line: ...'`` problem (0 for others)."""
    head = problem[len(path) + 1:].split(':', 1)[0]
    return int(head) if problem.startswith(path) and head.isdigit() else 0


def read_lines(path: str) -> List[Tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines of a UTF-8 text file,
    with surrounding white space removed.

    A leading UTF-8 byte order mark is dropped; ``\\r\\n``, ``\\r`` and
    ``\\n`` all end a line (line numbers are those an editor shows).

    Raises:
        AnnotationError: The file does not exist, is UTF-16 (Windows
            Notepad's "Unicode") or has a line that is not UTF-8 (named as
            ``file:line``).
    """
    if not osp.isfile(path):
        raise AnnotationError(f'{path!r} does not exist')
    with open(path, 'rb') as f:
        data = f.read()
    if data.startswith(_UTF16_BOMS):
        raise AnnotationError(
            f'{path} is UTF-16 text; save it as UTF-8 (e.g. "UTF-8" in the '
            "editor's save dialog, or `iconv -f UTF-16 -t UTF-8`)")
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    lines = []
    # bytes.splitlines splits on \r\n, \r and \n only, so a non-ASCII
    # character can never end a line early.
    for lineno, raw in enumerate(data.splitlines(), 1):
        try:
            text = raw.decode('utf-8')
        except UnicodeDecodeError as err:
            raise AnnotationError(
                f'{path}:{lineno}: byte {raw[err.start]:#04x} at column '
                f'{err.start + 1} is not UTF-8; save the file as UTF-8 '
                '(e.g. `iconv -f LATIN1 -t UTF-8`)') from None
        text = text.strip()
        if text:
            lines.append((lineno, text))
    return lines


def read_label_map(path: str,
                   num_classes: Optional[int] = None) -> List[str]:
    """Class names of a label map: one name a line, class ``i`` on the
    ``i``-th non-blank line (see :func:`read_lines` for what is allowed).

    Args:
        path (str): The label map.
        num_classes (int, optional): The classes the names must number.

    Returns:
        list[str]: The class names.

    Raises:
        AnnotationError: The file cannot be read (see :func:`read_lines`),
            has no names, or not ``num_classes`` of them.
    """
    names = [text for _, text in read_lines(path)]
    if not names:
        raise AnnotationError(f'label map {path!r} has no class names')
    if num_classes is not None and len(names) != num_classes:
        raise AnnotationError(
            f'label map {path!r} has {len(names)} class names but there are '
            f'{num_classes} classes; give one name per class, one a line')
    return names


def parse_annotation_line(text: str, delimiter: str = ' '
                          ) -> Tuple[str, str]:
    """``(video name, label text)`` of one line of an annotation list.

    The label is the last field, so a name may contain the delimiter. With
    the default delimiter ``' '`` any run of spaces or tabs separates them.

    Raises:
        ValueError: The line has one field only.
    """
    parts = (text.rsplit(None, 1)
             if delimiter == ' ' else text.rsplit(delimiter, 1))
    parts = [p.strip() for p in parts]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(f'expected "path{delimiter}label", got {text!r}')
    return parts[0], parts[1]


def annotation_entries(path: str, delimiter: str = ' '
                       ) -> Tuple[List[Tuple[int, str, int]], List[str]]:
    """The entries of an annotation list and the problems of its other
    lines, for a caller that adds checks of its own and reports all
    problems together (see :func:`read_annotation_list`).

    Returns:
        tuple[list, list[str]]: ``(line number, video name, label)`` of
        each well-formed line, and ``'file:line: what is wrong'`` for each
        other non-blank line.

    Raises:
        AnnotationError: The file cannot be read (see :func:`read_lines`).
    """
    entries, problems = [], []
    for lineno, text in read_lines(path):
        where = f'{path}:{lineno}'
        try:
            name, label = parse_annotation_line(text, delimiter)
        except ValueError as err:
            problems.append(f'{where}: {err}')
            continue
        try:
            label = int(label)
        except ValueError:
            problems.append(f'{where}: label {label!r} is not an integer')
            continue
        entries.append((lineno, name, label))
    return entries, problems


def label_problem(path: str, lineno: int, label: int,
                  num_classes: Optional[int]) -> Optional[str]:
    """``'file:line: ...'`` if ``label`` is not a class id (below 0, or not
    below ``num_classes`` when that is given), else None."""
    if num_classes is not None and not 0 <= label < num_classes:
        return (f'{path}:{lineno}: label {label} is outside '
                f'0..{num_classes - 1}')
    if label < 0:
        return f'{path}:{lineno}: label {label} is negative'
    return None


def read_annotation_list(path: str,
                         delimiter: str = ' ',
                         num_classes: Optional[int] = None
                         ) -> List[Tuple[int, str, int]]:
    """``(line number, video name, label)`` of every entry of an annotation
    list ("path label" a line, MMAction2's ``VideoDataset`` format).

    Blank lines, trailing spaces, CRLF line ends and a byte order mark are
    allowed; names may contain spaces and any UTF-8 character.

    Args:
        path (str): The annotation list.
        delimiter (str): Between the name and the label. Defaults to
            ``' '`` (any white space).
        num_classes (int, optional): Labels must be below it.

    Returns:
        list[tuple[int, str, int]]: The entries in file order.

    Raises:
        AnnotationError: The file cannot be read (see :func:`read_lines`),
            or lines lack a label or have one that is not a class id (each
            named as ``file:line``, up to 10 listed).
    """
    entries, problems = annotation_entries(path, delimiter)
    for lineno, _, label in entries:
        problem = label_problem(path, lineno, label, num_classes)
        if problem:
            problems.append(problem)
    if problems:
        raise problems_error(path, problems)
    return entries
