#!/usr/bin/env node
'use strict';
/**
 * Example JavaScript agent for the Nexus kernel: a calculator.
 *
 * Payloads it understands (any message kind):
 *   {"operation": "add" | "sub" | "mul" | "div", "a": 40, "b": 2}  -> {"result": 42}
 *   {"echo": anything}                                              -> {"echo": anything}
 * Anything else gets {"error": "..."} back. Run it under a kernel:
 *
 *   agent_id = await spawn_bridge(kernel, ["node", "examples/bridges/js/example_agent.js"])
 */

const { Agent, run } = require('./nexus_bridge');

const OPERATIONS = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
};

class Calculator extends Agent {
  async handle(message) {
    const payload = message.payload && typeof message.payload === 'object' ? message.payload : {};
    if ('echo' in payload) return { echo: payload.echo };
    const operation = OPERATIONS[payload.operation];
    if (!operation) return { error: `unknown operation ${JSON.stringify(payload.operation)}` };
    return { result: operation(payload.a, payload.b), agent: this.name };
  }
}

if (require.main === module) {
  run(new Calculator('js-calculator'));
}

module.exports = { Calculator };
