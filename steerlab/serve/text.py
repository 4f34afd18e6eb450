"""Text in and out of the model: chat messages to a prompt, generated tokens to text.

:class:`TextStream` turns tokens into text as they arrive: each :meth:`~TextStream.push`
returns the new text that is safe to send (incomplete UTF-8, trailing whitespace and a
possible start of a stop sequence are held back), and the pieces add up to exactly the
final text, which equals ``generate(...).text`` cut at the first stop sequence.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from steerlab.models.model import SteerlabModel

_FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_messages(model: SteerlabModel, messages: Sequence[Mapping[str, str]]) -> str:
    """The chat as prompt text: the model's chat template with the assistant turn open.

    Tokenizers without a template get a plain ``Role: content`` layout; templates that
    refuse a system turn get the system text prepended to the first user message.
    """
    msgs = [dict(m) for m in messages]
    tok = model.tokenizer
    if not getattr(tok, "chat_template", None):
        lines = [f"{_FALLBACK_ROLES[m['role']]}: {m['content']}" for m in msgs]
        return "\n".join(lines) + "\nAssistant:"
    try:
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except Exception:  # e.g. templates without a system role
        system = "\n\n".join(m["content"] for m in msgs if m["role"] == "system")
        rest = [m for m in msgs if m["role"] != "system"]
        if system:
            first_user = next((m for m in rest if m["role"] == "user"), None)
            if first_user is None:
                rest.insert(0, {"role": "user", "content": system})
            else:
                first_user["content"] = f"{system}\n\n{first_user['content']}"
        return tok.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)


class TextStream:
    """Generated tokens -> text pieces, with stop sequences (one per request)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self._tok = tokenizer
        self._stop = tuple(stop)
        self.token_ids: list[int] = []
        self.sent = ""  # the text sent so far (a prefix of the final text)
        self.stopped = False  # a stop sequence was found
        self.final: str | None = None  # set by finish()
        self._stop_text = ""

    def _text(self) -> str:
        return self._tok.decode(self.token_ids, skip_special_tokens=True).lstrip()

    def _cut(self, text: str) -> str:
        """``text`` before its first stop sequence (and mark the stream stopped)."""
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return text[:cut]
        return text

    def push(self, token: int) -> str:
        """Add a token; the new text that is safe to send ("" when held back)."""
        if self.stopped:
            return ""
        self.token_ids.append(int(token))
        text = self._cut(self._text())
        if self.stopped:
            self._stop_text = text
            return self._advance(text)
        safe = len(text.rstrip())  # the final text is stripped: hold trailing whitespace
        while safe and text[safe - 1] == "\ufffd":  # an incomplete UTF-8 character
            safe -= 1
        for s in self._stop:  # hold text that may be the start of a stop sequence
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    safe = min(safe, len(text) - k)
                    break
        return self._advance(text[:safe])

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        text = self._stop_text if self.stopped else self._cut(self._text().rstrip())
        self.final = text
        return self._advance(text)

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece

    @property
    def text(self) -> str:
        """The final text (after :meth:`finish`)."""
        return self.sent if self.final is None else self.final
