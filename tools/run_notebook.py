"""Execute the lab notebook headless, with parameters, and keep everything it produced.

    python tools/run_notebook.py                     # Google's BERT from the hub if reachable, else offline
    python tools/run_notebook.py --offline           # never contact the hub: the offline model, local data
    python tools/run_notebook.py --model PATH --data DIR --mode full -p EVAL_TOKENS=65536

Which model: the one ``--model`` names; else Google's BERT from the hub; else the trained offline
model (``$LAB5_OFFLINE_MODEL``, else ``../shared/data/bert-mini-wikitext2``); else, as a last resort,
a seeded random BERT-tiny (``given.models.choose_model``). The terminal says which before and
after the run, and so does the ``model`` column of the results; a run on the random model ends
with a warning box saying how to build the offline model.

Parameters are injected papermill-style (papermill is not needed): a code cell tagged
``injected-parameters`` is placed right after the cell tagged ``parameters`` (replacing an earlier
injected cell), so the notebook's defaults are overridden. The data path defaults to
``../shared/data/wikitext-2-raw-v1`` when that folder exists.

While it runs, a terminal shows a progress bar over the notebook's code cells with the current
section's title and the elapsed time; a log (output not a terminal) gets one line per section.

Writes to the output folder (default ``outputs/``, git-ignored): the executed notebook
``<name>.executed.ipynb`` (also when a cell fails, to show where), ``results.csv``/``results.json``
and the PNG plots written by the notebook. Exit status 0 when every cell ran (on the random model
too, with the warning), 1 when one raised, 2 when the model asked for cannot be had.
"""
import argparse
import ast
import csv
import os
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: given.manifest
from given.manifest import NOTEBOOK, PROJECT_ROOT, SHARED_WIKITEXT_DIR  # noqa: E402



def parse_assignment(text):
    """``"NAME=VALUE"`` -> ``(NAME, value)``; VALUE is a Python literal when it parses as one, else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name.strip(), value


def inject_parameters(notebook, parameters):
    """Put ``parameters`` in a code cell right after the ``parameters``-tagged cell (in place).

    Raises:
        ValueError: the notebook has no cell tagged ``parameters``.
    """
    import nbformat

    cells = notebook.cells
    cells[:] = [cell for cell in cells if "injected-parameters" not in cell.metadata.get("tags", [])]
    tagged = [i for i, cell in enumerate(cells) if "parameters" in cell.metadata.get("tags", [])]
    if not tagged:
        raise ValueError("the notebook has no cell tagged 'parameters' to inject after")
    source = "# Parameters injected by tools/run_notebook.py\n" + "".join(
        f"{name} = {value!r}\n" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source.rstrip("\n"))
    cell.metadata["tags"] = ["injected-parameters"]
    cells.insert(tagged[0] + 1, cell)
    return notebook


def build_parameters(args):
    """The notebook parameters for these command-line arguments (only what the user or defaults set)."""
    output_dir = Path(args.output_dir).resolve()
    parameters = {"OUTPUT_DIR": str(output_dir), "RUN_MODE": args.mode, "OFFLINE": args.offline}
    if args.model is not None:
        parameters["MODEL_NAME_OR_PATH"] = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    data = args.data if args.data is not None else (SHARED_WIKITEXT_DIR if SHARED_WIKITEXT_DIR.is_dir() else None)
    if data is not None and str(data) != "hub":
        parameters["DATA_PATH"] = str(Path(data).resolve())
    if args.device is not None:
        parameters["DEVICE"] = args.device
    parameters.update(dict(args.parameter))
    return parameters


def boxed(text, *, alarm=False, width=96):
    """``text`` wrapped in a box of ``#`` (alarm) or ``-``; red too when alarming a terminal."""
    lines = [line for paragraph in text.split("\n") for line in (textwrap.wrap(paragraph, width - 4, break_on_hyphens=False) or [""])]
    edge, side = ("#", "#") if alarm else ("-", "|")
    inner = max(len(line) for line in lines)
    box = "\n".join([edge * (inner + 4), *(f"{side} {line:<{inner}} {side}" for line in lines), edge * (inner + 4)])
    colour = alarm and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    return f"\033[1;31m{box}\033[0m" if colour else box


def model_line(choice):
    """The one line that says which model the run's numbers come from (a red box when random)."""
    if choice.is_random_fallback:
        from given.models import no_trained_model_message
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        return boxed(f"MODEL: {choice.name}\n{no_trained_model_message(offline)}", alarm=True)
    return f"Model: {choice.description}"


def models_in_results(output_dir):
    """The distinct values of the ``model`` column of ``results.csv`` (None: no file, column or value)."""
    path = Path(output_dir) / "results.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = sorted({row.get("model") for row in rows} - {None, ""})
    return names or None


def closing_report(choice, output_dir):
    """The run's last words: which model the results came from; a warning box when it was random."""
    from given.models import HOW_TO_GET_A_TRAINED_MODEL, RANDOM_MODEL_NAME

    found = models_in_results(output_dir)
    names = ", ".join(found) if found else f"{choice.name} (results.csv names no model)"
    if choice.is_random_fallback or (found and RANDOM_MODEL_NAME in found):
        return boxed(f"WARNING: every number in {output_dir} comes from a {RANDOM_MODEL_NAME}. They measure "
                     f"mechanics (sizes, latency, that every cell runs), not quality: the perplexities are "
                     f"about the vocabulary size and show none of the lab's lessons.\n"
                     f"{HOW_TO_GET_A_TRAINED_MODEL}", alarm=True)
    return f"Done: every cell ran. The numbers come from {names}: {choice.description}."


