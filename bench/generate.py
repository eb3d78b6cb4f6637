"""Generate a synthetic roster and quarterly history for the reference rules.

The population is shaped like a real ecosystem: a steep pyramid (about 3% of
partners qualify for the top tiers, 10-15% for the middle), every segment,
size, velocity, standing, and alignment present, new partners, partners
without history, and a few percent of bad rows (day-first dates, words for
numbers, unknown languages, duplicate or missing ids, bad quarter labels,
history for partners not in the roster).

    python bench/generate.py --partners 100000 --out bench/data/100k
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

COLUMNS = [
    "partner_id",
    "partner_name",
    "country",
    "language",
    "contact_name",
    "contact_email",
    "joined_on",
    "staff_sales",
    "staff_technical",
    "staff_marketing",
    "certified_sales",
    "certified_technical",
    "certified_marketing",
    "smb_share",
    "mid_market_share",
    "enterprise_share",
    "share_of_vendor_revenue",
    "focus_verticals",
    "business_plan_on_file",
    "invited_to_elite",
    "downgrade_hold",
]
QUARTERS = [f"{y}Q{q}" for y in (2024, 2025, 2026) for q in (1, 2, 3, 4)][3:11]  # 2024Q4-2026Q3
VERTICALS = [
    "manufacturing",
    "healthcare",
    "finance",
    "retail",
    "public_sector",
    "education",
    "energy",
]
COUNTRIES = [("US", "en"), ("GB", "en"), ("FR", "fr"), ("DE", "de"), ("ES", "es"), ("CA", "fr")]
# (share of partners, vendor-revenue share range, certified technical range, quarterly target)
TIERS = [
    (0.03, (0.005, 0.03), (10, 30), 700_000),
    (0.12, (0.001, 0.006), (4, 12), 150_000),
    (0.35, (0.0003, 0.0012), (2, 5), 40_000),
    (0.50, (0.00001, 0.0004), (0, 2), 10_000),
]
# (share of partners, ratio of revenue to target in the recent quarters, how many recent)
STANDINGS = [
    (0.72, (0.95, 1.3), 0),
    (0.14, (0.75, 0.95), 2),
    (0.08, (0.6, 0.9), 4),
    (0.02, (0.2, 0.45), 7),
    (0.04, (1.0, 1.2), 0),
]


def pick(rng: random.Random, table: list) -> tuple:
    roll, total = rng.random(), 0.0
    for entry in table:
        total += entry[0]
        if roll < total:
            return entry
    return table[-1]


def partner(rng: random.Random, index: int) -> tuple[list, list[list]]:
    partner_id = f"S-{index:07d}"
    _, share_range, tech_range, target = pick(rng, TIERS)
    standing = pick(rng, STANDINGS)
    country, language = rng.choice(COUNTRIES)
    new = standing is STANDINGS[-1]
    joined = (
        f"{rng.randint(2026, 2026) if new else rng.randint(2010, 2024)}-"
        f"{rng.randint(1, 6 if new else 12):02d}-{rng.randint(1, 28):02d}"
    )
    technical = rng.randint(*tech_range)
    sales, marketing = rng.randint(0, technical + 3), rng.randint(0, 3)
    segment = rng.random()
    if segment < 0.3:
        shares = (rng.randint(60, 95), 0, 0)
    elif segment < 0.45:
        shares = (0, rng.randint(60, 90), 0)
    elif segment < 0.6:
        shares = (0, 0, rng.randint(60, 95))
    else:
        shares = (rng.randint(20, 50), rng.randint(10, 40), 0)
    shares = (shares[0], shares[1], shares[2] or max(0, 100 - shares[0] - shares[1]))
    verticals = ";".join(rng.sample(VERTICALS, rng.randint(0, 3)))
    row = [
        partner_id,
        f"Partner {index} Ltd",
        country,
        language,
        f"Contact {index}",
        f"partners{index}@example.com",
        joined,
        sales + 2,
        technical + 2,
        marketing + 1,
        sales,
        technical,
        marketing,
        f"{shares[0]}%",
        f"{shares[1]}%",
        f"{shares[2]}%",
        f"{rng.uniform(*share_range) * 100:.4f}%",
        verticals,
        "yes" if technical >= 8 and rng.random() < 0.8 else "no",
        "yes" if technical >= 20 and rng.random() < 0.3 else "no",
        "yes" if rng.random() < 0.02 else "no",
    ]
    _, (low, high), recent = standing
    deals = rng.choice([2, 5, 10, 25, 40])
    history = []
    quarters = QUARTERS[-2:] if new else QUARTERS
    for position, quarter in enumerate(reversed(quarters)):
        if rng.random() < 0.03:
            continue  # not reported
        ratio = rng.uniform(low, high) if position < max(recent, 1) else rng.uniform(0.98, 1.25)
        history.append(
            [
                partner_id,
                quarter,
                f"{target * ratio:.2f}",
                target,
                max(0, int(deals * rng.uniform(0.7, 1.3))),
            ]
        )
    return row, list(reversed(history))


def corrupt(rng: random.Random, row: list, history: list[list]) -> None:
    """Spoil one value, the way CRM exports get spoiled."""
    kind = rng.randrange(6)
    if kind == 0:
        year, month, day = row[6].split("-")
        row[6] = f"{day}/{month}/{year}"
    elif kind == 1:
        row[11] = "twelve"
    elif kind == 2:
        row[3] = "italiano"
    elif kind == 3:
        row[0] = ""
    elif kind == 4:
        row[13] = "1.234,5%"
    elif history:
        history[0][1] = "2026Q5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=10_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bad-rate", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        (args.out / "roster.csv").open("w", newline="", encoding="utf-8") as roster_file,
        (args.out / "performance.csv").open("w", newline="", encoding="utf-8") as history_file,
    ):
        roster, history = csv.writer(roster_file), csv.writer(history_file)
        roster.writerow(COLUMNS)
        history.writerow(["partner_id", "quarter", "revenue", "target", "deals_closed"])
        previous_id = None
        for index in range(1, args.partners + 1):
            row, rows = partner(rng, index)
            if rng.random() < args.bad_rate:
                if rng.random() < 0.15 and previous_id:
                    row[0] = previous_id  # a duplicate partner_id
                else:
                    corrupt(rng, row, rows)
            roster.writerow(row)
            history.writerows(rows)
            previous_id = row[0] or previous_id
            if rng.random() < args.bad_rate / 10:
                history.writerow([f"X-{index:07d}", "2026Q3", "1000.00", 1000, 1])
    print(f"wrote {args.partners:,} partners to {args.out}")


if __name__ == "__main__":
    main()
