"""Secret references: the model writes `${secret:NAME}`; the value exists only in a running
command, and every value is masked back to its reference in whatever the model, the ledger,
events or logs get to see. This is the one masking implementation: the runner's reporter uses it too.
Masking comes before any cut or search (mask_cut, search.masked_copy).

Masking is literal: a command that transforms a value (base64, reversal, splitting it across
lines) is out of scope; the policy, not the mask, is what stops that."""

import re
from collections.abc import Mapping

SECRET_REF = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")


class UnknownSecret(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class SecretBox:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._values = dict(secrets)
        # Longest first, so a secret containing another is masked whole.
        self._masks = sorted(
            ((value, f"${{secret:{name}}}") for name, value in self._values.items() if value),
            key=lambda pair: -len(pair[0]),
        )

    @property
    def values(self) -> list[str]:
        return [value for value, _ in self._masks]

    def substitute(self, text: str) -> str:
        """Replace every reference by its value; an unknown name raises UnknownSecret."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._values:
                raise UnknownSecret(name)
            return self._values[name]

        return SECRET_REF.sub(value, text)

    def names_in(self, text: str) -> list[str]:
        return SECRET_REF.findall(text)

    def mask(self, text: str) -> str:
        for value, ref in self._masks:
            if value in text:
                text = text.replace(value, ref)
        return text

    def mask_cut(self, text: str) -> str:
        """Mask a text that was cut short: a secret's head left at the cut is dropped too."""
        text = self.mask(text)
        cut = 0
        for value, _ in self._masks:
            cut = max([cut] + [size for size in range(1, len(value)) if text.endswith(value[:size])])
        return text[: len(text) - cut]

    def mask_bytes(self, data: bytes) -> bytes:
        """`mask` for raw file content (any encoding: the values are matched as UTF-8 bytes)."""
        for value, ref in self._masks:
            raw = value.encode()
            if raw in data:
                data = data.replace(raw, ref.encode())
        return data

    def contains_secret(self, text: str) -> bool:
        return any(value in text for value, _ in self._masks)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """A (masked) text fit for an error message or a log line: control characters become '?'.
    Used instead of repr(), whose escaping would hide a secret containing a backslash from the mask."""
    return _CONTROL.sub("?", text)