def section_titles(notebook):
    """For each cell, the title of the section it belongs to: the text of the last markdown heading
    (``#``, ``##`` or ``###``) at or before it ("" before the first heading)."""
    titles, current = [], ""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            headings = [line.lstrip("#").strip() for line in cell.source.splitlines()
                        if line.startswith("#") and line.lstrip("#").startswith(" ")]
            current = headings[-1] if headings else current
        titles.append(current)
    return titles


def clock(seconds):
    """Elapsed time as ``m:ss`` (``h:mm:ss`` from an hour on)."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
    """What the run shows while the notebook executes.

    On a terminal: a tqdm bar over the notebook's code cells, with the current section's title and
    the elapsed time. Otherwise (a log file, CI, a pipe): no bar, one line per section as it starts,
    ``[m:ss] title``. Pass its ``cell_started`` / ``cell_finished`` as nbclient's ``on_cell_start`` /
    ``on_cell_complete`` hooks.
    """

    TITLE_WIDTH = 48

    def __init__(self, notebook, stream=None, *, interactive=None):
        from tqdm.auto import tqdm

        self.stream = sys.stdout if stream is None else stream
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.titles = section_titles(notebook)
        self.section, self.done = None, 0
        self.start = time.perf_counter()
        total = sum(cell.cell_type == "code" for cell in notebook.cells)
        self.bar = tqdm(total=total, unit="cell", file=self.stream, disable=not self.interactive,
                        dynamic_ncols=True, bar_format="{desc}: {bar} {n_fmt}/{total_fmt} cells [{elapsed}]")

    def short(self, title):
        return title if len(title) <= self.TITLE_WIDTH else title[:self.TITLE_WIDTH - 3].rstrip() + "..."

    def cell_started(self, cell, cell_index, **_):
        if cell.cell_type != "code":
            return
        title = self.titles[cell_index] or "set-up"
        if title != self.section:
            self.section = title
            if self.interactive:
                self.bar.set_description_str(self.short(title))
            else:
                print(f"[{clock(time.perf_counter() - self.start)}] {title}", file=self.stream, flush=True)

    def cell_finished(self, cell, cell_index, **_):
        if cell.cell_type == "code":
            self.done += 1
            self.bar.update(1)

    def close(self):
        self.bar.close()


def first_error(notebook):
    """``(cell index, error name, message)`` of the first cell with an error output, or None."""
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return index, output.get("ename"), output.get("evalue")
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebook", default=str(NOTEBOOK), help="notebook to run (default: the lab's)")
    parser.add_argument("--output-dir", default=str(PROJECT_ROOT / "outputs"),
                        help="where the executed notebook, results and plots go (default: outputs/)")
    parser.add_argument("--offline", action="store_true",
                        help="never contact the hub (sets HF_HUB_OFFLINE=1): the offline model, local data")
    parser.add_argument("--model", help="hub id or local save_pretrained folder (default: Google's BERT from "
                                        "the hub, else the offline model, else a random BERT-tiny)")
    parser.add_argument("--data", help="folder with wiki.test.raw/wiki.valid.raw, or 'hub' "
                                       "(default: ../shared/data/wikitext-2-raw-v1 when present, else the hub)")
    parser.add_argument("--mode", choices=("auto", "quick", "full"), default="auto",
                        help="auto: full on a GPU, quick on a CPU (default)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("-p", "--parameter", action="append", type=parse_assignment, default=[],
                        metavar="NAME=VALUE", help="any other notebook parameter, e.g. -p EVAL_TOKENS=4096")
    parser.add_argument("--cell-timeout", type=int, default=3600, help="seconds per cell before failing (3600)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (python3)")
    args = parser.parse_args(argv)
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # the kernel inherits it: no network call at all
        os.environ["HF_DATASETS_OFFLINE"] = "1"

    from given.models import choose_model
    try:
        choice = choose_model(args.model, offline=args.offline)
    except (FileNotFoundError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(model_line(choice), flush=True)

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from given.quiet import quiet_known_noise

    notebook_path = Path(args.notebook).resolve()
    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    executed_path = output_dir / f"{notebook_path.stem}.executed.ipynb"
    notebook = nbformat.read(notebook_path, as_version=4)
    parameters = build_parameters(args)
    inject_parameters(notebook, parameters)

    print(f"Running {notebook_path.name} with {parameters}", flush=True)
    progress = Progress(notebook)
    client = NotebookClient(notebook, timeout=args.cell_timeout, kernel_name=args.kernel,
                            resources={"metadata": {"path": str(notebook_path.parent)}},
                            on_cell_start=progress.cell_started, on_cell_complete=progress.cell_finished)
    quiet_known_noise(client)  # the kernel's harmless start-up warnings (given/quiet.py)
    start, failure = time.perf_counter(), None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
        failure = error
    finally:
        progress.close()
        nbformat.write(notebook, executed_path)
    elapsed = time.perf_counter() - start

    print(f"Executed notebook: {executed_path} ({elapsed:.0f} s)")
    if failure is not None:
        where = first_error(notebook)
        detail = f"cell {where[0]}: {where[1]}: {where[2]}" if where else str(failure).splitlines()[0]
        print(f"FAILED: {detail}\n(see the executed notebook for the traceback)", file=sys.stderr)
        return 1
    for name in ("results.csv", "results.json", "size_vs_perplexity.png", "latency.png"):
        path = output_dir / name
        print(f"  {path}" if path.is_file() else f"  (missing: {path})")
    print(closing_report(choice, output_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
