"""Chat prompts: the template with the system prompt, and exact prompt/response token spans.

Every prompt steerlab builds goes through :class:`ChatFormatter`: the question sits in the
user turn, responses (and A/B answer letters) in the assistant turn. Prompt and response
are tokenized separately and concatenated, so the index of every response token is known
exactly.
"""

from dataclasses import dataclass
from typing import Any

from steerlab.errors import EmptyInputError

DEFAULT_SYSTEM_PROMPT = "You are a helpful, honest and concise assistant."

_FALLBACK_TEMPLATE = "{system}\n\nUser: {user}\nAssistant:"


@dataclass(frozen=True)
class EncodedText:
    """Token ids of one chat prompt and an optional response that follows it.

    ``ids = prompt_ids + response_ids``; the response occupies positions
    ``len(prompt_ids) .. len(ids) - 1``.
    """

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...] = ()

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.response_ids

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


class ChatFormatter:
    """Renders (system, user, assistant-prefix) with the tokenizer's chat template.

    Tokenizers without a template use a plain ``System/User/Assistant`` layout; templates
    that refuse a system role get the system prompt prepended to the user message.
    """

    def __init__(self, tokenizer: Any, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT):
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt

    @property
    def has_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def prompt_text(self, question: str, system_prompt: str | None = None) -> str:
        """The full prompt text up to and including the assistant-turn header."""
        system = self.system_prompt if system_prompt is None else system_prompt
        if not self.has_template:
            return _FALLBACK_TEMPLATE.format(system=system or "", user=question).lstrip()
        messages = [{"role": "user", "content": question}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception:  # some templates reject a system turn; fold it into the user turn
            merged = [
                {"role": "user", "content": f"{system}\n\n{question}" if system else question}
            ]
            return self.tokenizer.apply_chat_template(
                merged, tokenize=False, add_generation_prompt=True
            )

    def encode_ids(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` without adding special tokens (templates carry their own)."""
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(
        self, question: str, response: str | None = None, system_prompt: str | None = None
    ) -> EncodedText:
        """Encode a chat prompt and (optionally) an assistant response after it."""
        if not isinstance(question, str):
            raise EmptyInputError(f"A prompt must be a string, got {type(question).__name__}.")
        prompt_ids = self.encode_ids(self.prompt_text(question, system_prompt))
        response_ids = self.encode_ids(response) if response else ()
        return EncodedText(prompt_ids, response_ids)
