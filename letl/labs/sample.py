"""Deterministic sample lab drops: realistic values, planted defects, messy file formats.

The parser and its checks are tested against these files, so every defect is planted on a
row of its own and counted exactly, and every random draw is seeded from (seed, hospital,
month): a rerun reproduces the same bytes, and a patient looks the same in every month.
"""

from __future__ import annotations

import codecs
import gzip as gz
import os
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from letl.labs.sample_results import plant_result_kinds, replace_rows
from letl.labs.schema import DROP_COLUMNS, LAB_TESTS, Reason

# Accented names are all Latin-1 representable, so the same records survive a Latin-1 drop;
# the nickname with quotes exercises RFC 4180 quote doubling.
FIRST_F = ("Mary", "Patricia", "Linda", "Françoise", "Zoë", "Inés", "María", "Lucía", "Anaïs",
           "Hélène", "Agnès", "Åsa", "Siobhán", "Chloé", "Renée", "Ingrid", "Aisha", "Mei",
           "Priya", "Olga", 'Katherine "Kate"', "Jennifer", "Susan", "Grace")
FIRST_M = ("James", "John", "Robert", "José", "Søren", "Björn", "Jürgen", "André", "Ángel",
           "Raúl", "Jörg", "Óscar", "François", "Håkon", "Noël", "Joël", "Ahmed", "Wei",
           "Rahul", "Dmitri", "Michael", "David", "Thomas", "Kwame")
LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
        "Anderson", "Nguyen", "Kim", "Patel", "Chen", "Cohen", "Kowalski", "O'Brien", "Müller",
        "García", "Núñez", "Jørgensen", "Söderström", "Peña", "Gómez", "Lefèvre", "Dupré",
        "Côté", "Schröder", "Strauß", "Åberg", "Muñoz", "Ibáñez", "Smith-Jones", "Okafor")
# Relative ordering frequency by LOINC code: chemistry panels dominate, A1c/lipids are rarer.
TEST_WEIGHTS = {"2345-7": 14, "2160-0": 12, "2951-2": 13, "2823-3": 13, "718-7": 12, "6690-2": 10,
                "777-3": 10, "4548-4": 5, "2093-3": 5, "1742-6": 6}
BAD_DATES = ("2024-13-45 25:61:00", "not-a-date", "31/02/2024", "2024-02-30 08:15:00", "TBD",
             "00/00/0000")  # invalid under every day/month order, so no parser can "rescue" them
MISSING = ("", "", "  ")  # a cancelled test: the result is empty, or only spaces
KINDS = (Reason.BAD_DATE, Reason.MISSING_RESULT, Reason.MISSING_PATIENT_ID, Reason.OUT_OF_RANGE,
         Reason.DUPLICATE, Reason.MALFORMED)
# Export quirks per hospital (index mod 5), as a hospital's system tends to keep its habits.
PROFILES = ({}, {"encoding": "latin-1", "crlf": True}, {"bom": True, "crlf": True},
            {"gzip": True}, {"shuffle_columns": True})
_POOL_CHUNK = 1024
_WRITE_CHUNK = 262_144


@dataclass(frozen=True)
class GeneratedDrop:
    path: Path
    hospital_id: str
    month: str
    rows: int
    defects: dict[str, int]
    kinds: dict[str, int]  # results planted that are not plain numbers (published, not rejected)


def _code(text: str) -> int:
    # crc32, not hash(): str hashes are salted per process and would break determinism.
    return zlib.crc32(text.encode())


def _quote(values) -> pa.Array:
    # Quoting is decided on small vocabularies only, so the per-row path never runs a regex.
    arr = pa.array(values, pa.string())
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(arr, '"', '""'), '"', "")
    return pc.if_else(pc.match_substring_regex(arr, r'[",\r\n]'), quoted, arr)


