"""The Istio field inventory: tests/data/istio_fields.txt is well formed and
docs/compat/istio.md lists exactly its rows (same path, type and default),
each with a status of the documented kinds."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ROOT / "tests" / "data" / "istio_fields.txt"
DOC = ROOT / "docs" / "compat" / "istio.md"

ISTIO_KINDS = {"VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry", "Gateway",
               "Sidecar", "PeerAuthentication", "RequestAuthentication",
               "AuthorizationPolicy"}
CORE_KINDS = {"Service", "Endpoints", "EndpointSlice", "Pod", "Namespace"}
STATUS = re.compile(r"^(TBD|works|(warning|error): \S.*)$")


def inventory():
    """Data lines of the inventory as (kind, path, type, default), in file order."""
    rows = []
    for n, line in enumerate(FIELDS.read_text().splitlines(), 1):
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        assert len(fields) == 4, f"{FIELDS.name}:{n}: want 4 tab-separated fields: {line!r}"
        assert all(f and f == f.strip() for f in fields), \
            f"{FIELDS.name}:{n}: empty or padded field: {line!r}"
        rows.append(tuple(fields))
    return rows


def doc_tables():
    """Field-table rows of the doc as {(kind, path, type, default): status}, by section heading."""
    rows, kind = {}, None
    cell = re.compile(r"^`([^`]+)`$")
    for n, line in enumerate(DOC.read_text().splitlines(), 1):
        heading = re.match(r"^#{1,6} (.*)$", line)
        if heading:
            kind = heading.group(1) if heading.group(1) in ISTIO_KINDS | CORE_KINDS else None
            continue
        if kind is None or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 5, f"{DOC.name}:{n}: want 5 cells: {line!r}"
        path, typ = (cell.match(c) for c in cells[:2])
        assert path and typ, f"{DOC.name}:{n}: path and type must be code: {line!r}"
        key = (kind, path.group(1), typ.group(1), cells[2])
        assert key not in rows, f"{DOC.name}:{n}: row listed twice: {key}"
        rows[key] = cells[3]
    return rows


def parent(path):
    return re.sub(r"(\[\]|\.\{\}|\.[^.\[\]{}]+)$", "", path)


def test_inventory_is_sorted_unique_and_known_kinds():
    rows = inventory()
    lines = ["\t".join(r) for r in rows]
    assert lines == sorted(lines), "data lines must be sorted in byte order"
    assert len(set(lines)) == len(lines)
    assert len({r[:2] for r in rows}) == len(rows), "a (kind, path) pair appears twice"
    assert {r[0] for r in rows} == ISTIO_KINDS | CORE_KINDS


def test_istio_kind_paths_form_a_tree():
    rows = inventory()
    paths = {(k, p) for k, p, _, _ in rows}
    for kind, path, typ, _ in rows:
        if kind not in ISTIO_KINDS:
            continue
        if path == "spec":
            assert typ == f"message({kind})"
            continue
        assert (kind, parent(path)) in paths, f"{kind} {path}: no row for its parent {parent(path)}"
        if path.endswith("[]"):
            assert typ.startswith("message(")
            up = next(t for k, p, t, _ in rows if (k, p) == (kind, parent(path)))
            assert up == f"list<{typ}>", f"{kind} {path}: element {typ} under {up}"


def test_doc_lists_exactly_the_inventory():
    want = set(inventory())
    got = doc_tables()
    missing = sorted(want - got.keys())
    extra = sorted(got.keys() - want)
    assert not missing, f"in {FIELDS.name}, not in the doc tables: {missing[:10]}"
    assert not extra, f"in the doc tables, not in {FIELDS.name}: {extra[:10]}"


def test_doc_statuses_are_known():
    bad = {k: s for k, s in doc_tables().items() if not STATUS.match(s)}
    assert not bad, \
        f"status must be TBD, works, 'warning: REASON' or 'error: REASON': {list(bad.items())[:5]}"


def test_doc_row_counts_match():
    rows = inventory()
    counts = {k: sum(1 for r in rows if r[0] == k) for k in ISTIO_KINDS | CORE_KINDS}
    stated = dict(re.findall(r"^\| (\w+) \|.*\| (\d+) \|$", DOC.read_text(), flags=re.M))
    assert {k: int(stated[k]) for k in counts if k in stated} == counts
    assert int(stated["total"]) == len(rows)
