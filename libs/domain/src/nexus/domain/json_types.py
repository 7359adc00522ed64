"""Names for values that really are arbitrary JSON: documents as stored, wire dicts, model arguments."""

from typing import Any, TypeAlias

# A JSON object decoded as it came (from the database, the wire or a model): its values are not typed.
JsonObject: TypeAlias = dict[str, Any]
