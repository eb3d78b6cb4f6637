"""Write the bad-input corpus (tests/data/bad_inputs/) and its cases.yaml.

Each case is a small roster (the example's first two partners, the second
one's row made bad) or history file, and what a run must do with it: stop
with an error before deciding, reject a row (row, column, reason), or decide
it as written. Run it again after changing a case:

    python tests/data/bad_inputs/make_cases.py
"""

import csv
import io
import json
import unicodedata
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent
ROOT = OUT.parents[2]
rows = list(csv.reader((ROOT / "examples/roster.csv").read_text(encoding="utf-8").splitlines()))
HEADER, A, B = rows[0], rows[1], rows[2]
hist = list(
    csv.reader((ROOT / "examples/performance.csv").read_text(encoding="utf-8").splitlines())
)
HH = hist[0]
HROWS = [r for r in hist[1:] if r[0] in ("P-1001", "P-1002")]
cases = []


def csv_text(table, delimiter=","):
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerows(table)
    return buf.getvalue()


def roster(name, table=None, raw=None, **expect):
    path = OUT / f"{name}.csv"
    path.write_bytes(raw if raw is not None else csv_text(table).encode("utf-8"))
    cases.append({"name": name, "roster": path.name, **expect})


def with_b(column, value):
    b = list(B)
    b[HEADER.index(column)] = value
    return [HEADER, A, b]


def reject(name, column, value, reason, col=None):
    roster(
        name,
        with_b(column, value),
        outcome="reject",
        row=3,
        column=col if col is not None else column,
        reason=reason,
    )


reject("date_day_first", "joined_on", "31/12/2019", "is not a date")
reject("date_month_13", "joined_on", "2020-13-01", "is not a real calendar date")
reject("date_feb_30", "joined_on", "2026-02-30", "is not a real calendar date")
reject("date_in_words", "joined_on", "yesterday", "is not a date")
reject("count_in_words", "certified_technical", "twelve", "is not a whole number")
reject("count_with_decimals", "certified_technical", "1.5", "is not a whole number")
reject("count_negative", "certified_technical", "-3", "is below 0")
reject("count_in_brackets", "certified_technical", "(3)", "is below 0")
reject("count_as_money", "staff_sales", "$1,200", "a money amount, not a whole number")
reject("count_decimal_comma", "staff_sales", "1,2", "ambiguous as a whole number")
reject("count_exponent", "staff_marketing", "1e3", "is not a whole number")
reject("share_over_100", "smb_share", "150%", "is above 100%")
reject("share_negative", "smb_share", "-5%", "is below 0%")
reject("share_ambiguous", "smb_share", "1.234,5%", "ambiguous as a percentage")
reject("share_in_words", "share_of_vendor_revenue", "abc", "is not a percentage")
reject("share_word_percent", "enterprise_share", "70 percent", "is not a percentage")
reject("language_unknown", "language", "italiano", "is not one of the allowed values")
reject("vertical_unknown", "focus_verticals", "space", "is not one of the allowed values")
reject("yes_no_maybe", "business_plan_on_file", "maybe", "is not yes or no")
reject("yes_no_number", "downgrade_hold", "2", "is not yes or no")
reject("name_missing", "partner_name", "", "a value is required")
reject("country_missing", "country", "", "a value is required")
reject("name_with_nul", "partner_name", "Nul\x00Byte", "control character (U+0000)")
reject("name_with_escape", "partner_name", "Esc\x1bape", "control character (U+001B)")
reject("id_missing", "partner_id", "", "partner_id is missing")
reject("id_blank", "partner_id", "   ", "partner_id is missing")
reject("id_duplicate", "partner_id", "P-1001", "duplicate partner_id (first on row 2)")
reject(
    "id_zero_width_space",
    "partner_id",
    "P-1002\u200b",
    "invisible or control character (U+200B)",
    col="partner_id",
)
reject(
    "id_bell",
    "partner_id",
    "P-10\x0702",
    "invisible or control character (U+0007)",
    col="partner_id",
)
reject("id_too_long", "partner_id", "P" * 300, "partner_id is longer than", col="partner_id")
# shifted rows
b = list(B)
b[1] = "Contoso"
b.insert(2, " Inc")
roster(
    "unquoted_comma_in_name",
    [HEADER, A, b],
    outcome="reject",
    row=3,
    column="",
    reason="an unquoted comma in 'Contoso, Inc'?",
)
b = list(B)
i = HEADER.index("staff_sales")
b[i] = "1"
b.insert(i + 1, "200")
roster(
    "unquoted_thousands",
    [HEADER, A, b],
    outcome="reject",
    row=3,
    column="",
    reason="an unquoted comma in '1,200'?",
)
roster(
    "extra_empty_cell",
    [HEADER, A, B + [""]],
    outcome="reject",
    row=3,
    column="",
    reason="more values than columns",
)
# bytes
raw = csv_text([HEADER, A, B]).encode("utf-8").replace(b"Contoso", b"Cont\xe9oso", 1)
roster(
    "byte_not_utf8",
    raw=raw,
    outcome="reject",
    row=3,
    column="",
    reason="byte 0xE9 is not utf-8 text",
)


