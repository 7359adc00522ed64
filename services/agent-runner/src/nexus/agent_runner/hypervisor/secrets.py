"""Secret references: the model writes `${secret:NAME}`; the value exists only in a running
command, and every value is masked back to its reference in whatever the model, the ledger,
events or logs get to see. This is the one masking implementation: the runner's reporter uses it too.
Masking comes before any cut or search (mask_cut, search.masked_copy).

Masking is literal in log lines. What leaves the run (every ledger change and event, a file's diff, a
command's output) and every tool result the model reads is masked in the simple encodings too
(`mask_forms`: base64 at every alignment, hex, percent-encoding), as the canary searches what is
pushed. A value otherwise transformed (reversed, compressed, split across lines) is out of scope;
the policy, not the mask, is what stops that."""

import base64
import binascii
import re
from collections.abc import Mapping
from urllib.parse import quote, quote_plus

SECRET_REF = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")
MIN_CANARY_CHARS = 4  # shorter values are not searched in their encodings (they would match by chance)


def _base64_runs(data: bytes) -> set[bytes]:
    """The base64 text that `data` produces wherever it sits in a longer stream (three alignments)."""
    runs = set()
    for pad in range(3):
        encoded = base64.b64encode(bytes(pad) + data)
        first = -(-8 * pad // 6)  # the first character made only of `data`'s bits
        last = (8 * (pad + len(data)) - 6) // 6  # the last one
        run = encoded[first : last + 1].rstrip(b"=")
        if len(run) >= MIN_CANARY_CHARS:
            runs.update({run, run.replace(b"+", b"-").replace(b"/", b"_")})
    return runs


def encodings(value: str) -> dict[bytes, str]:
    """Every form of `value` the canary looks for, each with the name of its encoding."""
    raw = value.encode()
    forms = {raw: "plain"}
    for run in _base64_runs(raw):
        forms.setdefault(run, "base64")
    hexed = binascii.hexlify(raw)
    forms.setdefault(hexed, "hex")
    forms.setdefault(hexed.upper(), "hex")
    for quoted in (quote(value, safe=""), quote_plus(value, safe="")):
        forms.setdefault(quoted.encode(), "url-encoding")
        forms.setdefault(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted).encode(), "url-encoding")
    return forms


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
        self._forms: list[tuple[str, str]] | None = None  # made on first use of mask_forms

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

    def mask_forms(self, text: str) -> str:
        """`mask`, and each value's simple encodings too (base64 at every alignment, hex,
        percent-encoding), each replaced by its reference and encoding: for views of content that
        leave the run (diffs, command output), where an encoded value is as good as the value."""
        text = self.mask(text)
        if self._forms is None:
            forms: dict[str, str] = {}
            for value, ref in self._masks:
                if len(value) >= MIN_CANARY_CHARS:
                    for encoded, how in encodings(value).items():
                        if how != "plain":
                            forms.setdefault(encoded.decode(), f"{ref} ({how})")
            self._forms = sorted(forms.items(), key=lambda item: -len(item[0]))
        for form, ref in self._forms:
            if form in text:
                text = text.replace(form, ref)
        return text

    def contains_secret(self, text: str) -> bool:
        return any(value in text for value, _ in self._masks)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """A (masked) text fit for an error message or a log line: control characters become '?'.
    Used instead of repr(), whose escaping would hide a secret containing a backslash from the mask. A lone
    surrogate (a model's JSON can hold one) becomes '?' too: no ledger, event or log line can carry it."""
    return _CONTROL.sub("?", text.encode("utf-8", "replace").decode())
