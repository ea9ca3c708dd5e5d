import { describe, expect, it } from "vitest";
import { parseChallenges } from "./challenge.js";

describe("parseChallenges", () => {
  it("reads a distribution Bearer challenge with a comma inside the quoted scope", () => {
    expect(
      parseChallenges(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
      ),
    ).toEqual([
      {
        scheme: "bearer",
        parameters: {
          realm: "https://auth.example/token",
          service: "registry.example",
          scope: "repository:a/b:pull,push",
        },
      },
    ]);
  });

  it("reads several challenges, token values, escapes and odd spacing", () => {
    expect(
      parseChallenges(
        'Basic realm="a \\"quoted\\" realm" , Bearer realm=https://x/t, error="insufficient_scope"',
      ),
    ).toEqual([
      { scheme: "basic", parameters: { realm: 'a "quoted" realm' } },
      {
        scheme: "bearer",
        parameters: { realm: "https://x/t", error: "insufficient_scope" },
      },
    ]);
  });

  it("lower-cases schemes and parameter names", () => {
    expect(parseChallenges('BEARER Realm="r"')).toEqual([
      { scheme: "bearer", parameters: { realm: "r" } },
    ]);
  });

  it("survives hostile input without throwing", () => {
    expect(parseChallenges("")).toEqual([]);
    expect(parseChallenges('Bearer realm="unterminated')).toEqual([
      { scheme: "bearer", parameters: {} },
    ]);
    expect(parseChallenges("=bad")).toEqual([]);
    expect(parseChallenges("Negotiate abc123==")).toEqual([
      { scheme: "negotiate", parameters: {} },
    ]);
    expect(parseChallenges(`Bearer ${"a=b,".repeat(10_000)}`)[0]?.parameters.a).toBe("b");
  });
});
