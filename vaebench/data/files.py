"""Reading expression matrices from files: each reader returns a `Matrix` (samples x genes, float64, with
names), or refuses the file with a UserError of one line: the file, what is wrong with it, what to do.

Formats are told apart by their first bytes, not their names: a gzip stream, Parquet, NumPy, HDF5, else
text. Text tables go through pyarrow's CSV reader, which is multi-threaded and streams gzip. pandas'
`engine="pyarrow"` calls the same reader but with 1 MB blocks, about 20 rows of a 5,000-column table
each: reading 11,000 x 5,000 that way alone takes 3-4x as long as our whole first load (docs/data.md).
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import re
import stat
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from vaebench.errors import UserError

log = logging.getLogger(__name__)

GZIP, PARQUET, NPY, HDF5 = b"\x1f\x8b", b"PAR1", b"\x93NUMPY", b"\x89HDF\r\n\x1a\n"
BLOCK_BYTES = 64 << 20  # pyarrow's default of 1 MB is a handful of rows of a wide expression table
REDOWNLOAD = "the file is damaged or cut short: copy or download it again"


def one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Source:
    """A file named in the config; built by `Source.open`, which refuses a missing or empty one."""

    path: Path  # absolute
    shown: str  # as the user wrote it, for messages
    what: str  # "data file" | "labels file"
    key: str  # the config key that names it
    size: int
    mtime_ns: int

    @classmethod
    def open(cls, given: str, what: str, key: str) -> "Source":
        path = Path(os.path.expanduser(given)).absolute()
        try:
            st = path.stat()
        except FileNotFoundError:
            raise UserError(f"{what} '{given}' does not exist; check {key} (a relative path is taken from the "
                            f"directory vaebench runs in)") from None
        except OSError as e:
            raise UserError(f"{what} '{given}' cannot be read ({e.strerror}); check {key}") from None
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} '{given}' is not a file; point {key} at the file itself")
        if st.st_size == 0:
            raise UserError(f"{what} '{given}' is empty (0 bytes); {REDOWNLOAD}")
        return cls(path, given, what, key, st.st_size, st.st_mtime_ns)

    def identity(self) -> dict[str, Any]:
        """What the cache is keyed by: where the file is and its size and modification time (see docs/data.md)."""
        return {"path": str(self.path), "size": self.size, "mtime_ns": self.mtime_ns}

    def refuse(self, problem: str, fix: str) -> UserError:
        return UserError(f"{self.what} '{self.shown}': {problem}; {fix}")

    @property
    def configured(self) -> bool:
        """Named by a data.* config key (a run's data), so hints may name config keys; vaebench-embed's MATRIX
        is read with a saved model's preparation, which no key of its command line changes."""
        return self.key.startswith("data.")

    def magic(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read(8)


@dataclass
class Matrix:
    values: np.ndarray  # float64 [samples, genes]; may still hold NaN/Inf (prepare checks them)
    sample_ids: list[str]
    gene_names: list[str]
    labels: Optional[list[str]] = None
    notes: dict[str, Any] = field(default_factory=dict)  # what reading changed, for the result's record


# ---- text tables -------------------------------------------------------------------------------------

def _text_header(src: Source) -> tuple[list[str], str, bool]:
    """The header fields, the delimiter (tab when the header has one, else comma) and whether it is gzip."""
    gz = src.magic().startswith(GZIP)
    opener = gzip.open if gz else open
    try:
        with opener(src.path, "rt", encoding="utf-8-sig", newline="") as f:
            line, first_row = f.readline(), f.readline()
    except (OSError, EOFError, zlib.error) as e:
        raise src.refuse(f"is not a readable gzip file ({one_line(e)})", REDOWNLOAD) from None
    except UnicodeDecodeError:
        if b"\0" in _head(src, gz):  # binary, not text in another encoding
            raise src.refuse("is not a text table (it holds binary data)", "give a .csv/.tsv (gzip or not), "
                             ".parquet or .npy file, or an .h5ad with data=h5ad") from None
        raise src.refuse(*_not_utf8(src, gz)) from None
    line = line.rstrip("\r\n")
    if not line.strip():
        raise src.refuse("has no header line (the file or its first line is empty)",
                         "the first line must name the columns")
    sep = "\t" if "\t" in line else ","
    header = next(csv.reader([line], delimiter=sep))
    if first_row.strip() and len(next(csv.reader([first_row], delimiter=sep))) == len(header) + 1:
        header = ["", *header]  # R's write.table leaves the row names' column out of the header
    if len(header) < 2:
        raise src.refuse("has a single column", "separate columns with tabs or commas; the first column holds ids")
    return header, sep, gz


def _head(src: Source, gz: bool) -> bytes:
    try:
        with (gzip.open if gz else open)(src.path, "rb") as f:
            return f.read(8192)
    except (OSError, EOFError, zlib.error):
        return b""


def _not_utf8(src: Source, gz: bool) -> tuple[str, str]:
    """Where the text stops being UTF-8, and how to convert it (only after a decoding error: reads line by line)."""
    where = "somewhere"
    with (gzip.open if gz else open)(src.path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                byte = line[e.start]
                where = f"line {number} holds the byte 0x{byte:02x} ({bytes([byte]).decode('latin-1')!r} in Latin-1)"
                break
    convert = f"iconv -f latin1 -t utf-8 '{src.shown}' > converted{''.join(src.path.suffixes)}"
    if gz:
        convert = f"zcat '{src.shown}' | iconv -f latin1 -t utf-8 | gzip > converted{''.join(src.path.suffixes)}"
    return (f"is not UTF-8 text ({where}; probably Latin-1 or Windows-1252)",
            f"save it as UTF-8, e.g. {convert}, and point {src.key} at the converted file")


def _read_text(src: Source, header: list[str], sep: str, gz: bool, text_columns: set[int],
               numeric_fix: str = "") -> pa.Table:
    """Columns c0, c1, ...: those in text_columns as strings, all others as float64."""
    names = [f"c{i}" for i in range(len(header))]
    types = {n: (pa.string() if i in text_columns else pa.float64()) for i, n in enumerate(names)}
    options = dict(read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=BLOCK_BYTES),
                   parse_options=pacsv.ParseOptions(delimiter=sep))
    try:
        with pa.input_stream(str(src.path), compression="gzip" if gz else None) as stream:
            table = pacsv.read_csv(stream, convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=True), **options)
    except pa.ArrowInvalid as e:
        if "invalid UTF8" in str(e):
            raise src.refuse(*_not_utf8(src, gz)) from None
        bad = re.search(r"In CSV column #(\d+): CSV conversion error", str(e))
        if bad:
            try:
                problem = _first_non_number(src, header, gz, int(bad.group(1)), options)
            except pa.ArrowInvalid:  # the cell is not even UTF-8 text
                raise src.refuse(*_not_utf8(src, gz)) from None
            raise src.refuse(problem, numeric_fix or "every value must be a number") from None
        raise src.refuse(f"is not a well-formed {'tab' if sep == chr(9) else 'comma'}-separated table "
                         f"({one_line(e)})", "every row needs one field per header column") from None
    except (OSError, EOFError, zlib.error) as e:
        raise src.refuse(f"cannot be read to the end ({one_line(e)})", REDOWNLOAD) from None
    if table.num_rows == 0:
        raise src.refuse("has a header but no data rows", "check that the file is complete")
    return table


def _first_non_number(src: Source, header: list[str], gz: bool, k: int, options: dict) -> str:
    """Re-read one column as text (only after a conversion error) to name the first cell that is no number."""
    pair = ["c0", f"c{k}"]
    with pa.input_stream(str(src.path), compression="gzip" if gz else None) as stream:
        table = pacsv.read_csv(stream, convert_options=pacsv.ConvertOptions(
            include_columns=pair, column_types={n: pa.string() for n in pair}, strings_can_be_null=True), **options)
    ids, cells = table.column(0).to_pylist(), table.column(1).to_pylist()
    for i, cell in enumerate(cells):
        try:
            if cell is not None:
                float(cell)
        except ValueError:
            return f"row '{ids[i]}' (line {i + 2}), column '{header[k]}' holds {cell!r}, which is not a number"
    return f"column '{header[k]}' holds a value that is not a number"


def _ids(src: Source, column: pa.ChunkedArray, what: str) -> list[str]:
    ids = column.to_pylist()
    if column.null_count:
        raise src.refuse(f"the {what} on line {ids.index(None) + 2} is empty", f"every row needs its {what}")
    return ids


def _require_id_column(src: Source, name: str, ids: list[Any]) -> None:
    """The first column holds sample ids. A column of numbers there is a gene of a table written without
    ids; taking it as ids would drop that gene silently. Distinct whole numbers (1, 2, 3) pass as ids."""
    numbers = []
    for value in ids:
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            return
    if all(x.is_integer() for x in numbers) and len(set(numbers)) == len(numbers):
        return
    raise src.refuse(f"its first column{f' ({name!r})' if name else ''} holds numbers ({', '.join(map(str, ids[:2]))}, ...), "
                     "not sample ids: it looks like a gene of a table written without ids",
                     "vaebench takes the first column as sample ids: add a column of ids before the genes, "
                     "or save the bare matrix as .npy (samples are then numbered)")


def _require_unique(src: Source, names: list[str], what: str) -> None:
    if len(set(names)) != len(names):
        dup = [n for n, c in Counter(names).items() if c > 1]
        raise src.refuse(f"{len(dup)} duplicated {what}s (first: '{dup[0]}')", f"each {what} must appear once")


def _columns_as_rows(table: pa.Table, columns: list[int], rows: Optional[np.ndarray] = None) -> np.ndarray:
    """float64 [len(columns), n]: column j of the table becomes row j (optionally only some of its rows)."""
    n = table.num_rows if rows is None else len(rows)
    out = np.empty((len(columns), n))
    for j, c in enumerate(columns):
        values = table.column(c).to_numpy()
        out[j] = values if rows is None else values[rows]
    return out


# ---- the three layouts -------------------------------------------------------------------------------

def read_table(src: Source, label_column: Optional[str]) -> Matrix:
    """Samples x genes: first column sample ids, header gene names; .csv/.tsv (gzip or not), .parquet, .npy."""
    magic = src.magic()
    if magic.startswith(HDF5):
        raise src.refuse("is an HDF5 file", "read an AnnData .h5ad file with data=h5ad")
    if magic.startswith(PARQUET):
        return _read_parquet(src, label_column)
    if magic.startswith(NPY):
        return _read_npy(src, label_column)
    header, sep, gz = _text_header(src)
    label_at = None
    if label_column is not None:
        if label_column not in header[1:]:
            raise src.refuse(f"has no column '{label_column}'", "set data.label_column to one of its column names, "
                             "or give the labels in a side file with data.labels_path")
        label_at = header.index(label_column, 1)
    fix = "every value must be a number" + (
        "" if label_column else "; if this column holds labels, name it with data.label_column" if src.configured
        else "; drop the columns that are not genes (labels, notes): only the first column may hold text")
    table = _read_text(src, header, sep, gz, {0} if label_at is None else {0, label_at}, fix)
    genes = [i for i in range(1, len(header)) if i != label_at]
    ids = _ids(src, table.column(0), "sample id")
    _require_id_column(src, header[0], ids)
    matrix = Matrix(values=_columns_as_rows(table, genes).T, sample_ids=ids, gene_names=[header[i] for i in genes])
    require_orientation(src, matrix, genes_in_rows=False)
    if label_at is not None:
        matrix.labels = _labels(src, matrix.sample_ids, table.column(label_at).to_pylist())
    return matrix


def _read_parquet(src: Source, label_column: Optional[str]) -> Matrix:
    import pandas as pd

    try:
        frame = pd.read_parquet(src.path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise src.refuse(f"cannot be read as Parquet ({one_line(e)})", REDOWNLOAD) from None
    if not isinstance(frame.index, pd.RangeIndex):  # written from a frame indexed by sample id
        frame = frame.reset_index()
    if frame.shape[0] == 0 or frame.shape[1] < 2:
        raise src.refuse(f"holds {frame.shape[0]} rows and {frame.shape[1]} columns",
                         "it needs sample ids in the first column and one column per gene")
    names = [str(c) for c in frame.columns]
    if label_column is not None and label_column not in names[1:]:
        raise src.refuse(f"has no column '{label_column}'", "set data.label_column to one of its column names")
    genes = [c for c in names[1:] if c != label_column]
    for name in genes:
        column = frame[name]
        if not pd.api.types.is_numeric_dtype(column):
            bad = pd.to_numeric(column, errors="coerce").isna() & column.notna()
            if not bad.any():  # '53.3' stored as a string: the column's type is wrong, not its values
                raise src.refuse(f"column '{name}' is stored as text ({column.dtype}, e.g. {column.iloc[0]!r}), "
                                 "not as numbers", "write the gene columns with a numeric type, e.g. "
                                 "frame[genes] = frame[genes].astype(float) before to_parquet")
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise src.refuse(f"row '{frame.iloc[row, 0]}', column '{name}' holds {column.iloc[row]!r}, which is not "
                             "a number", "every gene column must be numeric")
    ids = frame.iloc[:, 0]
    if ids.isna().any():
        raise src.refuse(f"the sample id in row {int(np.flatnonzero(ids.isna().to_numpy())[0])} is empty",
                         "every row needs its sample id")
    _require_id_column(src, names[0], ids.tolist())
    values = frame[genes].to_numpy()
    if np.iscomplexobj(values):
        raise src.refuse(*_complex(values))
    matrix = Matrix(values=values.astype(np.float64), sample_ids=[str(s) for s in ids], gene_names=genes)
    require_orientation(src, matrix, genes_in_rows=False)
    if label_column is not None:
        matrix.labels = _labels(src, matrix.sample_ids, frame[label_column].tolist())
    return matrix


def _read_npy(src: Source, label_column: Optional[str]) -> Matrix:
    try:
        values = np.load(src.path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):  # never unpickled: loading it could run code from the file
            raise src.refuse("holds Python objects (an object array), not numbers",
                             "save a numeric array, e.g. np.save(path, x.astype(np.float32))") from None
        raise src.refuse(f"cannot be read as a .npy array ({one_line(e)})", REDOWNLOAD) from None
    except (OSError, EOFError) as e:
        raise src.refuse(f"cannot be read as a .npy array ({one_line(e)})", REDOWNLOAD) from None
    if np.iscomplexobj(values):
        raise src.refuse(*_complex(values))
    if values.ndim != 2 or values.size == 0 or not np.issubdtype(values.dtype, np.number):
        raise src.refuse(f"holds a {values.dtype} array of shape {values.shape}",
                         "a .npy file must hold one numeric samples x genes matrix")
    if label_column is not None:
        raise src.refuse("has no columns to take labels from", "give the labels in a side file with "
                         "data.labels_path; a .npy file's samples are named by row number: 0, 1, ...")
    return Matrix(values=values.astype(np.float64), sample_ids=[str(i) for i in range(values.shape[0])],
                  gene_names=[str(j) for j in range(values.shape[1])])


def _complex(values: np.ndarray) -> tuple[str, str]:
    return (f"holds complex numbers ({values.dtype}); their imaginary parts would be dropped",
            "save real values, e.g. np.abs(x) or x.real, whichever your data means")


def read_xena(src: Source, sample_id_length: Optional[int], sort_samples: bool) -> Matrix:
    """Genes x samples as UCSC Xena ships HiSeqV2, with tybalt's clean-up of the gene ids: keep the symbol
    before '|', drop the '?' rows (no symbol) and every row of a symbol that appears more than once."""
    if src.magic().startswith((PARQUET, NPY, HDF5)):
        raise src.refuse("is not a text table", "data=xena reads a genes x samples .tsv (gzip or not); "
                         "for a samples x genes .parquet or .npy use data=table, for .h5ad data=h5ad")
    header, sep, gz = _text_header(src)
    table = _read_text(src, header, sep, gz, {0})
    gene_ids = _ids(src, table.column(0), "gene id")
    require_orientation(src, Matrix(np.empty((0, 0)), header[1:], gene_ids), genes_in_rows=True)
    symbols = [gene.split("|")[0] for gene in gene_ids]
    counts = Counter(symbols)
    keep = np.array([i for i, s in enumerate(symbols) if s != "?" and counts[s] == 1], dtype=np.int64)
    duplicated = sorted(s for s, c in counts.items() if c > 1 and s != "?")
    if duplicated:
        log.info("%s: dropping %d genes listed more than once (as tybalt did): %s", src.shown, len(duplicated),
                 ", ".join(duplicated[:10]))
    samples = header[1:] if sample_id_length is None else [s[:sample_id_length] for s in header[1:]]
    _require_unique(src, samples, "sample id" if sample_id_length is None else
                    f"sample id (cut to data.sample_id_length={sample_id_length} characters)")
    order = sorted(range(len(samples)), key=samples.__getitem__) if sort_samples else list(range(len(samples)))
    if len(keep) == 0:
        raise src.refuse("has no gene left after dropping '?' and duplicated ids", "check that it is genes x samples")
    return Matrix(values=_columns_as_rows(table, [j + 1 for j in order], keep), sample_ids=[samples[j] for j in order],
                  gene_names=[symbols[i] for i in keep],
                  notes={"xena_dropped_unknown_genes": counts.get("?", 0),
                         "xena_dropped_duplicated_genes": sum(counts[s] for s in duplicated)})


def read_h5ad(src: Source, layer: Optional[str], label_column: Optional[str]) -> Matrix:
    try:
        import anndata
    except ImportError:
        raise src.refuse("reading .h5ad files needs the optional package anndata",
                         "install it with: pip install -e '.[h5ad]' in the vaebench clone (make install includes it)") from None
    if not src.magic().startswith(HDF5):
        raise src.refuse("is not an HDF5 (.h5ad) file", "read a csv/tsv with data=table, a Xena matrix with data=xena")
    try:  # anndata's warnings (old formats, names made unique) go to the log, after reading: never before a refusal
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            adata = anndata.read_h5ad(src.path)
    except Exception as e:  # noqa: BLE001 - h5py and anndata raise many types for a damaged file
        raise src.refuse(f"cannot be read as AnnData ({type(e).__name__}: {one_line(e)})", REDOWNLOAD) from None
    for warning in said:
        log.info("%s: anndata: %s", src.shown, one_line(warning.message))
    if layer is not None and layer not in adata.layers:
        raise src.refuse(f"has no layer '{layer}' (layers: {', '.join(adata.layers) or 'none'})",
                         "set data.layer to one of them, or null for X")
    values = adata.X if layer is None else adata.layers[layer]
    if values is None:
        raise src.refuse("has no X matrix", "name the matrix to use with data.layer")
    if hasattr(values, "toarray"):  # scipy sparse: the models need the dense matrix anyway
        values = values.toarray()
    values = np.asarray(values)
    if np.iscomplexobj(values):
        raise src.refuse(*_complex(values))
    if not np.issubdtype(values.dtype, np.number) or values.size == 0:
        raise src.refuse(f"its matrix is a {values.dtype} array of shape {values.shape}",
                         "it needs a numeric cells/samples x genes matrix")
    matrix = Matrix(values=values.astype(np.float64), sample_ids=[str(s) for s in adata.obs_names],
                    gene_names=[str(g) for g in adata.var_names])
    if label_column is not None:
        if label_column not in adata.obs.columns:
            columns = ", ".join(adata.obs.columns) or "none"
            raise src.refuse(f"has no obs column '{label_column}' (obs columns: {columns})",
                             "set data.label_column to one of them")
        column = adata.obs[label_column]
        matrix.labels = _labels(src, matrix.sample_ids, [None if missing else str(v) for v, missing in
                                                         zip(column.tolist(), column.isna().tolist())])
    return matrix


# ---- orientation: samples x genes or genes x samples ----------------------------------------------------

# Ids that name genes beyond doubt: Ensembl gene ids (human ENSG, mouse ENSMUSG, ...), Xena's SYMBOL|Entrez.
GENE_ID = re.compile(r"^(ENS[A-Z]*G\d{6,}(\.\d+)?|[A-Za-z0-9][A-Za-z0-9.\-]*\|\d+)$")
# Ids that name samples beyond doubt: TCGA barcodes (R's read.table writes their '-' as '.'), cell barcodes
# (10x: 16 bases, a '-1' suffix), GEO and SRA accessions.
SAMPLE_ID = re.compile(r"^(TCGA[-.][A-Z0-9]{2}[-.][A-Z0-9]{4}([-.][0-9A-Z]{2,4})*|[ACGTN]{12,}(-\d+)?|GSM\d+|[SED]RR\d+)$")
ID_SHARE = 0.8  # the share of an axis's ids that must match to call it named by genes (or samples)


def _share(ids: list[str], pattern: re.Pattern) -> float:
    sample = [str(i) for i in ids[:2000]]
    return sum(bool(pattern.match(i)) for i in sample) / len(sample) if sample else 0.0


def require_orientation(src: Source, matrix: Matrix, genes_in_rows: bool) -> None:
    """Refuse a matrix read in the wrong orientation: a genes x samples file given as data=table (its sample ids
    are gene ids, its genes are samples) or a samples x genes file given as data=xena. Decided by the ids alone,
    when one axis is named by gene ids (Ensembl, SYMBOL|Entrez) or sample ids (TCGA or cell barcodes, GEO/SRA
    accessions) beyond doubt and the other axis does not say the opposite; ids of neither kind pass."""
    samples, genes = matrix.sample_ids, matrix.gene_names  # as read: samples are what the layout takes for them
    swapped = max(_share(samples, GENE_ID), _share(genes, SAMPLE_ID)) >= ID_SHARE
    as_read = max(_share(samples, SAMPLE_ID), _share(genes, GENE_ID)) >= ID_SHARE
    if not swapped or as_read:
        return
    first = str(samples[0]) if samples else ""
    if genes_in_rows:
        problem = (f"looks samples x genes, not genes x samples as data={'xena' if src.configured else 'its layout'} "
                   f"reads it: its first column holds sample ids ('{genes[0]}', ...) and its header gene ids ('{first}', ...)")
        fix = ("read a samples x genes table with data=table" if src.configured
               else "the model was trained on a genes x samples (Xena) matrix: transpose this file")
    else:
        problem = (f"looks genes x samples, not samples x genes as {'data=table' if src.configured else 'its layout'} "
                   f"reads it: its first column holds gene ids ('{first}', ...) and its header sample ids "
                   f"('{genes[0]}', ...)")
        fix = ("read a genes x samples matrix with data=xena, or transpose the file" if src.configured
               else "the model was trained on a samples x genes table: transpose this file")
    raise src.refuse(problem, fix)


# ---- labels ------------------------------------------------------------------------------------------

def _labels(src: Source, sample_ids: list[str], values: list[Any]) -> list[str]:
    for sample, value in zip(sample_ids, values):
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "":
            raise src.refuse(f"sample '{sample}' has an empty label", "give every sample a label or drop the sample")
    return [str(v) for v in values]


def same_sample(sample_id: str, cut: Optional[int]) -> str:
    """A sample id as label tables and data files may both spell it: TCGA barcodes with '.' for '-' (R's
    read.table makes them so), cut to `cut` characters as data.sample_id_length cut the data's (tybalt: 15,
    TCGA-22-4593-01 for the label table's TCGA-22-4593-01A)."""
    sample_id = sample_id.replace(".", "-")
    return sample_id if cut is None else sample_id[:cut]


def read_labels(src: Source, column: Optional[str], sample_ids: list[str], cut: Optional[int] = None) -> list[str]:
    """One label per sample from a side table whose first column holds the data file's sample ids: the same
    ids, or ids that match once both are spelt by `same_sample` (and that spelling names one row only)."""
    if src.magic().startswith((PARQUET, NPY, HDF5)):
        raise src.refuse("is not a text table", "give a .csv/.tsv with sample ids in the first column")
    header, sep, gz = _text_header(src)
    if column is None:
        if len(header) != 2:
            raise src.refuse(f"has {len(header) - 1} label columns ({', '.join(header[1:])})",
                             "choose one with data.label_column")
        at = 1
    elif column in header[1:]:
        at = header.index(column, 1)
    else:
        raise src.refuse(f"has no column '{column}' (columns: {', '.join(header[1:])})",
                         "set data.label_column to one of them")
    table = _read_text(src, header, sep, gz, set(range(len(header))))
    ids = _ids(src, table.column(0), "sample id")
    _require_unique(src, ids, "sample id")
    values = table.column(at).to_pylist()
    by_id = dict(zip(ids, values))
    if any(s not in by_id for s in sample_ids):
        spelt = Counter(same_sample(i, cut) for i in ids)
        by_spelling = {same_sample(i, cut): v for i, v in zip(ids, values) if spelt[same_sample(i, cut)] == 1}
        respelt = {s: by_spelling[same_sample(s, cut)] for s in sample_ids
                   if s not in by_id and same_sample(s, cut) in by_spelling}
        by_id.update(respelt)
        log.info("%s: %d samples matched their label row with '.' read as '-'%s", src.shown, len(respelt),
                 "" if cut is None else f" and ids cut to {cut} characters")
    missing = [s for s in sample_ids if s not in by_id]
    if missing:
        how = "" if cut is None else f" and cut to data.sample_id_length={cut} characters as the data's ids are"
        raise src.refuse(f"has no row for {len(missing)} of the {len(sample_ids)} samples (first: '{missing[0]}'); "
                         f"ids compared as they are, then with '.' read as '-'{how}; this file's first id: "
                         f"'{ids[0] if ids else ''}'",
                         "its first column must hold the data file's sample ids")
    return _labels(src, sample_ids, [by_id[s] for s in sample_ids])


def require_unique_names(src: Source, matrix: Matrix) -> None:
    _require_unique(src, matrix.sample_ids, "sample id")
    _require_unique(src, matrix.gene_names, "gene name")
