"""`python -m nexus.kernel.bridge` prints the bridge protocol's JSON Schema
(regenerate proto/bridge/lines.schema.json with it; a test fails when they drift)."""

import json
import sys

from nexus.kernel.bridge.protocol import json_schema

json.dump(json_schema(), sys.stdout, indent=2)
sys.stdout.write("\n")
