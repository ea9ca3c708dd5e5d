import { describe, expect, it } from "vitest";
import { NameError, parseImageName } from "./names.js";

/** A Nix antiquotation that would read a secret if it were ever evaluated. */
const SHADOW = ["$", "{builtins.readFile /etc/shadow}"].join("");

describe("parseImageName", () => {
  it("takes each component as a package and an arm64 first component as the platform", () => {
    expect(parseImageName("hello/busybox", "amd64")).toEqual({
      repository: "hello/busybox",
      platform: "amd64",
      platformExplicit: false,
      packages: ["hello", "busybox"],
    });
    expect(parseImageName("arm64/shell/git", "amd64")).toMatchObject({
      platform: "arm64",
      platformExplicit: true,
      packages: ["shell", "git"],
    });
    // `arm64` alone is a package name, not a platform with no packages.
    expect(parseImageName("arm64", "amd64")).toMatchObject({
      platform: "amd64",
      packages: ["arm64"],
    });
    expect(parseImageName("git/git/htop", "amd64").packages).toEqual(["git", "htop"]);
    expect(parseImageName("python3_12/node-22/a__b", "amd64").packages).toEqual([
      "python3_12",
      "node-22",
      "a__b",
    ]);
  });

  const hostile: [string, string, RegExp][] = [
    ["a path escape", "../etc", /not a top-level attribute name/],
    ["a dot component", "hello/./busybox", /not a top-level attribute name/],
    ["an antiquotation", SHADOW, /not a top-level attribute name/],
    ["a double quote", 'a"b', /not a top-level attribute name/],
    ["a Nix quote", "a'b", /not a top-level attribute name/],
    ["an attribute path", "pkgs.hello", /not a top-level attribute name/],
    ["upper case", "Hello", /not a top-level attribute name/],
    ["a leading digit", "7zip", /not a top-level attribute name/],
    ["a leading underscore", "_private", /not a top-level attribute name/],
    ["a space", "a b", /not a top-level attribute name/],
    ["an empty component", "hello//busybox", /empty path component/],
    ["a trailing separator", "hello-", /not a top-level attribute name/],
    ["a 10 KB name", "a".repeat(10_000), /longer than 255/],
    ["500 components", Array(500).fill("a").join("/"), /longer than 255|500 packages/],
    ["40 components", Array(40).fill("a").join("/"), /40 packages in one name; at most 32/],
    ["a 101-character component", "a".repeat(101), /101 characters long; at most 100/],
  ];
  for (const [what, name, message] of hostile) {
    it(`refuses ${what}`, () => {
      expect(() => parseImageName(name, "amd64")).toThrow(NameError);
      expect(() => parseImageName(name, "amd64")).toThrow(message);
    });
  }

  it("quotes the refused name truncated", () => {
    try {
      parseImageName(`${"x".repeat(90)}"`, "amd64");
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).toContain(`"${"x".repeat(64)}..."`);
    }
  });
});
