// A restricted pickle reader: a stack machine over the opcodes torch.save emits that builds plain
// values and never executes anything. Every global a pickle names, every call it asks for and every
// persistent id goes through the caller's hooks, which decide what (if anything) they mean.

import { CheckpointError } from "./types.ts";

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

export class PyDict {
  readonly map = new Map<PyValue, PyValue>();
}

/** A global (module + name) the hooks accepted; it stays a name, nothing is imported or run. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** What the hooks return for calls and persistent ids: values the caller defines. */
export type PyOpaque = { readonly opaque: true };

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyTuple
  | PyDict
  | PyGlobal
  | PyOpaque;

export interface UnpickleHooks {
  /** Accept a global (returning the value it stands for) or throw. */
  global(module: string, name: string): PyValue;
  /** REDUCE, NEWOBJ, INST, OBJ: what calling `callable` with `args` stands for, or throw. */
  call(callable: PyValue, args: PyValue[]): PyValue;
  /** BINPERSID: the object a persistent id refers to. */
  persistent(pid: PyValue): PyValue;
}

/** Parse `data` (a whole pickle) into its value. `label` prefixes error messages. */
export function unpickle(data: Uint8Array, hooks: UnpickleHooks, label: string): PyValue {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let stack: PyValue[] = [];
  const markStack: PyValue[][] = [];
  const memo = new Map<number, PyValue>();
  let pos = 0;

  const fail = (what: string): never => {
    throw new CheckpointError(`${label}: ${what}; the checkpoint is corrupt or not a torch.save file`);
  };
  const need = (n: number) => {
    if (pos + n > data.length) fail(`pickle ends early at byte ${data.length}`);
  };
  const u8 = () => (need(1), data[pos++]);
  const u16 = () => (need(2), pos += 2, view.getUint16(pos - 2, true));
  const u32 = () => (need(4), pos += 4, view.getUint32(pos - 4, true));
  const i32 = () => (need(4), pos += 4, view.getInt32(pos - 4, true));
  const u64 = () => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) fail("pickle length field runs past the end");
    return Number(v);
  };
  const bytes = (n: number) => (need(n), pos += n, data.subarray(pos - n, pos));
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail("pickle ends inside a text argument");
    const s = latin1.decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const text = (n: number) => {
    try {
      return utf8.decode(bytes(n));
    } catch {
      return fail(`pickle string at byte ${pos - n} is not valid UTF-8`);
    }
  };
  const pop = (): PyValue => {
    if (stack.length === 0) fail(`pickle pops an empty stack at byte ${pos - 1}`);
    return stack.pop()!;
  };
  const top = (): PyValue => {
    if (stack.length === 0) fail(`pickle reads an empty stack at byte ${pos - 1}`);
    return stack[stack.length - 1];
  };
  const popMark = (): PyValue[] => {
    const items = stack;
    const previous = markStack.pop();
    if (previous === undefined) fail(`pickle closes a MARK that was never opened at byte ${pos - 1}`);
    stack = previous!;
    return items;
  };
  const memoGet = (key: number) => {
    if (!memo.has(key)) fail(`pickle refers to memo entry ${key} that was never stored`);
    return memo.get(key)!;
  };
  const argsOf = (v: PyValue): PyValue[] => {
    if (v instanceof PyTuple) return v.items;
    if (Array.isArray(v)) return v;
    return fail("pickle call arguments are not a tuple");
  };
  const intOf = (s: string): number | bigint => {
    const n = BigInt(s);
    return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
  };
  const longOf = (b: Uint8Array): number | bigint => {
    // Little-endian two's complement of any length.
    let n = 0n;
    for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]);
    if (b.length > 0 && (b[b.length - 1] & 0x80) !== 0) n -= 1n << BigInt(8 * b.length);
    return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
  };
  const setItems = (target: PyValue, items: PyValue[]) => {
    if (!(target instanceof PyDict)) return fail("pickle sets items on something that is not a dict");
    if (items.length % 2 !== 0) fail("pickle SETITEMS has an odd number of items");
    for (let i = 0; i < items.length; i += 2) target.map.set(items[i], items[i + 1]);
  };
  const appendItems = (target: PyValue, items: PyValue[]) => {
    if (!Array.isArray(target)) return fail("pickle appends to something that is not a list");
    for (const item of items) target.push(item); // push(...items) overflows the stack on a long MARK
  };

  while (true) {
    const at = pos;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail("pickle protocol is newer than 5");
        break;
      case 0x95: // FRAME: a length hint only
        u64();
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        markStack.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new PyDict());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new PyTuple([]));
        break;
      case 0x64: { // DICT
        const d = new PyDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x6c: { // LIST
        const items = popMark(); // before touching `stack`: popMark replaces it
        stack.push(items);
        break;
      }
      case 0x74: { // TUPLE
        const items = popMark();
        stack.push(new PyTuple(items));
        break;
      }
      case 0x85: // TUPLE1
        stack.push(new PyTuple([pop()]));
        break;
      case 0x86: { // TUPLE2
        const b = pop(), a = pop();
        stack.push(new PyTuple([a, b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop(), a = pop();
        stack.push(new PyTuple([a, b, c]));
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x70: // PUT
        memo.set(Number(line()), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
        stack.push(memoGet(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(memoGet(u32()));
        break;
      case 0x67: // GET
        stack.push(memoGet(Number(line())));
        break;
      case 0x58: // BINUNICODE
        stack.push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(text(u64()));
        break;
      case 0x54: { // BINSTRING (python 2 str): signed length
        const n = i32();
        if (n < 0) fail("pickle BINSTRING has a negative length");
        stack.push(latin1.decode(bytes(n)));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1.decode(bytes(u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        stack.push(bytes(u64()).slice());
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(longOf(bytes(u8())));
        break;
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0) fail("pickle LONG4 has a negative length");
        stack.push(longOf(bytes(n)));
        break;
      }
      case 0x49: { // INT (text): "00"/"01" are False/True in protocol 0
        const s = line();
        stack.push(s === "00" ? false : s === "01" ? true : intOf(s));
        break;
      }
      case 0x4c: // LONG (text, trailing L)
        stack.push(intOf(line().replace(/L$/, "")));
        break;
      case 0x47: // BINFLOAT: big-endian double
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x46: // FLOAT (text)
        stack.push(Number(line()));
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x63: { // GLOBAL: "module\nname\n"
        const module = line();
        const name = line();
        stack.push(hooks.global(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== "string" || typeof name !== "string") fail("pickle STACK_GLOBAL names are not strings");
        stack.push(hooks.global(module as string, name as string));
        break;
      }
      case 0x69: { // INST: class named inline, arguments since MARK
        const module = line();
        const name = line();
        const cls = hooks.global(module, name);
        const args = popMark();
        stack.push(hooks.call(cls, args));
        break;
      }
      case 0x6f: { // OBJ: class and arguments since MARK
        const items = popMark();
        if (items.length === 0) fail("pickle OBJ without a class");
        stack.push(hooks.call(items[0], items.slice(1)));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), callable = pop();
        stack.push(hooks.call(callable, argsOf(args)));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop(), cls = pop();
        stack.push(hooks.call(cls, argsOf(args)));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop(), args = pop(), cls = pop();
        if (!(kwargs instanceof PyDict) || kwargs.map.size !== 0) fail("pickle NEWOBJ_EX passes keyword arguments");
        stack.push(hooks.call(cls, argsOf(args)));
        break;
      }
      case 0x62: // BUILD: sets attributes (a state dict's _metadata, a Parameter's __dict__); not needed, dropped
        pop();
        top();
        break;
      case 0x73: { // SETITEM
        const value = pop(), key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: { // APPEND
        const value = pop();
        appendItems(top(), [value]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x51: // BINPERSID
        stack.push(hooks.persistent(pop()));
        break;
      default:
        throw new CheckpointError(
          `${label}: pickle opcode 0x${op.toString(16).padStart(2, "0")} at byte ${at} is not one torch.save uses, ` +
            `so this reader does not run it; re-save the weights with torch.save or as safetensors`,
        );
    }
  }
}
