"""Who acts: subjects compare case-insensitively, so `Approver-User` and `approver-user`
are one person (one approver for four-eyes, one registrant).

Tokens are issued with the normalised subject; events written before that may carry any
case, so rules compare through `subject_key` rather than trusting stored spellings.
"""

from __future__ import annotations


def subject_key(subject: str) -> str:
    """The form in which subjects are issued and compared: stripped and case-folded."""
    return subject.strip().casefold()


def same_subject(first: str, second: str) -> bool:
    """True when both name the same subject."""
    return subject_key(first) == subject_key(second)
