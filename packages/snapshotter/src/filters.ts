import { ErrorCode, SnapshotterError } from "./errors.js";
import type { Info } from "./types.js";

/**
 * containerd's filter syntax (package `filters`):
 *
 *     filters  := selector {"," selector}          (all must match)
 *     selector := fieldpath [operator value]       (no operator: the field is present)
 *     fieldpath:= field {"." field}
 *     field    := [A-Za-z0-9_-]+ | "quoted"
 *     operator := "==" | "!=" | "~=" (regexp) | "@=" (contains)
 *     value    := quoted ("...", /.../ or |...|) | run of characters without "," or space
 *
 * Several filter strings are OR'ed; no filter (or only empty strings) matches everything.
 */

/** Returns the value of a field and whether it is present. */
export type FieldAdaptor = (fieldPath: readonly string[]) => { value: string; present: boolean };

export interface Filter {
  match(adaptor: FieldAdaptor): boolean;
}

type Operator = "present" | "==" | "!=" | "~=" | "@=";

interface Selector {
  fieldPath: string[];
  operator: Operator;
  value: string;
  regExp?: RegExp;
}

const always: Filter = { match: () => true };

type TokenKind = "eof" | "quoted" | "value" | "field" | "separator" | "operator" | "illegal";

interface Token {
  kind: TokenKind;
  text: string;
  position: number;
}

const isFieldChar = (c: string) => /^[A-Za-z0-9_-]$/.test(c);
const isOperatorChar = (c: string) => c === "=" || c === "!" || c === "~" || c === "@";
const isQuoteChar = (c: string) => c === '"' || c === "/" || c === "|";
const isSeparatorChar = (c: string) => c === "," || c === ".";
const isSpace = (c: string) => /^\s$/u.test(c);
const isValueChar = (c: string) => c !== "," && !isSpace(c);

class Scanner {
  private position = 0;
  private valueMode = false;
  private readonly chars: string[];

  constructor(input: string) {
    this.chars = [...input];
  }

  private peekChar(): string | undefined {
    return this.chars[this.position];
  }

  scan(): Token {
    while (this.position < this.chars.length && isSpace(this.chars[this.position]!)) {
      this.position++;
    }
    const start = this.position;
    const c = this.peekChar();
    if (c === undefined) return { kind: "eof", text: "", position: start };
    if (c === "\0") return { kind: "illegal", text: c, position: start };
    if (isQuoteChar(c)) {
      this.position++;
      while (true) {
        const next = this.peekChar();
        if (next === undefined || next === "\n") {
          return { kind: "illegal", text: this.slice(start), position: start };
        }
        this.position++;
        if (next === "\\") {
          if (this.peekChar() === undefined) {
            return { kind: "illegal", text: this.slice(start), position: start };
          }
          this.position++;
        } else if (next === c) {
          break;
        }
      }
      this.valueMode = false;
      return { kind: "quoted", text: this.slice(start), position: start };
    }
    if (isSeparatorChar(c)) {
      this.position++;
      this.valueMode = false;
      return { kind: "separator", text: c, position: start };
    }
    if (isOperatorChar(c)) {
      while (this.peekChar() !== undefined && isOperatorChar(this.peekChar()!)) this.position++;
      this.valueMode = true;
      return { kind: "operator", text: this.slice(start), position: start };
    }
    if (this.valueMode) {
      while (this.peekChar() !== undefined && isValueChar(this.peekChar()!)) this.position++;
      this.valueMode = false;
      return { kind: "value", text: this.slice(start), position: start };
    }
    if (isFieldChar(c)) {
      while (this.peekChar() !== undefined && isFieldChar(this.peekChar()!)) this.position++;
      return { kind: "field", text: this.slice(start), position: start };
    }
    this.position++;
    return { kind: "illegal", text: c, position: start };
  }

  peek(): Token {
    const position = this.position;
    const valueMode = this.valueMode;
    const token = this.scan();
    this.position = position;
    this.valueMode = valueMode;
    return token;
  }

  private slice(start: number): string {
    return this.chars.slice(start, this.position).join("");
  }
}

function parseError(input: string, position: number, message: string): SnapshotterError {
  return new SnapshotterError(
    ErrorCode.InvalidArgument,
    `filter ${JSON.stringify(input)}: ${message} at position ${position}`,
  );
}

/** Unquotes a quoted token with Go's escapes; the quote itself may be escaped. */
function unquote(input: string, token: Token): string {
  const chars = [...token.text];
  const quote = chars[0]!;
  let result = "";
  for (let index = 1; index < chars.length - 1; index++) {
    const c = chars[index]!;
    if (c !== "\\") {
      result += c;
      continue;
    }
    const escaped = chars[++index];
    const simple: Record<string, string> = {
      a: "\x07",
      b: "\b",
      f: "\f",
      n: "\n",
      r: "\r",
      t: "\t",
      v: "\v",
      "\\": "\\",
    };
    if (escaped === undefined) break;
    if (escaped === quote) {
      result += quote;
    } else if (simple[escaped] !== undefined) {
      result += simple[escaped];
    } else {
      const digits: Record<string, [number, number]> = { x: [16, 2], u: [16, 4], U: [16, 8] };
      let base: number;
      let count: number;
      let text: string;
      if (/^[0-7]$/.test(escaped)) {
        [base, count] = [8, 3];
        text = chars.slice(index, index + count).join("");
        index += count - 1;
      } else if (digits[escaped] !== undefined) {
        [base, count] = digits[escaped];
        text = chars.slice(index + 1, index + 1 + count).join("");
        index += count;
      } else {
        throw parseError(input, token.position, `illegal escape sequence "\\${escaped}"`);
      }
      const pattern = base === 8 ? /^[0-7]+$/ : /^[0-9A-Fa-f]+$/;
      if (text.length !== count || !pattern.test(text)) {
        throw parseError(input, token.position, "illegal numeric escape sequence");
      }
      const codePoint = Number.parseInt(text, base);
      if (codePoint > 0x10ffff) throw parseError(input, token.position, "escape out of range");
      result += String.fromCodePoint(codePoint);
    }
  }
  return result;
}

