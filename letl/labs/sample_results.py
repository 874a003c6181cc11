"""The results of a sample drop that are not plain numbers: SARS-CoV-2 PCR results, censored values
at analyzers' reporting limits and free text, as laboratory systems export them. They are
published (schema.RESULT_TYPES), so they are planted on clean rows and counted apart from defects.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from letl.labs.schema import LAB_TESTS, QUALITATIVE_TESTS

# SARS-CoV-2 PCR, spelled as different systems do; weights sum to 1.
QUALITATIVE = {"Negative": 0.40, "Not detected": 0.28, "Positive": 0.12, "Detected": 0.10, "Invalid": 0.03,
               "NEGATIVE": 0.03, "Not Detected": 0.02, "POS": 0.02}
QUALITATIVE_FLAG = {"positive": "A", "pos": "A", "detected": "A", "invalid": ""}  # else N
# Censored values at analyzers' reporting limits, inside what is physiologically possible.
CENSORED = {"2160-0": ("<0.20", "< 0.20"), "1742-6": ("<5", "<= 5"), "2345-7": (">600", "> 600"),
            "777-3": (">=1500",)}
OTHER_TEXT = ("see comment", "QNS", "specimen hemolyzed")  # outside the vocabulary: result_text 'other'
RESULT_KINDS = {"qualitative": 0.03, "censored": 0.005, "other": 0.002}  # share of rows, planted on clean rows


def replace_rows(arr: pa.Array, rows: np.ndarray, values) -> pa.Array:
    mask = np.zeros(len(arr), bool)
    mask[rows] = True  # replace_with_mask consumes values in row order: rows must be sorted
    return pc.replace_with_mask(arr, pa.array(mask), pa.array(list(values), pa.string()))


def plant_result_kinds(cols: dict, clean: np.ndarray, test: np.ndarray, n: int, rng) -> dict[str, int]:
    """Qualitative, censored and free-text results on disjoint clean rows, from a stream of their own
    (so every other draw, and every defect, stays where it was); a duplicate copies them like any row."""
    want = {kind: min(round(n * rate) or int(n >= 200), len(clean) // 8) for kind, rate in RESULT_KINDS.items()}
    order = rng.permutation(clean)
    censorable = np.isin(np.array([t.code for t in LAB_TESTS])[test[order]], list(CENSORED))
    cens, rest = order[censorable][:want["censored"]], order[~censorable]
    qual, other = rest[:want["qualitative"]], rest[want["qualitative"]:][:want["other"]]
    texts = list(rng.choice(list(QUALITATIVE), len(qual), p=list(QUALITATIVE.values())))
    tests = [LAB_TESTS[t] for t in test[cens]]
    bounds = [str(rng.choice(CENSORED[t.code])) for t in tests]
    flags = ["L" if b[0] == "<" and float(b.lstrip("<= ")) <= t.ref_low else
             "H" if b[0] == ">" and float(b.lstrip(">= ")) >= t.ref_high else "N" for t, b in zip(tests, bounds, strict=False)]
    [sars], q = QUALITATIVE_TESTS, len(qual)
    texted = np.concatenate([qual, cens, other])
    for col, rows, values in (
            ("test_code", qual, [sars.code] * q),
            ("test_name", qual, [sars.name] * q),  # it holds no comma or quote to escape
            *((c, qual, [""] * q) for c in ("unit", "reference_low", "reference_high")),
            ("result_value", texted, texts + bounds + list(rng.choice(OTHER_TEXT, len(other)))),
            ("abnormal_flag", texted,
             [QUALITATIVE_FLAG.get(t.lower(), "N") for t in texts] + flags + [""] * len(other))):
        at = np.argsort(rows, kind="stable")  # replace_rows takes rows in order
        cols[col] = replace_rows(cols[col], rows[at], [values[i] for i in at])
    return {"qualitative": q, "censored": len(cens), "other": len(other)}
