"""One spelling per account: emails and names (week 7: sign-up and log-in).

Week 7 lower-cases an email at sign-up and at login, which is enough for ASCII.
With Unicode, two strings that look the same can differ: "ü" precomposed or as
"u" plus a combining mark (NFC tells them apart), and a domain written in Unicode
or in its IDNA "xn--" form. Sign-up and login must map every one of them to the
same account, so both call `normalize_email`.

A name is shown to other people, so it refuses what a reader can't see or what
changes how the text around it reads: control characters (Unicode category Cc),
format characters such as U+202E RIGHT-TO-LEFT OVERRIDE or U+200B ZERO WIDTH
SPACE (Cf), and lone surrogates (Cs).
"""

from __future__ import annotations

import contextlib
import unicodedata

from email_validator import EmailNotValidError, validate_email

HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def normalize_email(address: str) -> str:
    """The account key of an email: NFC, the domain in Unicode (IDNA decoded), lower case.

    Never raises: a string that is not an address comes back trimmed, NFC and
    lower-cased (a login with it then simply finds nobody).
    """
    text = unicodedata.normalize("NFC", address.strip())
    with contextlib.suppress(EmailNotValidError):
        text = validate_email(text, check_deliverability=False).normalized
    return text.lower()


def hidden_characters(text: str) -> list[str]:
    """The code points of `text` in categories Cc, Cf or Cs, as `U+XXXX`."""
    return [
        f"U+{ord(char):04X}" for char in text if unicodedata.category(char) in HIDDEN_CATEGORIES
    ]


__all__ = ["HIDDEN_CATEGORIES", "hidden_characters", "normalize_email"]
