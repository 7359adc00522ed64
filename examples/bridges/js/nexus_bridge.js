#!/usr/bin/env node
'use strict';
/**
 * Nexus agent-side bridge for JavaScript (Node 20, no npm dependencies).
 *
 * The kernel starts this program and speaks the bridge protocol (proto/bridge/README.md)
 * over stdin/stdout: one JSON object per line. stdout belongs to the protocol; write
 * diagnostics to stderr (the kernel logs them).
 *
 *   const { Agent, run } = require('./nexus_bridge');
 *   class Adder extends Agent {
 *     async handle(message) { return { sum: message.payload.a + message.payload.b }; }
 *   }
 *   run(new Adder('adder'));
 *
 * `handle` may return null/undefined (no reply), a payload (sent back as a Response to the
 * sender) or a Message (sent as is). It may also `await this.bridge.ask(...)` or call
 * `this.bridge.send(...)` to reach other agents through the kernel.
 */

const crypto = require('crypto');

const Kind = Object.freeze({ COMMAND: 'Command', EVENT: 'Event', QUERY: 'Query', RESPONSE: 'Response' });
const AGENT_ID_ENV = 'NEXUS_AGENT_ID';
const PREFIX = crypto.randomBytes(6).toString('hex');
let counter = 0;

function newId() {
  counter += 1;
  return PREFIX + counter.toString(16).padStart(10, '0');
}

class Message {
  constructor({ from, to, kind, payload = null, id, timestamp, conversation_id = null, reply_to = null, trace_id = null }) {
    this.from = from;
    this.to = to;
    this.kind = kind;
    this.payload = payload;
    this.id = id || newId();
    this.timestamp = timestamp === undefined || timestamp === null ? Date.now() / 1000 : timestamp;
    this.conversation_id = conversation_id;
    this.reply_to = reply_to;
    this.trace_id = trace_id;
  }

  /** A Response to this message: back to its sender, same conversation and trace. */
  reply(from, payload = null) {
    return new Message({
      from,
      to: this.from,
      kind: Kind.RESPONSE,
      payload,
      conversation_id: this.conversation_id || this.id,
      reply_to: this.id,
      trace_id: this.trace_id,
    });
  }

  toJSON() {
    const out = { id: this.id, timestamp: this.timestamp, from: this.from, to: this.to, kind: this.kind };
    if (this.payload !== null && this.payload !== undefined) out.payload = this.payload;
    for (const key of ['conversation_id', 'reply_to', 'trace_id']) {
      if (this[key] !== null && this[key] !== undefined) out[key] = this[key];
    }
    return out;
  }
}

class Agent {
  /** Subclass and implement `async handle(message)`. `this.bridge` is set before onStart. */
  constructor(name, id) {
    this.name = name || this.constructor.name;
    this.id = id || process.env[AGENT_ID_ENV] || crypto.randomUUID();
    this.bridge = null;
  }

  async handle(message) { // eslint-disable-line no-unused-vars
    throw new Error('handle() must be implemented');
  }

  async onStart(bridge) {} // eslint-disable-line no-unused-vars

  async onStop() {}
}

class AskTimeout extends Error {}

const EOF = Symbol('eof');

class Bridge {
  constructor(agent, input = process.stdin, output = process.stdout) {
    this.agent = agent;
    this.input = input;
    this.output = output;
    this.inbox = [];
    this.head = 0;
    this.wakeup = null;
    this.pending = new Map();
    this.out = [];
    this.flushScheduled = false;
    this.buffer = '';
    this.malformed = 0;
  }

  emit(type, payload) {
    this.out.push(JSON.stringify({ type, payload }));
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush() {
    this.flushScheduled = false;
    if (this.out.length === 0) return true;
    const data = this.out.join('\n') + '\n';
    this.out = [];
    return this.output.write(data);
  }

  /** Send a message to another agent (through the kernel). */
  send(to, payload = null, kind = Kind.COMMAND, fields = {}) {
    const message = new Message({ ...fields, from: this.agent.id, to, kind, payload });
    this.emit('message', message);
    return message;
  }

  /** Send a message and wait for the message that replies to it. */
  ask(to, payload = null, timeoutMs = 30000, kind = Kind.QUERY, fields = {}) {
    const message = new Message({ ...fields, from: this.agent.id, to, kind, payload });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(message.id);
        reject(new AskTimeout(`no reply from ${to} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(message.id, (reply) => {
        clearTimeout(timer);
        this.pending.delete(message.id);
        resolve(reply);
      });
      this.emit('message', message);
    });
  }

  log(message, level = 'info') {
    this.emit('log', { level, message: String(message) });
  }

  data(chunk) {
    const lines = (this.buffer + chunk).split('\n');
    this.buffer = lines.pop();
    for (const line of lines) {
      if (line.trim()) this.line(line);
    }
    this.wake();
  }

  line(line) {
    try {
      const item = JSON.parse(line);
      if (item.type === 'message') {
        const p = item.payload;
        if (!p || typeof p.from !== 'string' || typeof p.to !== 'string' || typeof p.kind !== 'string') {
          throw new Error('message without from/to/kind');
        }
        const message = new Message(p);
        const waiter = message.reply_to ? this.pending.get(message.reply_to) : undefined;
        if (waiter) waiter(message);
        else this.inbox.push(message);
      } else if (item.type === 'shutdown') {
        this.inbox.push(EOF);
      } else {
        throw new Error(`unknown line type ${JSON.stringify(item.type)}`);
      }
    } catch (err) {
      this.malformed += 1;
      process.stderr.write(`nexus_bridge: skipping malformed line (${err.message}): ${line.slice(0, 200)}\n`);
    }
  }

  wake() {
    if (this.wakeup) {
      const w = this.wakeup;
      this.wakeup = null;
      w();
    }
  }

  async next() {
    while (this.head >= this.inbox.length) {
      this.inbox = [];
      this.head = 0;
      await new Promise((resolve) => { this.wakeup = resolve; });
    }
    const item = this.inbox[this.head];
    this.head += 1;
    return item;
  }

  async dispatch(message) {
    let result;
    try {
      result = await this.agent.handle(message);
    } catch (err) {
      process.stderr.write(`${err.stack || err}\n`);
      this.emit('error', { message_id: message.id, error: `${err.name}: ${err.message}` });
      return;
    }
    if (result === null || result === undefined) return;
    if (!(result instanceof Message)) result = message.reply(this.agent.id, result);
    this.emit(result.kind === Kind.RESPONSE ? 'response' : 'message', result);
  }

  async run() {
    this.input.setEncoding('utf8');
    this.input.on('data', (chunk) => this.data(chunk));
    this.input.on('end', () => { this.inbox.push(EOF); this.wake(); });
    const agent = this.agent;
    agent.bridge = this;
    this.emit('register', { id: agent.id, name: agent.name, protocol: 1 });
    this.flush();
    await agent.onStart(this);
    for (;;) {
      const item = await this.next();
      if (item === EOF) break;
      await this.dispatch(item);
      if (this.head >= this.inbox.length && !this.flush()) {
        // stdout is backed up: wait for it before taking more work (backpressure).
        await new Promise((resolve) => this.output.once('drain', resolve));
      }
    }
    await agent.onStop();
    this.flush();
    this.input.pause();
    this.input.destroy();
  }
}

function run(agent) {
  return new Bridge(agent).run().catch((err) => {
    process.stderr.write(`nexus_bridge: fatal: ${err.stack || err}\n`);
    process.exit(1);
  });
}

module.exports = { Agent, AskTimeout, Bridge, Kind, Message, run };
