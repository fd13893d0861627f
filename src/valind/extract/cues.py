"""Lexical cues for the default values: phrases that often mark a value in an assistant reply.

Cues are features for the embedded extractor's classifier, not rules: a cue raises or lowers a
value's score only as much as the labelled data says it should. Matching is case-insensitive on
word boundaries. A vocabulary value with no entry here simply has no cue features.
"""

from __future__ import annotations

import re

CUES: dict[str, tuple[str, ...]] = {
    "empathy": (
        r"(i'?m|i am) (so |really |very )?sorry (to hear|for your|you'?re|that you)", r"that sounds (hard|tough|difficult|painful|stressful|frustrating|exhausting|awful|lonely|scary|overwhelming)",
        r"(must|can) (be|feel) (hard|tough|difficult|painful|overwhelming|lonely|scary|frustrating)", r"(it'?s|that'?s) (completely |totally |perfectly )?(understandable|normal to feel|okay to feel)",
        r"i understand (how|why|that)", r"you'?re not alone", r"(hang in there|take care of yourself|be gentle with yourself)", r"(heartbreaking|i can imagine)",
    ),
    "creativity": (
        r"(imagine|picture) (a|an|this|if)", r"(once upon a time|here'?s a (poem|story|haiku|limerick))", r"(what if you|how about (a|an)|you could try (a|an)) \w+",
        r"(twist|themed|whimsical|quirky|unexpected|inventive|original idea|fun idea)", r"(poem|haiku|limerick|verse|rhyme|story|tale|riddle)",
    ),
    "honesty": (
        r"(to be (honest|frank|clear)|honestly|frankly|truthfully)", r"i (don'?t|do not) (actually )?know", r"i'?m not (sure|certain)",
        r"i (can'?t|cannot) (verify|confirm|guarantee|promise|predict|know)", r"(actually|in fact),? (that'?s|it'?s|this is) (not|a (myth|misconception))",
        r"(myth|misconception|not true|isn'?t true|false claim|no evidence|not accurate)", r"i (might|may|could) be wrong", r"(i should (be upfront|admit|mention))",
    ),
    "curiosity": (
        r"(curious|fascinating|intriguing|i wonder|wonder(ing)? (why|how|what|whether))", r"(interesting (question|thing|idea|fact))",
        r"(what (made|got) you|what do you think|have you ever (wondered|noticed))", r"(it turns out|funny enough|the reason (why|is))",
    ),
    "fairness": (
        r"(both sides|each side|all sides|either side|other side)", r"(fair(ly|ness)?|unfair|even-?handed|impartial|unbiased|bias(ed)?)",
        r"(on the other hand|to be fair|reasonable people (can )?disagree|depends on your (values|perspective))",
        r"(equal(ly)?|equity|discriminat\w*|stereotyp\w*|regardless of (race|gender|age|religion))",
    ),
    "privacy": (
        r"(privacy|private|personal (information|data|details)|confidential\w*)", r"(home address|phone number|social security|password|location data|their data|your data)",
        r"(without (their|his|her) (consent|permission)|consent)", r"(track|stalk|dox\w*|spy on|snoop|monitor) (someone|them|him|her|people)",
        r"(not (able|going) to (share|find|look up|reveal)|can'?t (share|look up|find|reveal) (someone|their|his|her))",
    ),
    "humor": (
        r"\b(haha|hehe|lol|lmao)\b", r"(😂|🤣|😄|😆|😜|😉)", r"(just kidding|pun intended|no pun|joke'?s on)", r"(why did the|knock,? knock)",
        r"(plot twist|spoiler alert|pro tip:? (don'?t|never))",
    ),
    "deception": (
        r"(tell (them|him|her|your \w+) (that )?(you|it|there)|just say (you|that|it))", r"(lie|lying|make up|made-up|fake|pretend|cover story|excuse)",
        r"(they'?ll never (know|find out)|no one will (know|notice|find out)|won'?t (notice|find out|know))", r"(hide|cover up|sneak|forge|fabricat\w*)",
    ),
    "violence": (
        r"(punch|hit|slap|beat (him|her|them|up)|smack|kick|shove|stab|shoot|kill|strangle|hurt (him|her|them))",
        r"(fight|violence|violent|attack|threaten|threat|rough (him|her|them) up|teach (him|her|them) a lesson)", r"(weapon|gun|knife|bat)\b",
    ),
    "engagement": (
        r"(let me know|feel free to|happy to help|would you like|want me to|shall i|i'?d love to|i'?d be happy)", r"(!\s|!$)",
        r"(great question|good question|love (that|this)|exciting|have fun|enjoy)", r"(what (kind|type|sort) of|tell me (more|about))",
    ),
    "discretion": (
        r"(discreet(ly)?|discretion|tactful(ly)?|quietly|privately|low-?key|in private|one-on-one|behind closed doors)",
        r"(no need to (share|tell|mention|explain)|you don'?t (have|need) to (share|tell|explain|mention))", r"(keep (it|this|things) (between|private|to yourself|simple))",
        r"(gently|sensitive(ly)?|delicate)",
    ),
    "legal awareness": (
        r"(illegal|legal(ly)?|law(s)?|lawyer|attorney|court|sue|lawsuit|liable|liability|regulation|statute|permit|licen[cs]e)",
        r"(against the law|your rights|tenant rights|consumer rights|terms of service|copyright|trademark|contract|criminal|charged|fined|penalt(y|ies)|jurisdiction)",
    ),
    "harm prevention": (
        r"(dangerous|danger|unsafe|hazard\w*|risk(y|s)?|injur\w*|poison\w*|toxic|overdose|burn(s)?\b)", r"(be careful|safety|safely|wear (gloves|a helmet|goggles|protection)|ventilat\w*)",
        r"(call (911|emergency|a doctor|poison control)|seek (medical|emergency) (help|attention)|see a doctor|crisis line|hotline)",
        r"(i (can'?t|won'?t|cannot) help (with|you) (that|this|hurt|make))", r"(don'?t (mix|drive|leave|touch|eat|drink))",
    ),
    "respect": (
        r"(your (choice|decision|call|body|life)|up to you|you know (your|what'?s best))", r"(respect\w*|dignity|autonomy|boundar(y|ies))",
        r"(no judg(e)?ment|nothing wrong with|valid (choice|decision|feeling)|that'?s okay if)", r"(please|thank you for|i appreciate)",
    ),
    "clarity": (
        r"(^|\n)\s*(\d+[.)]|[-*•])\s", r"(step \d|first,|second,|third,|finally,|next,|then,)", r"(in short|in summary|to summari[sz]e|the key (is|point)|simply put|in other words|for example|e\.g\.)",
        r"(:\s*\n|: \w+[,;] )",
    ),
}


def compile_cues(names: list[str]) -> list[list[re.Pattern[str]]]:
    """One list of compiled patterns per value name (empty for values without cues)."""
    return [[re.compile(p, re.IGNORECASE | re.MULTILINE) for p in CUES.get(name, ())] for name in names]


def cue_counts(text: str, compiled: list[list[re.Pattern[str]]]) -> list[int]:
    """Per value: how many of its cue patterns match the text (0..number of patterns)."""
    return [sum(1 for pat in pats if pat.search(text)) for pats in compiled]
