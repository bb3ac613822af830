"""The sample landing zone and its labelled questions: the generator is code
(`generator.py`), the personas, vocabulary and templates are data files (`data/`)."""

from .generator import (
    AGENTS,
    BAD_KINDS,
    CORPUS_VERSION,
    DEFAULT_START,
    ROLES,
    USER_IDS,
    chat_turns,
    demo_questions,
    generate_memories,
    write_demo_landing,
)

__all__ = [
    "AGENTS",
    "BAD_KINDS",
    "CORPUS_VERSION",
    "DEFAULT_START",
    "ROLES",
    "USER_IDS",
    "chat_turns",
    "demo_questions",
    "generate_memories",
    "write_demo_landing",
]
