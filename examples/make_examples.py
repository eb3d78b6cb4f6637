"""Regenerate examples/roster.csv and examples/performance.csv (deterministic).

Each partner is written by hand as an archetype so that the example roster
covers every partner type, standing, and engagement model of the reference
rules, plus edge cases: a brand-new partner, one with no history, a held
downgrade, an invitation to Elite, odd characters in names, missing
optional values, and a few rows with mistakes that a run sets aside.

    python examples/make_examples.py
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).parent
QUARTERS = [f"{y}Q{q}" for y in (2024, 2025, 2026) for q in (1, 2, 3, 4)][:11]  # to 2026Q3

COLUMNS = ["partner_id", "partner_name", "country", "language", "contact_name", "contact_email",
           "joined_on", "staff_sales", "staff_technical", "staff_marketing", "certified_sales",
           "certified_technical", "certified_marketing", "smb_share", "mid_market_share",
           "enterprise_share", "share_of_vendor_revenue", "focus_verticals",
           "business_plan_on_file", "invited_to_elite", "downgrade_hold"]

# (id, name, country, lang, joined, staff s/t/m, certified s/t/m, segment shares smb/mid/ent,
#  vendor share, verticals, plan, elite, hold, history pattern, quarterly target, deals/quarter)
PARTNERS = [
    ("P-1001", "Northwind Integration Ltd", "GB", "en", "2016-03-01", (40, 90, 12), (12, 28, 4), (5, 25, 70), "2.6%", "manufacturing;healthcare", "yes", "yes", "no", "steady_over", 900_000, 30),
    ("P-1002", "Contoso Sécurité SA", "FR", "fr", "2018-06-15", (25, 40, 6), (8, 14, 2), (10, 20, 70), "0.9%", "finance;healthcare", "yes", "no", "no", "steady_over", 300_000, 18),
    ("P-1003", "Fabrikam Systemhaus GmbH", "DE", "de", "2019-01-10", (18, 30, 5), (6, 11, 3), (15, 65, 20), "0.6%", "manufacturing;energy", "yes", "no", "no", "growing", 150_000, 25),
    ("P-1004", "Soluciones Tailspin SL", "ES", "es", "2020-09-01", (8, 10, 2), (3, 6, 1), (30, 50, 20), "0.2%", "manufacturing;healthcare", "no", "no", "no", "on_target", 60_000, 12),
    ("P-1005", "Quick Cloud MSP, Inc.", "US", "en", "2017-04-20", (30, 20, 8), (8, 7, 2), (85, 15, 0), "0.3%", "retail", "no", "no", "no", "velocity", 120_000, 40),
    ("P-1006", "Adatum Networks", "US", "en", "2015-11-02", (12, 15, 3), (4, 8, 1), (20, 40, 40), "0.15%", "finance", "yes", "no", "no", "missing_two", 80_000, 8),
    ("P-1007", "Litware Partners", "CA", "en", "2016-02-14", (10, 12, 2), (2, 5, 1), (30, 40, 30), "0.12%", "education", "no", "no", "no", "missing_four", 70_000, 6),
    ("P-1008", "Proseware Conseil", "FR", "fr", "2014-05-05", (6, 5, 1), (1, 2, 0), (60, 30, 10), "0.05%", "", "no", "no", "no", "missing_six", 50_000, 3),
    ("P-1009", "Wide World Importers IT", "DE", "de", "2026-05-01", (4, 3, 1), (1, 1, 0), (70, 30, 0), "0.01%", "retail", "no", "no", "no", "new", 20_000, 2),
    ("P-1010", "Blue Yonder Data", "US", "en", "2021-08-30", (15, 22, 4), (5, 9, 2), (10, 30, 60), "0.45%", "healthcare;healthcare", "yes", "no", "no", "growing", 100_000, 10),
    ("P-1011", "Coho Vineyard Tech", "ES", "es", "2013-03-03", (7, 9, 2), (2, 4, 1), (40, 40, 20), "0.11%", "manufacturing", "no", "no", "yes", "missing_four", 60_000, 5),
    ("P-1012", "Tailwind Traders Solutions", "GB", "en", "2019-07-19", (50, 60, 10), (10, 22, 4), (35, 35, 30), "1.4%", "manufacturing;healthcare;energy", "yes", "no", "no", "steady_over", 500_000, 60),
    ("P-1013", "Margie's Travel IT", "US", "en", "2022-01-04", (3, 2, 0), (0, 0, 0), (100, 0, 0), "0.005%", "", "no", "no", "no", "on_target", 10_000, 2),
    ("P-1014", "Alpine Ski House Digital", "CH", "de", "2018-10-10", (9, 14, 2), (3, 7, 2), (25, 55, 20), "0.25%", "healthcare", "no", "no", "no", "under", 90_000, 9),
    ("P-1015", "Lucerne Publishing Services", "FR", "fr", "2017-12-12", (6, 8, 1), (2, 3, 0), (50, 40, 10), "0.08%", "education;public_sector", "no", "no", "no", "on_target", 40_000, 7),
    ("P-1016", "Humongous Insurance Systems", "US", "en", "2012-02-02", (60, 120, 15), (15, 24, 5), (0, 10, 90), "3.4%", "finance", "yes", "no", "no", "steady_over", 1_200_000, 22),
    ("P-1017", "Trey Research Labs", "GB", "en", "2024-03-15", (5, 8, 1), (1, 3, 0), (40, 60, 0), "0.03%", "healthcare", "no", "no", "no", "short", 25_000, 3),
    ("P-1018", "Graphic Design Institute IT", "ES", "es", "2020-04-01", (4, 4, 1), (1, 2, 1), (80, 20, 0), "0.02%", "education", "no", "no", "no", "no_history", 0, 0),
    ("P-1019", "Fourth Coffee Networks", "DE", "de", "2016-06-06", (28, 18, 6), (6, 6, 2), (90, 10, 0), "0.35%", "retail;manufacturing", "no", "no", "no", "velocity", 150_000, 45),
    ("P-1020", "Relecloud Partners, \"The Cloud People\"", "US", "en", "2019-09-09", (20, 26, 5), (6, 10, 3), (30, 60, 10), "0.7%", "finance", "yes", "no", "no", "on_target", 250_000, 20),
    ("P-1021", "Woodgrove {{ 7*7 }} Consulting", "GB", "en", "2018-02-20", (8, 9, 2), (2, 4, 1), (45, 45, 10), "0.1%", "healthcare", "no", "no", "no", "dip", 50_000, 6),
    ("P-1022", "<script>alert(1)</script> IT", "US", "en", "2021-05-05", (3, 3, 1), (1, 1, 0), (70, 30, 0), "0.02%", "", "no", "no", "no", "on_target", 15_000, 4),
    ("P-1023", "Datenwerk Ost GmbH", "DE", "de", "2015-08-08", (14, 20, 3), (4, 8, 2), (20, 60, 20), "0.18%", "manufacturing;healthcare", "yes", "no", "no", "missing_two", 70_000, 9),
    ("P-1024", "Solutions Nordiques Inc.", "CA", "fr", "2017-01-30", (10, 16, 2), (3, 6, 1), (35, 35, 30), "0.22%", "energy", "no", "no", "no", "on_target", 85_000, 11),
    ("P-1025", "Iberia Cloud Partners", "ES", "es", "2019-11-11", (22, 35, 4), (6, 12, 2), (10, 25, 65), "0.55%", "healthcare;finance", "yes", "no", "no", "over", 210_000, 14),
    ("P-1026", "Eastbank Systems", "US", "en", "2011-10-10", (45, 80, 9), (14, 21, 4), (10, 20, 70), "2.1%", "manufacturing;healthcare", "yes", "no", "no", "missing_two", 800_000, 28),
    ("P-1027", "Kiosk Velocity Retail IT", "GB", "en", "2018-04-04", (35, 15, 6), (5, 4, 2), (75, 25, 0), "0.09%", "retail", "no", "no", "no", "velocity", 60_000, 30),
    ("P-1028", "Vanarsdel Medical IT", "US", "en", "2023-06-01", (6, 10, 1), (2, 5, 0), (30, 50, 20), "0.07%", "healthcare", "no", "no", "no", "growing", 35_000, 5),
    ("P-1029", "Bellows College Tech Services", "FR", "fr", "2016-09-09", (5, 6, 1), (1, 2, 0), (55, 35, 10), "0.04%", "education", "no", "no", "no", "missing_six_mild", 30_000, 4),
    ("P-1030", "Munson's Pickles & Cloud", "US", "en", "2020-02-29", (4, 5, 1), (0, 1, 0), (90, 10, 0), "", "", "no", "no", "no", "on_target", 12_000, 3),
    ("P-1031", "Südwind Automatisierung AG", "DE", "de", "2014-12-01", (30, 55, 6), (10, 18, 3), (5, 35, 60), "1.1%", "manufacturing", "yes", "no", "no", "growing", 350_000, 16),
    ("P-1032", "Nod Publishers Digital", "ES", "es", "2022-10-10", (3, 4, 0), (1, 2, 0), (60, 40, 0), "0.02%", "public_sector", "no", "no", "no", "under", 15_000, 2),
]


# Deliberate mistakes, as real CRM exports have them: these rows are set aside
# in rejects.csv with their row number and reason, and the run goes on.
BAD_ROSTER_ROWS = [
    ["P-1033", "Day First Dates Ltd", "GB", "en", "Ops Team", "ops@p-1033.example.com",
     "31/12/2019", 5, 6, 1, 2, 3, 1, "50%", "50%", "0%", "0.03%", "", "no", "no", "no"],
    ["P-1034", "Words For Numbers GmbH", "DE", "de", "Vertrieb", "info@p-1034.example.com",
     "2018-04-01", 7, 9, 2, 2, "twelve", 1, "40%", "40%", "20%", "0.06%", "", "no", "no", "no"],
]
BAD_HISTORY_ROWS = [
    ["P-1099", "2026Q3", "12000.00", 10000, 4],   # no such partner in the roster
    ["P-1005", "2026Q5", "90000.00", 80000, 30],  # no fifth quarter
]


def history(pattern: str, target: int, deals: int, rng: random.Random) -> list[tuple]:
    """Quarterly (quarter, revenue, target, deals) rows for an archetype."""
    rows = []
    n = len(QUARTERS)
    for i, quarter in enumerate(QUARTERS):
        from_end = n - 1 - i  # 0 is the most recent quarter
        ratio = {"steady_over": 1.08, "on_target": 1.01, "over": 1.15, "under": 0.6,
                 "velocity": 1.05, "short": 0.95}.get(pattern, 1.02)
        if pattern == "growing":
            ratio = 0.9 + 0.05 * i
        elif pattern == "missing_two" and from_end < 2:
            ratio = 0.82
        elif pattern == "missing_four" and from_end < 4:
            ratio = 0.78
        elif pattern == "missing_six" and from_end < 7:
            ratio = 0.35
        elif pattern == "missing_six_mild" and from_end < 6:
            ratio = 0.75
        elif pattern == "dip" and from_end == 0:
            ratio = 0.7
        if pattern == "new" and from_end > 1:
            continue
        if pattern == "short" and from_end > 2:
            continue
        if pattern == "no_history":
            continue
        revenue = round(target * ratio * rng.uniform(0.98, 1.02), 2)
        quarter_deals = max(0, int(deals * rng.uniform(0.8, 1.2)))
        rows.append((quarter, revenue, target, quarter_deals))
    return rows


def main() -> None:
    rng = random.Random(2026)
    with (HERE / "roster.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for p in PARTNERS:
            (pid, name, country, lang, joined, staff, certified, shares, vendor_share, verticals,
             plan, elite, hold) = p[:13]
            first = name.split()[0].strip("<>{}\"'")
            contact = "" if pid == "P-1030" else f"{first} Partner Team"
            email = "" if pid == "P-1030" else f"partners@{pid.lower()}.example.com"
            writer.writerow([pid, name, country, lang, contact, email, joined, *staff,
                             *certified, *(f"{s}%" for s in shares), vendor_share, verticals,
                             plan, elite, hold])
        writer.writerows(BAD_ROSTER_ROWS)
    with (HERE / "performance.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["partner_id", "quarter", "revenue", "target", "deals_closed"])
        for p in PARTNERS:
            for quarter, revenue, target, deals in history(p[13], p[14], p[15], rng):
                writer.writerow([p[0], quarter, f"{revenue:.2f}", target, deals])
        writer.writerows(BAD_HISTORY_ROWS)


if __name__ == "__main__":
    main()
