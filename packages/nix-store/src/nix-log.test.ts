import { describe, expect, it } from "vitest";
import { NixLogParser, parsePlainLogLine, type RealiseProgress } from "./nix-log.js";

const path = "/nix/store/0c8q7j2v00d7h9kf8ys3vip9b4rv1j6r-x";
const json = (value: unknown) => `@nix ${JSON.stringify(value)}`;

describe("NixLogParser", () => {
  it("turns substitution and build activities into events", () => {
    const events: RealiseProgress[] = [];
    const parser = new NixLogParser((event) => events.push(event));
    parser.line(json({ action: "start", id: 1, type: 108, fields: [path, "http://cache"] }));
    parser.line(
      json({ action: "start", id: 2, type: 100, fields: [path, "http://cache", "local"] }),
    );
    parser.line(json({ action: "result", id: 2, type: 105, fields: [10, 20, 0, 0] }));
    parser.line(json({ action: "stop", id: 2 }));
    parser.line(json({ action: "stop", id: 1 }));
    parser.line(json({ action: "start", id: 3, type: 105, fields: ["/nix/store/d.drv", ""] }));
    parser.line(json({ action: "stop", id: 3 }));
    expect(events).toEqual([
      { type: "substitute-start", storePath: path, substituter: "http://cache" },
      { type: "download", storePath: path, done: 10, expected: 20 },
      { type: "substitute-end", storePath: path, substituter: "http://cache" },
      { type: "build-start", derivation: "/nix/store/d.drv" },
      { type: "build-end", derivation: "/nix/store/d.drv" },
    ]);
  });

  it("keeps error messages without colour codes, and plain lines, in the tail", () => {
    const parser = new NixLogParser(undefined, 3);
    parser.line(json({ action: "msg", level: 0, msg: "\u001b[31;1merror:\u001b[0m boom" }));
    parser.line(json({ action: "msg", level: 6, msg: "debug noise" }));
    parser.line("not json at all");
    parser.line("@nix {broken");
    expect(parser.stderrTail).toBe("error: boom\nnot json at all\n@nix {broken");
  });

  it("ignores stops of unknown activities", () => {
    const events: RealiseProgress[] = [];
    const parser = new NixLogParser((event) => events.push(event));
    parser.line(json({ action: "stop", id: 99 }));
    expect(events).toEqual([]);
  });
});

describe("parsePlainLogLine", () => {
  it("reads Nix's plain log", () => {
    expect(parsePlainLogLine(`copying path '${path}' from 'http://cache'...`)).toEqual({
      type: "substitute-start",
      storePath: path,
      substituter: "http://cache",
    });
    expect(parsePlainLogLine("building '/nix/store/d.drv'...")).toEqual({
      type: "build-start",
      derivation: "/nix/store/d.drv",
    });
    expect(parsePlainLogLine("something else")).toBeUndefined();
  });
});
