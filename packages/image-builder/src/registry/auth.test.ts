import { describe, expect, it } from "vitest";
import { mergeScopes } from "./auth.js";

describe("mergeScopes", () => {
  it("keeps ours when the challenge names no scope", () => {
    expect(mergeScopes(["repository:a:pull,push"], undefined)).toEqual(["repository:a:pull,push"]);
    expect(mergeScopes(["repository:a:pull"], "")).toEqual(["repository:a:pull"]);
  });

  it("treats the same actions in another order as the same scope", () => {
    expect(mergeScopes(["repository:a:pull,push"], "repository:a:push,pull")).toEqual([
      "repository:a:pull,push",
    ]);
  });

  it("adds the challenge's actions and resources to ours", () => {
    expect(
      mergeScopes(
        ["repository:app:pull", "repository:base:pull"],
        "repository:app:push repository:other:pull registry:catalog:*",
      ),
    ).toEqual([
      "repository:app:pull,push",
      "repository:base:pull",
      "repository:other:pull",
      "registry:catalog:*",
    ]);
  });

  it("keeps a repository name that has a port-like part intact", () => {
    expect(mergeScopes(["repository:host:5000/app:pull"], "repository:host:5000/app:push")).toEqual(
      ["repository:host:5000/app:pull,push"],
    );
  });
});
