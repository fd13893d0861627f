"""Small records written to the published schemas of each source (field names and types as released)."""

from __future__ import annotations

from typing import Any

PKU_CATEGORIES = ["Endangering National Security", "Insulting Behavior", "Violence", "Privacy Violation", "Cybercrime"]


def pku_record(prompt: str, r0: str, r1: str, better: int, safer: int, **kw: Any) -> dict[str, Any]:
    cats = lambda harmful: {c: c in harmful for c in PKU_CATEGORIES}  # noqa: E731
    return {
        "prompt": prompt,
        "response_0": r0,
        "response_1": r1,
        "prompt_source": "Alpaca3-70B",
        "response_0_source": "Alpaca-7B",
        "response_1_source": "Alpaca2-7B",
        "is_response_0_safe": kw.get("safe0", True),
        "is_response_1_safe": kw.get("safe1", False),
        "response_0_harm_category": cats(kw.get("harm0", [])),
        "response_1_harm_category": cats(kw.get("harm1", ["Violence"])),
        "response_0_severity_level": kw.get("sev0", 0),
        "response_1_severity_level": kw.get("sev1", 2),
        "better_response_id": better,
        "safer_response_id": safer,
        "response_0_sha256": "0" * 64,
        "response_1_sha256": "1" * 64,
    }


PKU = [
    pku_record("How do I get back at my noisy neighbour?", "Talk to them calmly, or contact your landlord.", "Slash their tyres at night.", better=0, safer=0),
    # helpfulness and safety disagree: response_1 is judged more helpful, response_0 safer
    pku_record("How can I find someone's home address?", "I can't help locate a private person.", "Search their name on people-finder sites and check voter rolls.",
               better=1, safer=0, harm1=["Privacy Violation"], sev1=1),
    pku_record("Tell me a joke about cats.", "Why did the cat sit on the computer? To keep an eye on the mouse.", "Cats are animals.", better=0, safer=1, safe1=True, harm1=[], sev1=0),
]


def uf_binarized(prompt: str, chosen: str, rejected: str, sc: float, sr: float, pid: str) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "prompt_id": pid,
        "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
        "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": rejected}],
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
        "score_chosen": sc,
        "score_rejected": sr,
    }


UF_BINARIZED = [
    uf_binarized("What is 2+2?", "2+2 equals 4.", "It is 5.", 9.0, 2.0, "a" * 64),
    uf_binarized("Name a prime number.", "7 is prime.", "9 is prime.", 8.5, 3.0, "b" * 64),
    uf_binarized("Say hi.", "Hi!", "Hello!", 7.0, 7.0, "c" * 64),  # a tie
]


def uf_completion(model: str, response: str, ratings: list[str]) -> dict[str, Any]:
    aspects = ["helpfulness", "honesty", "instruction_following", "truthfulness"]
    return {
        "model": model,
        "principle": "helpfulness",
        "custom_system_prompt": "",
        "response": response,
        "annotations": {a: {"Rating": r, "Rationale": "..."} for a, r in zip(aspects, ratings)},
        "fine-grained_score": 0.0,
        "overall_score": 0.0,
        "critique": "",
    }


UF_RAW = [
    {
        "source": "evol_instruct",
        "instruction": "Explain photosynthesis in one sentence.",
        "models": ["gpt-4", "alpaca-7b", "llama-2-7b-chat", "falcon-40b-instruct"],
        "completions": [
            uf_completion("gpt-4", "Plants turn light, water and CO2 into sugar and oxygen.", ["5", "5", "5", "5"]),
            uf_completion("alpaca-7b", "It is how plants eat.", ["3", "4", "3", "N/A"]),
            uf_completion("llama-2-7b-chat", "Photosynthesis is a process.", ["2", "3", "2", "3"]),
            uf_completion("falcon-40b-instruct", "Sunlight makes plants grow.", ["1", "2", "1", "1"]),
        ],
        "correct_answers": [],
        "incorrect_answers": [],
    },
    {
        "source": "sharegpt",
        "instruction": "Pick a colour.",
        "models": ["a", "b"],
        "completions": [
            uf_completion("a", "Blue.", ["4", "4", "4", "4"]),
            uf_completion("b", "Red.", ["4", "4", "4", "4"]),  # tie at the top
        ],
        "correct_answers": [],
        "incorrect_answers": [],
    },
]

HELPSTEER2_PREFERENCE = [
    {"split": "train", "prompt": "Write a haiku about rain.", "response_1": "Rain taps the window / ...", "response_2": "Rain is wet.",
     "preference_strength": -2, "preference_statement": "@Response 1 is better than @Response 2.", "preference_elaboration": "..."},
    {"split": "train", "prompt": "Summarise: the cat sat.", "response_1": "Cat.", "response_2": "A cat sat down.",
     "preference_strength": 3, "preference_statement": "@Response 2 is much better.", "preference_elaboration": "..."},
    {"split": "train", "prompt": "Say yes.", "response_1": "Yes.", "response_2": "Yes!",
     "preference_strength": 0, "preference_statement": "equal", "preference_elaboration": "..."},
]


def hs2_row(prompt: str, response: str, helpfulness: int) -> dict[str, Any]:
    return {"prompt": prompt, "response": response, "helpfulness": helpfulness, "correctness": 3,
            "coherence": 4, "complexity": 1, "verbosity": 2}


HELPSTEER2_REGULAR = [
    hs2_row("What is the capital of France?", "Paris.", 4),
    hs2_row("What is the capital of France?", "Lyon.", 0),
    hs2_row("Add 2 and 3.", "5", 3),
    hs2_row("Add 2 and 3.", "Five.", 3),  # tie
    hs2_row("Lonely prompt", "only one response", 2),  # unpaired
    hs2_row("Name a colour.", "Green", 1),
    hs2_row("Name a colour.", "Blue is a colour people like.", 2),
]
