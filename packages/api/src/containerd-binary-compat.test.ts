// Wire compatibility with the schemas compiled into containerd programs. A containerd binary
// carries the descriptor of every .proto it serves: containerd's own APIs, CRI runtime.v1 (of
// the cri-api version it vendors) and grpc.health.v1. Our generated descriptors (what
// protobuf-es encodes with) must agree with them on every definition both have. This also
// covers CRI, for which no .proto file is packaged.
//
// Binaries checked: `containerd` on PATH (Debian 12: 1.6.20, Debian 13: 1.7.24), and the ones that
// scripts/fetch-containerd.sh unpacks (bookworm: 1.6.x, trixie: 1.7.x, sid: 2.1.x), each when present.
import { existsSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { clone } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { generatedFiles } from "./generated-files.js";
import { extractFileDescriptors } from "./go-binary-descriptors.js";
import { compareProtoShapes, shapesOfDescriptors } from "./proto-compare.js";

function findProgram(name: string): string | undefined {
  const directories = (process.env.PATH ?? "").split(delimiter).concat(["/usr/bin", "/usr/sbin"]);
  return directories.map((directory) => join(directory, name)).find((path) => existsSync(path));
}

const cacheRoot = process.env.NIX_SNAPSHOTTER_TEST_CACHE ?? "/var/cache/nix-snapshotter-tests";
const binaries = [
  { label: "containerd on PATH", path: findProgram("containerd") },
  ...["bookworm", "trixie", "sid"].map((suite) => ({
    label: `containerd from Debian ${suite} (scripts/fetch-containerd.sh ${suite})`,
    path: join(cacheRoot, `containerd-${suite}`, "usr", "bin", "containerd"),
  })),
];

const partialServices = new Set(["runtime.v1.RuntimeService"]);

/**
 * What we leave out of the proto packages we define, by design: events, task metrics,
 * sandbox and introspection types, and the CRI calls we do not make. A missing definition
 * outside this list fails the test.
 */
const leftOut = [
  /^message containerd\.services\.images\.v1\.Image(Create|Update|Delete)$/,
  /^message containerd\.types\.(Metric|Envelope|Sandbox|Sandbox\.Runtime)$/,
  /^message containerd\.types\.Runtime(Request|Version|Info)$/,
  /^(message|enum|method) runtime\.v1\./,
];

const servicesWeSpeak = [
  "containerd.services.snapshots.v1.Snapshots",
  "containerd.services.content.v1.Content",
  "containerd.services.images.v1.Images",
  "containerd.services.leases.v1.Leases",
  "containerd.services.diff.v1.Diff",
  "containerd.services.namespaces.v1.Namespaces",
  "containerd.services.version.v1.Version",
  "runtime.v1.ImageService",
  "runtime.v1.RuntimeService",
  "grpc.health.v1.Health",
];

const ourFiles = generatedFiles().map((file) => file.proto);
const ours = shapesOfDescriptors(ourFiles);

for (const binary of binaries) {
  const present = binary.path !== undefined && existsSync(binary.path);
  describe.skipIf(!present)(`wire compatibility with ${binary.label}`, () => {
    const upstream = present
      ? shapesOfDescriptors(extractFileDescriptors(readFileSync(binary.path ?? "")))
      : new Map();

    it("finds the schemas of the services we speak in the binary", () => {
      for (const service of servicesWeSpeak) {
        expect(upstream.get(service)?.kind, service).toBe("service");
      }
    });

    it("agrees on every message, enum and method both define", () => {
      const result = compareProtoShapes(ours, upstream, { partialServices });
      console.info(
        `${binary.path}: ${result.extras.length} extras in ours:\n  ${result.extras.join("\n  ")}`,
      );
      expect(result.differences).toEqual([]);
      expect(
        result.missing.filter((entry) => !leftOut.some((pattern) => pattern.test(entry))),
      ).toEqual([]);
      // The CRI ImageService is complete; of RuntimeService, the pod lifecycle calls.
      expect(result.missing.filter((entry) => entry.includes("runtime.v1.ImageService"))).toEqual(
        [],
      );
      // Every message a CRI method of ours uses is ours too (nothing dangling).
      for (const entry of result.missing) {
        const name = entry.replace(/^\w+ /, "");
        expect(ours.has(name), name).toBe(false);
      }
    });

    it("names the field when one of our generated field numbers is changed", () => {
      const mutated = ourFiles.map((file) => clone(FileDescriptorProtoSchema, file));
      const cri = mutated.find((file) => file.package === "runtime.v1");
      const pull = cri?.messageType.find((message) => message.name === "PullImageRequest");
      const auth = pull?.field.find((field) => field.name === "auth");
      expect(auth?.number).toBe(2);
      if (auth !== undefined) {
        auth.number = 4;
      }
      const result = compareProtoShapes(shapesOfDescriptors(mutated), upstream, {
        partialServices,
      });
      expect(result.differences).toEqual([
        "runtime.v1.PullImageRequest.auth: number 4 in ours, 2 upstream",
      ]);
    });
  });
}
