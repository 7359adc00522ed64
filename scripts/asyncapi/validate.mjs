// Validates an AsyncAPI document with the official parser; prints every diagnostic as JSON lines
// and exits 1 when any is an error.   node validate.mjs <document>
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), { source: path });
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path.join(".") }));
}
console.log(JSON.stringify({ parsed: document !== undefined, errors: errors.length, diagnostics: diagnostics.length }));
process.exit(errors.length === 0 && document !== undefined ? 0 : 1);
