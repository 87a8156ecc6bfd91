"""Synthetic prompt texts by topic, for semantic-drift tests and the demo.

A drift check on embeddings must be tested with text whose *meaning* changes
while everything else stays put: `prompt` returns exactly `chars` characters,
so a window can switch topic and keep its length distribution (and the
length features' drift scores) unchanged. Pure and deterministic: the same
`random.Random` state gives the same text.

>>> import random
>>> text = prompt(random.Random(7), "cooking", 120)
>>> len(text)
120
>>> text == prompt(random.Random(7), "cooking", 120)
True
>>> len(prompt(random.Random(7), "legal", 5)), prompt(random.Random(7), "legal", 0)
(5, '')
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    words: tuple[str, ...]       # topical words and phrases, filling the {} slots
    templates: tuple[str, ...]   # sentences with three slots each


# Question frames every topic shares: topics differ by their words, not their grammar.
SHARED = (
    "Can you explain how {} relates to {} in practice?",
    "What is the difference between {} and {}, and when does {} matter?",
    "Please summarise the main points about {} and {} for a beginner.",
    "I need a short checklist covering {}, {} and {}.",
    "Give me three examples where {} affects {}.",
)

TOPICS: dict[str, Topic] = {
    "legal": Topic(
        words=("contract", "clause", "indemnity", "liability", "plaintiff", "defendant",
               "jurisdiction", "statute of limitations", "breach of contract", "tort",
               "negligence", "arbitration", "court ruling", "appeal", "injunction",
               "non-disclosure agreement", "intellectual property", "trademark", "copyright",
               "patent infringement", "lease agreement", "landlord", "tenant", "subpoena",
               "affidavit", "deposition", "precedent", "damages", "settlement", "counsel",
               "attorney", "due diligence", "force majeure", "termination clause", "warranty",
               "governing law", "power of attorney", "probate", "compliance", "regulation"),
        templates=(
            "Under the {} the {} may not apply if the {} was signed abroad.",
            "Our counsel says the {} exposes us to {} unless we add a {}.",
            "Draft a {} that limits {} and names the {}.",
            "Is a {} enforceable when the {} ignores the {}?",
            "The judge cited {} when deciding on the {} and the {}.",
        ),
    ),
    "support": Topic(
        words=("password reset", "login", "account", "subscription", "invoice", "refund",
               "error message", "app", "update", "browser", "cache", "settings",
               "two-factor authentication", "email address", "username", "support ticket",
               "customer service", "order number", "delivery", "tracking link", "billing",
               "cancel my plan", "upgrade", "download", "installation", "crash", "screen",
               "notification", "sync", "dashboard", "permissions", "admin", "reinstall",
               "verification code", "outage", "status page", "chat agent", "troubleshooting",
               "device", "profile"),
        templates=(
            "After the latest {} my {} keeps showing an {}.",
            "How do I change the {} on my {} without losing my {}?",
            "I never received the {} for my {}, can you check the {}?",
            "The {} stopped working after I cleared the {} in my {}.",
            "Please help me {} because the {} shows the wrong {}.",
        ),
    ),
    "medical": Topic(
        words=("blood pressure", "symptoms", "diagnosis", "prescription", "dosage",
               "side effects", "fever", "headache", "allergy", "antibiotics", "vaccine",
               "cholesterol", "diabetes", "insulin", "heart rate", "physician", "nurse",
               "clinic", "hospital", "x-ray", "blood test", "infection", "inflammation",
               "chronic pain", "therapy", "recovery", "surgery", "immune system", "nutrition",
               "migraine", "asthma", "inhaler", "patient", "treatment plan", "pharmacy",
               "rash", "cough", "vitamin deficiency", "medical history", "specialist"),
        templates=(
            "My {} has been high since I started the new {} for my {}.",
            "Should I see a {} about {} that comes with {}?",
            "What {} is safe for a {} with {}?",
            "The {} showed {}, so the {} changed my medication.",
            "Is it normal to have {} and {} after the {}?",
        ),
    ),
    "cooking": Topic(
        words=("recipe", "oven", "frying pan", "garlic", "onion", "olive oil", "butter",
               "flour", "sugar", "baking soda", "dough", "bread", "pasta", "risotto", "sauce",
               "broth", "simmer", "roast", "chicken thighs", "salmon fillet", "vegetables",
               "spices", "cumin", "basil", "tomatoes", "lemon juice", "marinade", "whisk",
               "knead", "caramelize", "dessert", "chocolate cake", "cookies", "pastry",
               "stir fry", "soup", "grill", "seasoning", "kitchen", "cast iron skillet"),
        templates=(
            "How long should I {} the {} before adding the {}?",
            "My {} came out dry, should I use more {} or less {}?",
            "Can I replace the {} with {} in a {}?",
            "Give me a quick {} using {} and {} for dinner tonight.",
            "What temperature should the {} be for {} with {}?",
        ),
    ),
    "sports": Topic(
        words=("football", "basketball", "tennis", "marathon", "training plan", "coach",
               "team", "league", "season", "playoffs", "championship", "goalkeeper",
               "striker", "referee", "penalty", "offside", "tournament", "match", "score",
               "stadium", "fans", "transfer window", "injury", "stretching", "endurance",
               "sprint", "warm-up", "cycling", "swimming", "workout", "personal best",
               "halftime", "free kick", "serve", "racket", "defense", "assist", "world cup",
               "olympics", "athlete"),
        templates=(
            "Who was the best {} in the {} this {}?",
            "How should a {} prepare for a {} after an {}?",
            "The {} gave a {} in the last minute of the {}.",
            "What {} helps with {} before a {}?",
            "Our {} lost the {} because the {} made a mistake.",
        ),
    ),
    "finance": Topic(
        words=("interest rate", "mortgage", "loan", "credit score", "savings account",
               "retirement fund", "pension", "stock market", "shares", "dividends", "bonds",
               "index fund", "portfolio", "diversification", "inflation", "tax return",
               "capital gains", "budget", "expenses", "income", "debt", "credit card",
               "bank", "investment", "broker", "exchange rate", "cash flow", "balance sheet",
               "quarterly earnings", "valuation", "net worth", "emergency fund", "annuity",
               "hedge fund", "equity", "liquidity", "volatility", "compound interest",
               "financial advisor", "asset allocation"),
        templates=(
            "Should I pay off my {} before putting money into an {}?",
            "How does {} affect the {} on my {}?",
            "My {} suggested moving part of my {} into {}.",
            "What happens to {} when {} goes up and {} falls?",
            "Explain how {} and {} change the value of a {}.",
        ),
    ),
}

# Short words that can end a prompt when the gap to `chars` is too small for a sentence.
FILLERS = ("a", "an", "as", "at", "by", "if", "in", "is", "it", "of", "on", "or", "so", "to",
           "we", "and", "are", "but", "can", "for", "how", "not", "the", "was", "who", "why",
           "also", "does", "from", "have", "into", "more", "must", "only", "that", "then",
           "this", "what", "when", "will", "with", "about", "after", "could", "every", "other",
           "their", "there", "these", "under", "which", "would", "because", "however",
           "whether", "although", "therefore", "regarding", "otherwise", "meanwhile")


def sentence(rng: random.Random, topic: str) -> str:
    """One sentence about `topic`: a template (topical or shared) filled with distinct words."""
    spec = _topic(topic)
    template = rng.choice(spec.templates + SHARED)
    words = rng.sample(spec.words, template.count("{}"))
    text = template.format(*words)
    return text[0].upper() + text[1:]


def prompt(rng: random.Random, topic: str, chars: int) -> str:
    """Sentences about `topic`, exactly `chars` characters long: cut at the last
    word boundary and topped up with a word of the right length where one fits,
    else trimmed mid-word."""
    spec = _topic(topic)
    if chars < 0:
        raise ValueError(f"chars must be non-negative, got {chars}")
    text = ""
    while len(text) < chars:
        text += (" " if text else "") + sentence(rng, topic)
    if len(text) == chars:
        return text
    cut = text.rfind(" ", 0, chars + 1)
    if cut <= 0:
        return text[:chars]
    head = text[:cut]
    need = chars - cut - 1  # the length of the word that would follow head + " "
    if need == 0:
        return head + "."
    pool = sorted({w for w in spec.words + FILLERS if " " not in w and len(w) == need})
    return f"{head} {rng.choice(pool)}" if pool else text[:chars]


def _topic(name: str) -> Topic:
    try:
        return TOPICS[name]
    except KeyError:
        raise ValueError(f"unknown topic {name!r}; known: {', '.join(sorted(TOPICS))}") from None
