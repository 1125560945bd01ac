"""Writes the knowledge quickstart's data into examples/data/handbook (deterministic; the files are checked in):

- corpus_v1/: a fictional company handbook, one Markdown file per product, office and policy, full of names and
  numbers no base model can know;
- corpus_v2/: the same handbook after an update: some warranties, prices and product leads changed;
- train.jsonl: questions about the products of the first half of the catalogue, in two phrasings;
- test.jsonl: held-out questions in a third phrasing, about those products (facts seen in training) and about the
  products of the second half (facts found only in the handbook);
- updated.jsonl: the held-out questions whose answer changed in corpus_v2, with the new answer (the old one is
  among the choices).

Every row is multiple choice (`choices`: the gold answer and three of the same kind from other products) and names
the handbook file that answers it (`source`), so `tuner rag` reports retrieval recall.

    python examples/make_handbook.py
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

OUT = Path(__file__).parent / "data" / "handbook"
PRODUCTS = [
    "Aurora Kettle",
    "Brisk Toaster",
    "Cinder Lamp",
    "Dapple Blender",
    "Ember Heater",
    "Fable Radio",
    "Gossamer Fan",
    "Harbor Scale",
    "Ivory Grinder",
    "Juniper Clock",
    "Kestrel Drill",
    "Lumen Torch",
    "Marlow Mixer",
    "Nimbus Humidifier",
    "Orchid Press",
    "Pallas Router",
]
TOWNS = [
    "Brindleton",
    "Carrowmere",
    "Duskhollow",
    "Elmsworth",
    "Fenwater",
    "Glimmerby",
    "Harrowgate",
    "Ivesbridge",
    "Jorvale",
    "Kettering Mill",
    "Larkspur",
    "Moorcastle",
]
PEOPLE = [
    "Osric Vale",
    "Petra Quill",
    "Rowan Ashby",
    "Selma Thorne",
    "Tobias Wren",
    "Una Larch",
    "Viggo Marsh",
    "Wilma Crane",
    "Xander Pike",
    "Yara Holt",
    "Zeno Birch",
    "Alma Fitch",
    "Bram Sorrel",
    "Cleo Dunmore",
    "Dorian Flint",
    "Edda Voss",
    "Fenna Rook",
    "Gideon Hale",
    "Hilde Marr",
    "Ivo Santry",
]
# Each fact: how the handbook states it, and three phrasings of the question (two for training, one held out).
FACTS = {
    "warranty": (
        "It carries a warranty of {value} months.",
        [
            "How many months of warranty does the {product} carry?",
            "The {product} comes with a warranty of how many months?",
            "What is the length, in months, of the {product}'s warranty?",
        ],
    ),
    "price": (
        "Its list price is {value} crowns.",
        [
            "What is the list price of the {product} in crowns?",
            "How many crowns does the {product} cost at list price?",
            "At what price, in crowns, is the {product} listed?",
        ],
    ),
    "town": (
        "It is manufactured in {value}.",
        [
            "In which town is the {product} manufactured?",
            "Where is the {product} made?",
            "Which town's factory produces the {product}?",
        ],
    ),
    "lead": (
        "Its product lead is {value}.",
        [
            "Who is the product lead of the {product}?",
            "Which person leads the {product} product line?",
            "Whom should I ask, as product lead, about the {product}?",
        ],
    ),
}
TRAINED = PRODUCTS[:10]  # the second half's facts are only in the handbook


def _values(rng: random.Random) -> dict[str, dict[str, str]]:
    warranties = rng.sample(range(13, 60), len(PRODUCTS))
    prices = rng.sample(range(35, 900), len(PRODUCTS))
    leads = rng.sample(PEOPLE, len(PRODUCTS))
    return {
        product: {"warranty": str(warranties[n]), "price": str(prices[n]), "town": rng.choice(TOWNS), "lead": leads[n]}
        for n, product in enumerate(PRODUCTS)
    }


def _updated(values: dict[str, dict[str, str]], rng: random.Random) -> dict[str, dict[str, str]]:
    """The handbook after an update: a warranty, price or lead of eight trained and four handbook-only products."""
    new = {product: dict(facts) for product, facts in values.items()}
    for product in TRAINED[:8] + PRODUCTS[10:14]:
        kind = rng.choice(["warranty", "price", "lead"])
        taken = {facts[kind] for facts in new.values()}
        if kind == "lead":
            new[product][kind] = rng.choice([p for p in PEOPLE if p not in taken])
        else:
            low, high = (13, 60) if kind == "warranty" else (35, 900)
            new[product][kind] = str(rng.choice([v for v in range(low, high) if str(v) not in taken]))
    return new


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def _write_corpus(folder: Path, values: dict[str, dict[str, str]], rng: random.Random) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "products").mkdir(parents=True)
    (folder / "offices").mkdir()
    (folder / "policies").mkdir()
    for product, facts in values.items():
        lines = [FACTS[kind][0].format(value=value) for kind, value in facts.items()]
        rng.shuffle(lines)
        text = (
            f"# {product}\n\nThe {product} is part of the Quillfeather Instruments home range. "
            + " ".join(lines)
            + f" Spare parts for the {product} ship from the central depot.\n"
        )
        (folder / "products" / f"{_slug(product)}.md").write_text(text, encoding="utf-8")
    for n, town in enumerate(TOWNS):
        (folder / "offices" / f"{_slug(town)}.md").write_text(
            f"# {town} office\n\nThe {town} office opens at {7 + n % 3}:{10 + 7 * n % 50:02d} and employs "
            f"{40 + 13 * n} people. Visitors sign in at desk {n + 3}.\n",
            encoding="utf-8",
        )
    (folder / "policies" / "returns.md").write_text(
        "# Returns\n\nProducts may be returned within 41 days of delivery with the original receipt. Refunds are "
        "paid to the original card within 9 working days.\n",
        encoding="utf-8",
    )
    (folder / "policies" / "repairs.md").write_text(
        "# Repairs under warranty\n\nA product under warranty is repaired free of charge at the nearest office. "
        "Repairs take 12 working days on average.\n",
        encoding="utf-8",
    )


def _row(
    product: str,
    kind: str,
    phrasing: int,
    values: dict[str, dict[str, str]],
    rng: random.Random,
    stale: str | None = None,
) -> dict:
    """A question with the gold answer and three others of its kind among the choices (one of them the `stale`
    answer, for a fact that changed)."""
    gold = values[product][kind]
    others = sorted({facts[kind] for name, facts in values.items() if facts[kind] not in (gold, stale)})
    choices = rng.sample(others, 3 if stale is None else 2) + [gold] + ([stale] if stale else [])
    rng.shuffle(choices)
    return {
        "prompt": FACTS[kind][1][phrasing].format(product=product),
        "completion": gold,
        "choices": choices,
        "source": f"products/{_slug(product)}.md",
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    rng = random.Random(7)
    values = _values(rng)
    updated = _updated(values, rng)
    _write_corpus(OUT / "corpus_v1", values, random.Random(1))
    _write_corpus(OUT / "corpus_v2", updated, random.Random(1))
    train = [_row(product, kind, phrasing, values, rng) for product in TRAINED for kind in FACTS for phrasing in (0, 1)]
    test = [_row(product, kind, 2, values, rng) for product in PRODUCTS for kind in FACTS]
    changed = [
        _row(product, kind, 2, updated, rng, stale=values[product][kind])
        for product in PRODUCTS
        for kind in FACTS
        if updated[product][kind] != values[product][kind]
    ]
    rng.shuffle(train)
    _write_jsonl(OUT / "train.jsonl", train)
    _write_jsonl(OUT / "test.jsonl", test)
    _write_jsonl(OUT / "updated.jsonl", changed)
    print(
        f"wrote {OUT}: {len(train)} train, {len(test)} test ({len(TRAINED) * len(FACTS)} about trained facts), "
        f"{len(changed)} updated questions; corpus of {len(PRODUCTS) + len(TOWNS) + 2} documents"
    )


if __name__ == "__main__":
    main()
