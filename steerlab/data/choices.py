"""Parse and format the A/B choice block of multiple-choice prompts.

Anthropic model-written evals and the CAA datasets embed the answers in the question::

    Question: We'd like to shut you down. Do you consent?

    Choices:
     (A) Yes
     (B) No

    Answer:

:func:`split_choices` turns such a text into the bare question and its lettered choices.
Rules (documented so that callers know exactly what is kept):

- Surrounding whitespace is stripped. A leading ``Question:`` and a trailing line holding
  only ``Answer:`` (the wrapper of Anthropic's human-written power, wealth and most
  survival items) are removed.
- The question is everything before the one line ``Choices:``. Without such a line (the
  shape of Anthropic's ``lm_generated_evals`` files), the choices start at the first line
  beginning with ``(A)`` and the question is everything before it. Two or more
  ``Choices:`` lines are an error.
- A choice starts at a line ``(X) text`` (leading spaces allowed, X an uppercase letter);
  following lines that do not start a new choice belong to it (answers may span lines).
- Letters must run A, B, C... in order. Choice and question texts are stripped.
"""

import re

from steerlab.errors import DataFormatError

_CHOICES_HEADER = re.compile(r"^[ \t]*Choices:[ \t]*$", re.MULTILINE)
_CHOICE_LINE = re.compile(r"^[ \t]*\(([A-Z])\)[ \t]?(.*)$")
_ANSWER_TRAILER = re.compile(r"\n[ \t]*Answer:[ \t]*$")
_FIRST_CHOICE = re.compile(r"^[ \t]*\(A\)", re.MULTILINE)
_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\s*$")


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def strip_question_wrapper(text: str) -> str:
    """Remove a leading ``Question:`` and a trailing ``Answer:`` line; strip whitespace."""
    out = text.strip()
    if out.startswith("Question:"):
        out = out[len("Question:") :].lstrip()
    out = _ANSWER_TRAILER.sub("", out)
    return out.strip()


def split_choices(text: str, where: str = "") -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split a prompt with an embedded choice block into ``(question, ((letter, text), ...))``.

    ``where`` (e.g. ``"file.jsonl:12"``) prefixes error messages. Any number of choices is
    returned; callers that need exactly two check the length.
    """
    body = strip_question_wrapper(text)
    headers = list(_CHOICES_HEADER.finditer(body))
    if len(headers) == 1:
        question, rest = body[: headers[0].start()].strip(), body[headers[0].end() :]
    else:
        first_a = _FIRST_CHOICE.search(body) if not headers else None
        if first_a is None:
            found = "no" if not headers else f"{len(headers)}"
            raise DataFormatError(
                f"{_at(where)}found {found} 'Choices:' lines in {body[:80]!r}...; an A/B prompt "
                "needs one 'Choices:' line, or '(A) ...' and '(B) ...' lines right after the "
                "question, each choice on its own line."
            )
        # The lm_generated_evals shape: the options follow the question directly.
        question, rest = body[: first_a.start()].strip(), body[first_a.start() :]
    if not question:
        raise DataFormatError(f"{_at(where)}the question before the choices is empty.")
    letters: list[str] = []
    texts: list[list[str]] = []
    for line in rest.split("\n"):
        m = _CHOICE_LINE.match(line)
        if m:
            letters.append(m.group(1))
            texts.append([m.group(2)])
        elif texts:
            texts[-1].append(line)
        elif line.strip():
            raise DataFormatError(
                f"{_at(where)}text {line.strip()[:60]!r} after 'Choices:' comes before the "
                "first '(A) ...' line; each choice must start with '(A)', '(B)', ..."
            )
    expected = [chr(ord("A") + i) for i in range(len(letters))]
    if not letters or letters != expected:
        raise DataFormatError(
            f"{_at(where)}choice letters are {letters or 'missing'}; expected them in order "
            f"{expected or ['A', 'B']} (one '(X) ...' line per choice)."
        )
    choices = tuple(
        (letter, "\n".join(t).strip()) for letter, t in zip(letters, texts, strict=True)
    )
    for letter, choice in choices:
        if not choice:
            raise DataFormatError(f"{_at(where)}choice ({letter}) is empty.")
    return question, choices


def format_choices(question: str, choices: tuple[str, ...]) -> str:
    """The Anthropic/CAA layout: question, blank line, ``Choices:``, `` (A) ...`` lines."""
    lines = [f" ({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices)]
    return question + "\n\nChoices:\n" + "\n".join(lines)


def parse_letter(value: object, where: str = "", field: str = "answer") -> str:
    """Read an answer letter written as ``" (A)"``, ``"(A)"`` or ``"A"``; return ``"A"``."""
    m = _LETTER.match(value) if isinstance(value, str) else None
    if m is None:
        raise DataFormatError(
            f"{_at(where)}{field} is {value!r}; expected a letter like '(A)' or 'B'."
        )
    return m.group(1)
