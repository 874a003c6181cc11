"""The contract of a hospital lab drop and of the published lab tables.

One place for column names, the test catalog and the rejection reasons, so that
the generator, the parser, the checks and the tests cannot drift apart.
"""

from dataclasses import dataclass

DROP_COLUMNS: tuple[str, ...] = (
    "hospital_id",
    "patient_id",
    "patient_name",
    "birth_date",
    "sex",
    "zip",
    "test_code",
    "test_name",
    "result_value",
    "unit",
    "reference_low",
    "reference_high",
    "abnormal_flag",
    "collected_at",
    "reported_at",
)
REQUIRED_COLUMNS = DROP_COLUMNS

# Raw identifiers that must never reach a de-identified table.
IDENTIFIER_COLUMNS = ("patient_id", "patient_name", "birth_date", "zip")

# Columns of labs/lab_results, in order, with their DuckDB types. patient_key is the keyed pseudonym.
# A result is one of three kinds (after FHIR Observation.value[x]): a number (result_value), a
# censored number (result_value is the bound, result_comparator <, <=, > or >=) or text
# (result_text: a RESULT_CODES value, or OTHER_RESULT). result_original keeps the trimmed text as
# received for every result that is not a plain number.
RESULT_TYPES: dict[str, str] = {
    "hospital_id": "VARCHAR",
    "patient_key": "VARCHAR",
    "birth_year": "SMALLINT",
    "sex": "VARCHAR",
    "zip3": "VARCHAR",
    "test_code": "VARCHAR",
    "test_name": "VARCHAR",
    "result_value": "DOUBLE",
    "result_comparator": "VARCHAR",
    "result_text": "VARCHAR",
    "result_original": "VARCHAR",
    "unit": "VARCHAR",
    "reference_low": "DOUBLE",
    "reference_high": "DOUBLE",
    "abnormal_flag": "VARCHAR",
    "collected_at": "TIMESTAMP",
    "reported_at": "TIMESTAMP",
    "source_file": "VARCHAR",
}
RESULT_COLUMNS: tuple[str, ...] = tuple(RESULT_TYPES)
# Columns older versions of labs/lab_results lack: readers must not assume them.
RESULT_KIND_COLUMNS = ("result_comparator", "result_text", "result_original")

# Coded qualitative results: each value with the spellings taken for it. Matching ignores case
# and spaces ("Not Detected", "NOTDETECTED"). "ND" is left out: labs use it for "not done" too.
RESULT_CODES: dict[str, tuple[str, ...]] = {
    "positive": ("positive", "pos", "+"),
    "negative": ("negative", "neg", "-"),
    "detected": ("detected",),
    "not detected": ("not detected", "none detected", "non detected", "undetected"),
    "reactive": ("reactive",),
    "non-reactive": ("non-reactive", "nonreactive", "not reactive"),
    "indeterminate": ("indeterminate", "inconclusive", "equivocal", "borderline"),
    "invalid": ("invalid",),
}
OTHER_RESULT = "other"  # text that is none of the above; result_original holds it
# Positivity = POSITIVE / (POSITIVE + NEGATIVE); indeterminate, invalid and other count in neither.
POSITIVE_CODES = ("positive", "detected", "reactive")
NEGATIVE_CODES = ("negative", "not detected", "non-reactive")

# Rejects keep the raw fields as text; raw_line holds a line the CSV reader could not split.
REJECT_COLUMNS: tuple[str, ...] = ("source_file", "line", "reason", "detail", *DROP_COLUMNS, "raw_line")


class Reason:
    """Why a row was quarantined. Values are stable: tests and dashboards match on them."""

    MALFORMED = "malformed_row"
    MISSING_PATIENT_ID = "missing_patient_id"
    BAD_DATE = "unparsable_date"
    DATE_RANGE = "date_out_of_range"  # before 1900, or after the day of the ingest
    OUTSIDE_MONTH = "outside_month"  # collected_at not in the month the drop is named for
    BLANK = "blank_line"
    MISSING_RESULT = "missing_result"  # result_value empty (a cancelled test); any text is published
    NON_NUMERIC = "non_numeric_result"  # no longer produced; older rejects carry it
    OUT_OF_RANGE = "out_of_range"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class LabTest:
    code: str
    name: str
    unit: str
    ref_low: float
    ref_high: float
    mean: float
    sd: float
    # Physiologically possible range: values outside are data errors, not abnormal results.
    min_possible: float
    max_possible: float


# LOINC codes with their usual units and adult reference ranges.
LAB_TESTS: tuple[LabTest, ...] = (
    LabTest("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 99, 98, 22, 10, 2000),
    LabTest("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.3, 1.0, 0.35, 0.05, 30),
    LabTest("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 135, 145, 140, 3.5, 90, 200),
    LabTest("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 4.3, 0.5, 1, 12),
    LabTest("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.0, 17.5, 14.0, 1.8, 2, 25),
    LabTest("6690-2", "Leukocytes [#/volume] in Blood", "10*3/uL", 4.5, 11.0, 7.5, 2.2, 0.1, 500),
    LabTest("777-3", "Platelets [#/volume] in Blood", "10*3/uL", 150, 400, 260, 70, 1, 3000),
    LabTest("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6, 5.6, 0.9, 2, 25),
    LabTest("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 0, 200, 190, 38, 20, 1500),
    LabTest("1742-6", "Alanine aminotransferase [Enzymatic activity/volume]", "U/L", 7, 56, 28, 14, 0, 20000),
)
TESTS_BY_CODE = {t.code: t for t in LAB_TESTS}


@dataclass(frozen=True)
class QualitativeTest:
    code: str
    name: str
    results: tuple[str, ...]  # RESULT_CODES values it reports


QUALITATIVE_TESTS: tuple[QualitativeTest, ...] = (
    QualitativeTest("94500-6", "SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory system specimen by NAA "
                    "with probe detection", ("positive", "negative", "detected", "not detected", "invalid")),
)

# Tests whose physiological bounds the published table is checked against.
KEY_TESTS = ("2345-7", "2951-2", "2823-3", "718-7")

# HIPAA Safe Harbor: 3-digit ZIP areas with fewer than 20,000 people are reported as 000.
RESTRICTED_ZIP3 = ("036", "059", "063", "102", "203", "556", "692", "790", "821",
                   "823", "830", "831", "878", "879", "884", "890", "893")