# decided as written
def decided(name, table=None, raw=None, partner="P-1002", **more):
    roster(name, table, raw, outcome="decided", partner=partner, **more)


decided(
    "headers_as_crms_write_them",
    [
        [
            {
                "joined_on": "Joined On",
                "certified_technical": "Certified_Technical",
                "partner_id": "PARTNER-ID",
            }.get(h, h)
            for h in HEADER
        ],
        A,
        B,
    ],
)
decided("utf8_with_bom", raw=b"\xef\xbb\xbf" + csv_text([HEADER, A, B]).encode())
decided("semicolons", raw=csv_text([HEADER, A, B], ";").encode())
decided("tabs", raw=csv_text([HEADER, A, B], "\t").encode())
decided("windows_1252", raw=csv_text([HEADER, A, B]).encode("cp1252"), encoding="cp1252")
decided(
    "utf16_excel_unicode_text",
    raw=csv_text([HEADER, A, B], "\t").encode("utf-16"),
    encoding="utf-16",
)
decided("crlf_line_ends", raw=csv_text([HEADER, A, B]).replace("\n", "\r\n").encode())
decided("blank_line_between", raw=(csv_text([HEADER, A]) + "\n" + csv_text([B])).encode(), row=4)
decided("quoted_thousands", with_b("staff_sales", "1,200"))
decided("share_without_percent_sign", with_b("smb_share", "12"))
decided("yes_as_y", with_b("business_plan_on_file", "Y"))
decided("language_in_capitals", with_b("language", "FR"))
decided("spaces_only_cell", with_b("certified_sales", "   "))
decided("name_with_newline_quoted", with_b("partner_name", "Contoso\nSécurité"))
decided(
    "semicolon_decimal_comma",
    raw=csv_text([HEADER, A, [c.replace("2.6%", "2,6 %") for c in B]], ";").encode(),
)
c1 = unicodedata.normalize("NFC", "Caf\u00e9-1")
c2 = unicodedata.normalize("NFD", c1)
a2 = list(A)
a2[0] = c1
b2 = list(B)
b2[0] = c2
roster(
    "id_in_two_unicode_forms",
    [HEADER, a2, b2],
    outcome="reject",
    row=3,
    column="partner_id",
    reason="duplicate partner_id (first on row 2)",
)


# errors before the run
def error(name, table=None, raw=None, message=""):
    roster(name, table, raw, outcome="error", message=message)


error(
    "missing_column",
    [[h for h in HEADER if h != "certified_technical"]]
    + [[c for h, c in zip(HEADER, r) if h != "certified_technical"] for r in (A, B)],
    message="lacks 1 column the rules read: certified_technical",
)
error(
    "misspelt_column",
    [[("cert_technical" if h == "certified_technical" else h) for h in HEADER], A, B],
    message="certified_technical (the file has 'cert_technical')",
)
error(
    "duplicate_column",
    [HEADER + ["country"], A + ["DE"], B + ["FR"]],
    message="column 'country' appears 2 times",
)
error("no_partner_id_column", [["id", *HEADER[1:]], A, B], message="no 'partner_id' column")
error("empty_file", raw=b"", message="the file is empty")
error("header_only", [HEADER], message="the file has no partner rows")
error(
    "first_line_blank",
    raw=b"\n" + csv_text([HEADER, A, B]).encode(),
    message="the first line is blank",
)
error(
    "every_row_rejected",
    [
        HEADER,
        [c if h != "joined_on" else "31/12/2019" for h, c in zip(HEADER, A)],
        [c if h != "joined_on" else "x" for h, c in zip(HEADER, B)],
    ],
    message="no partner could be decided, all 2 rows were rejected",
)


# JSON Lines
def jsonl(name, second, outcome="reject", **expect):
    first = json.dumps(dict(zip(HEADER, A)))
    path = OUT / f"{name}.jsonl"
    path.write_bytes(first.encode() + b"\n" + second + b"\n")
    cases.append({"name": name, "roster": path.name, "outcome": outcome, **expect})


