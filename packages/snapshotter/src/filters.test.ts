import { describe, expect, it } from "vitest";
import { ErrorCode, SnapshotterError } from "./errors.js";
import { infoAdaptor, parseFilters } from "./filters.js";
import { type Info, Kind } from "./types.js";

const base = { created: new Date(0), updated: new Date(0) };
const infos: Info[] = [
  { ...base, kind: Kind.Committed, name: "base", parent: "", labels: { "a.b": "1", x: "" } },
  { ...base, kind: Kind.Active, name: "work", parent: "base", labels: { "a.b": "2", c: "v,w" } },
  { ...base, kind: Kind.View, name: "look", parent: "base", labels: {} },
];

function names(filters: string[]): string[] {
  const filter = parseFilters(filters);
  return infos.filter((info) => filter.match(infoAdaptor(info))).map((info) => info.name);
}

describe("parseFilters", () => {
  it("matches everything without filters or with empty strings", () => {
    expect(names([])).toEqual(["base", "work", "look"]);
    expect(names([""])).toEqual(["base", "work", "look"]);
    expect(names(["  "])).toEqual(["base", "work", "look"]);
  });

  it("compares name, parent and kind", () => {
    expect(names(["name==work"])).toEqual(["work"]);
    expect(names(["parent==base"])).toEqual(["work", "look"]);
    expect(names(["kind==committed"])).toEqual(["base"]);
    expect(names(["kind!=committed"])).toEqual(["work", "look"]);
    expect(names(['parent==""'])).toEqual(["base"]);
  });

  it("reads quoted label keys containing dots", () => {
    expect(names(['labels."a.b"==2'])).toEqual(["work"]);
    // Unquoted, the key parts are joined back with dots, as containerd's adaptor does.
    expect(names(["labels.a.b==1"])).toEqual(["base"]);
  });

  it("tests presence, including labels whose value is empty", () => {
    expect(names(['labels."a.b"'])).toEqual(["base", "work"]);
    expect(names(["labels.x"])).toEqual(["base"]);
    expect(names(["labels.missing"])).toEqual([]);
  });

  it("treats != on a missing field as a match, == as no match", () => {
    expect(names(["labels.c!=v,w"])).toEqual([]); // comma splits: labels.c!=v AND w (absent)
    expect(names(['labels.c!="v,w"'])).toEqual(["base", "look"]);
    expect(names(['labels.c=="v,w"'])).toEqual(["work"]);
  });

  it("ANDs selectors within a string and ORs strings", () => {
    expect(names(["kind==view,parent==base"])).toEqual(["look"]);
    expect(names(["kind==view,parent==nothing"])).toEqual([]);
    expect(names(["name==base", "name==look"])).toEqual(["base", "look"]);
  });

  it("matches regular expressions with any quote style", () => {
    expect(names(["name~=^(wo|lo)"])).toEqual(["work", "look"]);
    expect(names(["name~=/^b.*e$/"])).toEqual(["base"]);
    expect(names(["name~=|^l|"])).toEqual(["look"]);
    expect(names(["name~=(?i)^BASE$"])).toEqual(["base"]);
    expect(names(["name@=oo"])).toEqual(["look"]);
  });

  it("unquotes Go escapes", () => {
    const filter = parseFilters(['name=="\\x77ork"']);
    expect(filter.match(infoAdaptor(infos[1]!))).toBe(true);
  });

  it.each([
    "name==",
    "==x",
    "name=x",
    "name===x",
    "name==x,",
    ",name==x",
    "name x",
    'labels."unterminated',
    "name~=(",
    "labels./a/==b",
    'name=="\\q"',
    "name\u0000==x",
    "name==x y",
  ])("rejects %j with InvalidArgument", (input) => {
    let caught: unknown;
    try {
      parseFilters([input]);
    } catch (error) {
      caught = error;
    }
    expect(SnapshotterError.is(caught, ErrorCode.InvalidArgument)).toBe(true);
    expect((caught as Error).message).toContain(JSON.stringify(input));
  });
});