def _patients(seed: int, hosp: int, n: int) -> dict[str, pa.Array]:
    # Seeded per chunk of patient indices, so patient i does not depend on the pool size.
    draws = []
    for c in range(-(-n // _POOL_CHUNK)):
        rng = np.random.default_rng([seed, hosp, 2, c])
        sex = rng.choice(3, _POOL_CHUNK, p=[0.49, 0.49, 0.02])
        draws.append((sex, rng.integers(0, 1 << 30, _POOL_CHUNK), rng.integers(0, len(LAST), _POOL_CHUNK),
                      rng.integers(-16436, 16801, _POOL_CHUNK),  # 1925-01-01 .. 2015-12-31
                      rng.random(_POOL_CHUNK), rng.integers(0, 100_000, _POOL_CHUNK)))
    sex, first, last, born, far, anyzip = (np.concatenate(d)[:n] for d in zip(*draws, strict=False))
    nf, nm = len(FIRST_F), len(FIRST_M)
    first = np.where(sex == 0, first % nf, np.where(sex == 1, nf + first % nm, first % (nf + nm)))
    name = pc.binary_join_element_wise(pa.array(LAST).take(last), pa.array(FIRST_F + FIRST_M).take(first), ", ")
    # MRNs: an affine map mod 10^7 with a multiplier coprime to 10, hence unique per hospital.
    h = np.random.default_rng([seed, hosp, 3])
    mult, off = int(h.integers(1, 10**6)) * 10 + int(h.choice([1, 3, 7, 9])), int(h.integers(0, 10**7))
    mrn = (np.arange(n, dtype=np.int64) * mult + off) % 10**7
    # Most patients live near the hospital; the rest (some with leading-zero zips) anywhere.
    zips = np.where(far < 0.85, (hosp % 1000) * 100 + anyzip % 100, anyzip)
    return {
        "patient_id": pc.binary_join_element_wise("MRN", pc.utf8_lpad(pa.array(mrn).cast(pa.string()), 7, "0"), ""),
        "patient_name": _quote(name),
        "birth_date": pa.array(born.astype(np.int32), pa.date32()).cast(pa.string()),
        "sex": pa.array(["F", "M", "U"]).take(sex),
        "zip": pc.utf8_lpad(pa.array(zips).cast(pa.string()), 5, "0"),
    }


def _cents(cents: np.ndarray) -> pa.Array:
    # Fixed two decimals ("98.50") from integer cents: exact, and no float repr surprises.
    whole = pa.array(cents // 100).cast(pa.string())
    return pc.binary_join_element_wise(whole, pc.utf8_lpad(pa.array(cents % 100).cast(pa.string()), 2, "0"), ".")


def write_drop(path: Path, *, hospital_id: str, month: str, rows: int, seed: int,
               defect_rate: float = 0.01, encoding: str = "utf-8", bom: bool = False, crlf: bool = False,
               shuffle_columns: bool = False, extra_columns: tuple[str, ...] = (), gzip: bool = False) -> GeneratedDrop:
    path, n, hosp = Path(path), int(rows), _code(hospital_id)
    enc = codecs.lookup(encoding).name
    if enc not in ("utf-8", "iso8859-1", "cp1252") or (bom and enc != "utf-8"):
        raise ValueError(f"unsupported encoding/BOM combination: {encoding!r}, bom={bom}")
    year, mon = int(month[:4]), int(month[5:7])
    rng = np.random.default_rng([seed, hosp, 1, year, mon])
    # Format choices draw from their own stream, so a messy file holds the same records as a plain one.
    fmt = np.random.default_rng([seed, hosp, 4, year, mon])
    start = np.datetime64(f"{month}-01", "s")
    span = int(((np.datetime64(month, "M") + 1).astype("datetime64[s]") - start).astype(np.int64))

    pool = _patients(seed, hosp, max(50, n // 5))
    pidx = (len(pool["sex"]) * rng.random(n) ** 2).astype(np.int64)  # frequent flyers get many draws
    collected = np.sort(rng.integers(0, span, n)) + start.astype(np.int64)  # LIS exports are time-ordered
    reported = collected + 3600 + (47 * 3600 * rng.random(n) ** 3).astype(np.int64)
    weights = np.array([TEST_WEIGHTS.get(t.code, 5) for t in LAB_TESTS], float)
    test = rng.choice(len(LAB_TESTS), n, p=weights / weights.sum())
    attr = {k: np.array([getattr(t, k) for t in LAB_TESTS], float)
            for k in ("mean", "sd", "min_possible", "max_possible", "ref_low", "ref_high")}
    cents = np.rint((attr["mean"][test] + attr["sd"][test] * rng.standard_normal(n)) * 100).astype(np.int64)
    # Clip in cents so rounding can never push a clean value outside the physiological range.
    lo_c, hi_c = np.ceil(attr["min_possible"] * 100 - 1e-6), np.floor(attr["max_possible"] * 100 + 1e-6)
    cents = np.clip(cents, lo_c[test], hi_c[test]).astype(np.int64)
    flag = np.where(cents > np.rint(attr["ref_high"] * 100)[test], 1, 0)
    flag = np.where(cents < np.rint(attr["ref_low"] * 100)[test], 2, flag)

    cols = {k: pool[k].take(pidx) for k in pool}
    cols["hospital_id"] = _quote([hospital_id]).take(np.zeros(n, np.int32))
    for col, vals in (("test_code", [t.code for t in LAB_TESTS]), ("test_name", [t.name for t in LAB_TESTS]),
                      ("unit", [t.unit for t in LAB_TESTS]), ("reference_low", [f"{t.ref_low:g}" for t in LAB_TESTS]),
                      ("reference_high", [f"{t.ref_high:g}" for t in LAB_TESTS])):
        cols[col] = _quote(vals).take(test)
    cols["result_value"] = _cents(cents)
    cols["abnormal_flag"] = pa.array(["N", "H", "L"]).take(flag)
    cols["collected_at"] = pa.array(collected, pa.timestamp("s")).cast(pa.string())
    cols["reported_at"] = pa.array(reported, pa.timestamp("s")).cast(pa.string())

    # Defects: k rows per kind, disjoint; row 0 stays clean so every duplicate has a source.
    k = round(n * defect_rate) if defect_rate > 0 else 0
    k = max(0, min(max(k, 1) if n >= 200 and defect_rate > 0 else k, (n - 1) // len(KINDS)))
    picks = np.sort((rng.permutation(max(n - 1, 0))[: k * len(KINDS)] + 1).reshape(len(KINDS), k), axis=1)
    bad_date, non_num, no_id, oor, dup, mal = picks
    cols["collected_at"] = replace_rows(cols["collected_at"], bad_date, rng.choice(BAD_DATES, k))
    cols["result_value"] = replace_rows(cols["result_value"], non_num, rng.choice(MISSING, k))
    cols["abnormal_flag"] = replace_rows(cols["abnormal_flag"], non_num, [""] * k)
    cols["patient_id"] = replace_rows(cols["patient_id"], no_id, [""] * k)
    t = test[oor]  # negative, or 2-100x the physiological maximum (a unit or decimal-point slip)
    bad = np.where(rng.random(k) < 0.5, np.minimum(attr["min_possible"][t], 0) - rng.uniform(1, 50, k),
                   attr["max_possible"][t] * rng.uniform(2, 100, k) + 1)
    cols["result_value"] = replace_rows(cols["result_value"], oor, [f"{v:.2f}" for v in bad])
    cols["abnormal_flag"] = replace_rows(cols["abnormal_flag"], oor,
                                     np.where(bad < attr["ref_low"][t], "L", "H"))
    is_clean = np.ones(n, bool)
    is_clean[picks] = False
    clean = np.flatnonzero(is_clean)
    source = clean[rng.integers(0, np.searchsorted(clean, dup))]  # an earlier clean row
    kinds = plant_result_kinds(cols, clean, test, n, np.random.default_rng([seed, hosp, 5, year, mon]))

    header = list(DROP_COLUMNS) + list(extra_columns)
    for extra in extra_columns:
        if extra == "ordering_provider":
            firsts = FIRST_F + FIRST_M
            names = [f"{LAST[i]}, {firsts[j]} MD"
                     for i, j in zip(fmt.integers(0, len(LAST), 25), fmt.integers(0, len(firsts), 25), strict=False)]
            cols[extra] = _quote(names).take(fmt.integers(0, 25, n))
        else:
            cols[extra] = pa.array([""]).take(np.zeros(n, np.int32))
    if shuffle_columns:
        header = [header[i] for i in fmt.permutation(len(header))]
    term = "\r\n" if crlf else "\n"
    # Duplicates and malformed lines are rendered apart and patched into the joined lines, so
    # the bulk path never has to gather rows. Malformed: a real row with one field lost.
    fields = [cols[c].take(np.concatenate([source, mal])).to_pylist() for c in header]
    drop_at = np.concatenate([np.full(k, -1), fmt.integers(0, len(header), k)])
    patch = [",".join(f for j, f in enumerate(row) if j != d) + term
             for row, d in zip(zip(*fields, strict=True), drop_at, strict=False)]
    where = np.concatenate([dup, mal])
    patch = [patch[i] for i in np.argsort(where)]
    is_patched = np.zeros(n, bool)
    is_patched[where] = True

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            # filename="" and mtime=0 keep the temp name and the clock out of the gzip header.
            out = gz.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) if gzip else raw
            out.write((("\ufeff" if bom else "") + ",".join(header) + term).encode(enc))
            done = 0
            for s in range(0, n, _WRITE_CHUNK):
                e = min(n, s + _WRITE_CHUNK)
                line = pc.binary_join_element_wise(*[cols[c].slice(s, e - s) for c in header], ",")
                line = pc.binary_join_element_wise(line, term, "")
                if (m := int(is_patched[s:e].sum())):
                    line = pc.replace_with_mask(line, pa.array(is_patched[s:e]), pa.array(patch[done:done + m]))
                    done += m
                offsets = np.frombuffer(line.buffers()[1], np.int32)[line.offset:line.offset + len(line) + 1]
                data = memoryview(line.buffers()[2])[offsets[0]:offsets[-1]]
                out.write(data if enc == "utf-8" else bytes(data).decode("utf-8").encode(enc))
            if gzip:
                out.close()
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the drop from other pipeline users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return GeneratedDrop(path, hospital_id, month, n, {r: k for r in KINDS if k}, kinds)


def generate_drops(landing: Path, *, months: int = 12, hospitals: int = 5, rows_per_file: int = 2000,
                   seed: int = 0, start_month: str = "2024-01", defect_rate: float = 0.01,
                   messy: bool = True) -> list[GeneratedDrop]:
    jobs = []
    for h in range(hospitals):
        hid = f"H{h + 1:03d}"
        for m in range(months):
            month = str(np.datetime64(start_month, "M") + m)
            opts = dict(PROFILES[h % len(PROFILES)]) if messy else {}
            if messy and h % len(PROFILES) in (0, 3) and m >= 2:
                opts["extra_columns"] = ("ordering_provider",)  # schema drift from the third month on
            name = f"{month}.csv.gz" if opts.get("gzip") else f"{month}.csv"
            jobs.append(dict(path=Path(landing) / "labs" / hid / name, hospital_id=hid, month=month,
                             rows=rows_per_file, seed=seed, defect_rate=defect_rate, **opts))
    # Arrow kernels, numpy RNGs, zlib and file I/O release the GIL, so threads use both cores;
    # each file is seeded on its own, so the result does not depend on scheduling.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda job: write_drop(**job), jobs))