/** Compiles a Go (RE2) regular expression as far as JavaScript allows: leading `(?flags)`. */
function compileRegExp(input: string, token: Token, source: string): RegExp {
  let flags = "u";
  let body = source;
  const flagGroup = /^\(\?([imsU]+)\)/.exec(source);
  if (flagGroup !== null) {
    for (const flag of flagGroup[1]!) {
      if (flag === "i" || flag === "m" || flag === "s") flags += flag;
      else throw parseError(input, token.position, `unsupported regexp flag "${flag}"`);
    }
    body = source.slice(flagGroup[0].length);
  }
  try {
    return new RegExp(body, flags);
  } catch (error) {
    throw parseError(
      input,
      token.position,
      `invalid regexp ${JSON.stringify(source)}: ${String(error)}`,
    );
  }
}

function parseOne(input: string): Filter {
  const scanner = new Scanner(input);
  if (scanner.peek().kind === "eof") return always;
  const selectors: Selector[] = [];

  const field = (): string => {
    const token = scanner.scan();
    if (token.kind === "field") return token.text;
    if (token.kind === "quoted") {
      if (!token.text.startsWith('"')) {
        throw parseError(input, token.position, 'field names may only be quoted with "');
      }
      return unquote(input, token);
    }
    throw parseError(input, token.position, `expected a field, got ${JSON.stringify(token.text)}`);
  };

  const selector = (): Selector => {
    const fieldPath = [field()];
    while (true) {
      const next = scanner.peek();
      if (next.kind === "separator" && next.text === ".") {
        scanner.scan();
        fieldPath.push(field());
        continue;
      }
      break;
    }
    const next = scanner.peek();
    if (next.kind === "eof" || (next.kind === "separator" && next.text === ",")) {
      return { fieldPath, operator: "present", value: "" };
    }
    const operatorToken = scanner.scan();
    if (operatorToken.kind !== "operator") {
      throw parseError(
        input,
        operatorToken.position,
        `expected an operator, got ${JSON.stringify(operatorToken.text)}`,
      );
    }
    const operator = operatorToken.text;
    if (operator !== "==" && operator !== "!=" && operator !== "~=" && operator !== "@=") {
      throw parseError(
        input,
        operatorToken.position,
        `unknown operator ${JSON.stringify(operator)}`,
      );
    }
    const valueToken = scanner.scan();
    let value: string;
    if (valueToken.kind === "value" || valueToken.kind === "field") value = valueToken.text;
    else if (valueToken.kind === "quoted") value = unquote(input, valueToken);
    else {
      throw parseError(
        input,
        valueToken.position,
        `expected a value, got ${JSON.stringify(valueToken.text)}`,
      );
    }
    if (operator === "~=") {
      return { fieldPath, operator, value, regExp: compileRegExp(input, valueToken, value) };
    }
    return { fieldPath, operator, value };
  };

  selectors.push(selector());
  while (true) {
    const token = scanner.scan();
    if (token.kind === "eof") break;
    if (token.kind === "separator" && token.text === ",") {
      selectors.push(selector());
      continue;
    }
    throw parseError(
      input,
      token.position,
      `expected "," or end, got ${JSON.stringify(token.text)}`,
    );
  }
  return { match: (adaptor) => selectors.every((s) => matchSelector(s, adaptor)) };
}

function matchSelector(selector: Selector, adaptor: FieldAdaptor): boolean {
  const { value, present } = adaptor(selector.fieldPath);
  switch (selector.operator) {
    case "present":
      return present;
    case "==":
      return present && value === selector.value;
    case "!=":
      return value !== selector.value;
    case "@=":
      return value.includes(selector.value);
    case "~=":
      return selector.regExp!.test(value);
  }
}

/**
 * Parses filter strings: each one is a conjunction of selectors, the strings are OR'ed. An
 * empty list, or a list of empty strings, matches everything. Throws InvalidArgument.
 */
export function parseFilters(filters: readonly string[]): Filter {
  const parsed = filters.map(parseOne);
  if (parsed.length === 0 || parsed.includes(always)) return always;
  return { match: (adaptor) => parsed.some((filter) => filter.match(adaptor)) };
}

/** The fields of a snapshot Info as containerd's snapshot filters see them. */
export function infoAdaptor(info: Info): FieldAdaptor {
  return (fieldPath) => {
    const absent = { value: "", present: false };
    switch (fieldPath[0]) {
      case "kind":
        return { value: info.kind, present: true };
      case "name":
        return { value: info.name, present: true };
      case "parent":
        return { value: info.parent, present: true };
      case "labels": {
        if (fieldPath.length < 2) return absent;
        const key = fieldPath.slice(1).join(".");
        if (!Object.hasOwn(info.labels, key)) return absent;
        return { value: info.labels[key]!, present: true };
      }
      default:
        return absent;
    }
  };
}
