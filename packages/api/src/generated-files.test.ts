import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { generatedFiles } from "./generated-files.js";
import {
  compareProtoShapes,
  parseProtoSources,
  shapesOf,
  shapesOfDescriptors,
} from "./proto-compare.js";
import { readProtoTree } from "./proto-files.js";

const sources = readProtoTree(fileURLToPath(new URL("../proto", import.meta.url)));

describe("generated code", () => {
  it("has one generated file per .proto file, each reachable from a subpath export", () => {
    expect(generatedFiles().map((file) => `${file.name}.proto`)).toEqual(
      sources.map((source) => source.path).sort((left, right) => left.localeCompare(right)),
    );
  });

  it("embeds exactly the definitions of the .proto sources", () => {
    const fromSources = shapesOf(parseProtoSources(sources));
    const fromGenerated = shapesOfDescriptors(generatedFiles().map((file) => file.proto));
    // The sources' side also holds the well-known types the parser adds.
    for (const name of fromSources.keys()) {
      if (name.startsWith("google.protobuf.")) {
        fromSources.delete(name);
      }
    }
    expect(fromGenerated.size).toBeGreaterThan(200);
    expect([...fromGenerated.keys()].sort()).toEqual([...fromSources.keys()].sort());
    const forward = compareProtoShapes(fromGenerated, fromSources);
    const backward = compareProtoShapes(fromSources, fromGenerated);
    expect(forward).toEqual({ differences: [], extras: [], missing: [] });
    expect(backward).toEqual({ differences: [], extras: [], missing: [] });
  });
});