good = json.dumps(dict(zip(HEADER, B)), ensure_ascii=False)
jsonl(
    "json_infinity",
    good.replace('"staff_sales": "25"', '"staff_sales": Infinity').encode(),
    row=2,
    column="",
    reason="Infinity is not a number",
)
jsonl(
    "json_nan",
    good.replace('"staff_sales": "25"', '"staff_sales": NaN').encode(),
    row=2,
    column="",
    reason="NaN is not a number",
)
jsonl(
    "json_huge_float",
    good.replace('"staff_sales": "25"', '"staff_sales": 1e400').encode(),
    row=2,
    column="",
    reason="1e400 is too large a number",
)
jsonl(
    "json_400_digits",
    good.replace('"staff_sales": "25"', '"staff_sales": ' + "9" * 400).encode(),
    row=2,
    column="",
    reason="a 400-digit number is too large",
)
jsonl(
    "json_deep_nesting",
    ("[" * 50000 + "]" * 50000).encode(),
    row=2,
    column="",
    reason="nested too deeply",
)
jsonl("json_not_an_object", b'["P-1002", "Contoso"]', row=2, column="", reason="not a JSON object")
jsonl("json_cut_short", good[:40].encode(), row=2, column="", reason="not valid JSON")
jsonl(
    "json_id_is_a_list",
    good.replace('"partner_id": "P-1002"', '"partner_id": ["P-1002"]').encode(),
    row=2,
    column="partner_id",
    reason="partner_id must be one value",
)
jsonl(
    "json_bad_utf8",
    good.encode().replace(b"Contoso", b"Cont\xc3(oso"),
    row=2,
    column="",
    reason="0xC3 is not UTF-8 text",
)
jsonl(
    "json_numbers_as_numbers",
    good.replace('"staff_sales": "25"', '"staff_sales": 25').encode(),
    outcome="decided",
    partner="P-1002",
)
# history (with the two partners' roster)
base_roster = OUT / "two_partners.csv"
base_roster.write_text(csv_text([HEADER, A, B]), encoding="utf-8")


def history(name, table=None, raw=None, **expect):
    path = OUT / f"{name}.history.csv"
    path.write_bytes(raw if raw is not None else csv_text(table).encode())
    cases.append({"name": name, "roster": base_roster.name, "performance": path.name, **expect})


history(
    "history_missing_figure",
    [[h for h in HH if h != "deals_closed"]] + [r[:4] for r in HROWS],
    outcome="error",
    message="lacks 1 column the rules read: deals_closed",
)
history(
    "history_is_the_roster",
    raw=csv_text([HEADER, A, B]).encode(),
    outcome="error",
    message="lacks 4 columns the rules read: quarter",
)
h = [HH] + [list(r) for r in HROWS]
h[3][1] = "2026Q5"
history(
    "history_bad_quarter", h, outcome="reject", row=4, column="quarter", reason="is not a quarter"
)
h = [HH] + [list(r) for r in HROWS]
h[2][2] = "lots"
history(
    "history_revenue_in_words",
    h,
    outcome="reject",
    row=3,
    column="revenue",
    reason="is not a money amount",
)
h = [HH] + [list(r) for r in HROWS] + [["Z-9", "2026Q1", "1", "1", "1"]]
history(
    "history_unknown_partner",
    h,
    outcome="reject",
    row=len(h),
    column="partner_id",
    reason="no partner with this partner_id in the roster",
)
h = [HH] + [list(r) for r in HROWS] + [list(HROWS[0])]
history(
    "history_quarter_twice",
    h,
    outcome="reject",
    row=len(h),
    column="quarter",
    reason="appears twice for this partner",
)
h = [HH] + [["Z" + r[0][1:], *r[1:]] for r in HROWS]
history(
    "history_of_another_roster",
    h,
    outcome="error",
    message="rows of the history file were rejected",
)
h = [HH] + [list(r) for r in HROWS]
h[2] = [h[2][0], h[2][1], "1", h[2][2], *h[2][3:]]
history("history_shifted_row", h, outcome="reject", row=3, column="", reason="values for 5 columns")
history(
    "history_decimal_commas",
    raw=csv_text(
        [HH] + [[c.replace(".", ",") if i == 2 else c for i, c in enumerate(r)] for r in HROWS], ";"
    ).encode(),
    outcome="decided",
    partner="P-1002",
)
history(
    "history_headers_as_crms_write_them",
    [["Partner ID", "Quarter", "Revenue", "Target", "Deals Closed"]] + HROWS,
    outcome="decided",
    partner="P-1002",
)
(OUT / "cases.yaml").write_text(
    "# Bad roster and history inputs, each with what a run must do with it.\n"
    "# See tests/test_bad_inputs.py::test_corpus; written by make_cases.py.\n"
    + yaml.safe_dump(cases, allow_unicode=True, sort_keys=False, width=100),
    encoding="utf-8",
)
print(len(cases), "cases")
