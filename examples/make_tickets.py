"""Generate the quickstart task: route customer-support tickets of the fictional shop "Northwind Gear" to a team.

The routing follows the house policy below, which a general model cannot know (warranty claims go to technical,
gift cards to billing, address changes to shipping, data-deletion requests to account), so a small model is poor
before tuning and clearly better after a few minutes of training.

    python examples/make_tickets.py   # rewrites examples/data/tickets/*.jsonl (seeded)

Rows are `{"id", "text", "label"}`: tuner reads them as classification data (text column plus label). The
`*_pairs.jsonl` files hold the same tickets as preference pairs for DPO, `{"id", "prompt", "chosen", "rejected"}`:
the house-style answer (the team's name alone) is chosen; a wrong team, or a rambling non-answer, is rejected.
`train_feedback.jsonl` holds the train tickets as thumbs up/down feedback for KTO, `{"id", "prompt", "completion",
"thumbs_up"}`: one answer per ticket, as a deployed assistant might have given it (the right team 40% of the time,
else a wrong team or a rambling answer), and whether the user marked it good.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TEAMS = ["billing", "shipping", "returns", "technical", "account"]

PRODUCTS = [
    "trail backpack",
    "rain jacket",
    "camping stove",
    "headlamp",
    "sleeping bag",
    "trekking poles",
    "water filter",
    "tent",
    "hiking boots",
    "GPS watch",
    "solar charger",
    "fleece hoodie",
    "kayak paddle",
    "climbing harness",
    "insulated bottle",
]

# Each team's situations; {p} is a product, {n} an order number, {d} a number of days, {a} an amount.
SITUATIONS = {
    "billing": [
        "I was charged twice for order {n}",
        "my card was billed {a} but the order total was lower",
        "the invoice for order {n} shows the wrong VAT number",
        "my gift card balance was not applied to order {n}",
        "I need a receipt for the {p} for my expense report",
        "the promo code was accepted but I still paid {a}",
        "there is a pending charge of {a} I don't recognise",
        "can I pay the rest of order {n} with a gift card",
        "my refund for order {n} came back as store credit instead of money",
    ],
    "shipping": [
        "order {n} has not moved in tracking for {d} days",
        "the courier left the {p} at the wrong address",
        "I need to change the delivery address for order {n} before it ships",
        "when will the {p} from order {n} arrive",
        "the tracking link for order {n} does not work",
        "can you ship order {n} to a pickup point instead",
        "the package with my {p} says delivered but it isn't here",
        "order {n} was split and only half arrived",
        "do you ship the {p} to Norway",
    ],
    "returns": [
        "the {p} arrived damaged and I want to send it back",
        "I'd like to return the {p}, it's the wrong size",
        "how do I get a return label for order {n}",
        "I returned the {p} {d} days ago and heard nothing",
        "the {p} is not what the photos showed, I want to return it",
        "can I exchange the {p} for another colour",
        "I received someone else's {p} in my parcel",
        "the return window for the {p} closed yesterday, can I still return it",
    ],
    "technical": [
        "the {p} stopped working after {d} days",
        "my {p} is still under warranty and the zip broke",
        "the {p} won't pair with the app",
        "how do I update the firmware on the {p}",
        "the {p} leaks when I use it",
        "is the {p} compatible with my old charger",
        "I want to make a warranty claim for my {p}",
        "the battery of the {p} drains in an hour",
        "the manual for the {p} is missing a step",
    ],
    "account": [
        "I can't log in to my account",
        "please delete my account and all my personal data",
        "I never got the password reset email",
        "how do I change the email address on my account",
        "someone else placed an order from my account",
        "I want to unsubscribe from the newsletter",
        "my loyalty points disappeared from my account",
        "please merge my two accounts",
        "I want a copy of the data you hold about me",
    ],
}

OPENERS = ["", "Hi, ", "Hello, ", "Hey team, ", "Good morning, ", "Urgent: ", "Quick question: ", "Dear support, "]
CLOSERS = [
    "",
    " Thanks.",
    " Please help.",
    " Thanks in advance!",
    " What can you do?",
    " Regards, Sam.",
    " This is the second time I ask.",
    " Cheers.",
]


def ticket(rng: random.Random, team: str) -> str:
    situation = rng.choice(SITUATIONS[team]).format(
        p=rng.choice(PRODUCTS),
        n=f"NW-{rng.randint(10000, 99999)}",
        d=rng.randint(2, 30),
        a=f"${rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
    )
    opener = rng.choice(OPENERS)
    text = situation[0].upper() + situation[1:] if not opener else situation
    return f"{opener}{text}.{rng.choice(CLOSERS)}".replace("..", ".")


PROMPT = "Team for this ticket (billing, shipping, returns, technical or account)?\n{text}"
RAMBLES = [
    "Hmm, this one is tricky. It might be {a}, or maybe {b}; I would ask the customer for more details first.",
    "Thank you for sharing this ticket! Several teams could help here, for example {a} or {b}.",
    "I'm not able to decide that, but {a} usually knows a lot about this kind of thing.",
]


def pair(rng: random.Random, row: dict) -> dict:
    """A preference pair for one ticket: the team's name alone, against a wrong team or a rambling answer."""
    wrong = rng.sample([t for t in TEAMS if t != row["label"]], 2)
    rejected = wrong[0] if rng.random() < 2 / 3 else rng.choice(RAMBLES).format(a=wrong[0], b=wrong[1])
    return {"id": row["id"], "prompt": PROMPT.format(text=row["text"]), "chosen": row["label"], "rejected": rejected}


def feedback(rng: random.Random, row: dict) -> dict:
    """One answer to a ticket and its thumbs up or down: the right team (up) 40% of the time, else a wrong one."""
    good = rng.random() < 0.4
    answer = row["label"] if good else pair(rng, row)["rejected"]
    return {"id": row["id"], "prompt": PROMPT.format(text=row["text"]), "completion": answer, "thumbs_up": good}


def make(n_train: int = 600, n_test: int = 150, seed: int = 7) -> tuple[list[dict], list[dict]]:
    """Balanced rows over the teams; test texts never appear in train."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_test:
        team = TEAMS[len(rows) % len(TEAMS)]
        text = ticket(rng, team)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": team})
    rng.shuffle(rows)
    for i, row in enumerate(rows):
        row["id"] = f"t{i:04d}"
    return rows[:n_train], rows[n_train:]


def main() -> None:
    out = Path(__file__).parent / "data" / "tickets"
    out.mkdir(parents=True, exist_ok=True)
    train, test = make()
    for name, rows in (("train", train), ("test", test)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({"id": row["id"], "text": row["text"], "label": row["label"]}) + "\n")
        rng = random.Random(f"pairs-{name}")
        with open(out / f"{name}_pairs.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(pair(rng, row)) + "\n")
    rng = random.Random("feedback-train")
    with open(out / "train_feedback.jsonl", "w", encoding="utf-8") as handle:
        for row in train:
            handle.write(json.dumps(feedback(rng, row)) + "\n")
    print(
        f"wrote {len(train)} train and {len(test)} test rows, as many preference pairs, and thumbs up/down "
        f"feedback on the train tickets, to {out}"
    )


if __name__ == "__main__":
    main()
