import { describe, expect, it } from "vitest";
import { compareProtoShapes, parseProtoSources, shapesOf } from "./proto-compare.js";

const upstream = `
syntax = "proto3";
package demo.v1;
import weak "gogoproto/gogo.proto";
import "google/protobuf/timestamp.proto";

service Things {
  rpc Get(GetRequest) returns (Thing);
  rpc Watch(GetRequest) returns (stream Thing);
}
enum Kind {
  option (gogoproto.goproto_enum_prefix) = false;
  UNKNOWN = 0;
  BIG = 1 [(gogoproto.enumvalue_customname) = "KindBig"];
}
message Thing {
  string name = 1 [(gogoproto.customname) = "Name"];
  Kind kind = 2;
  map<string, string> labels = 3;
  repeated Part parts = 4;
  google.protobuf.Timestamp created_at = 5 [(gogoproto.stdtime) = true, (gogoproto.nullable) = false];
  oneof value {
    string text = 6;
    int64 count = 7;
  }
  message Part { int32 size = 1; }
}
message GetRequest { string name = 1; }
message Unused { string x = 1; }
`;

function compare(ours: string, theirs: string = upstream) {
  return compareProtoShapes(
    shapesOf(parseProtoSources([{ path: "ours.proto", text: ours }])),
    shapesOf(parseProtoSources([{ path: "upstream.proto", text: theirs }])),
  );
}

/** Upstream without its gogoproto options, as our files are written. */
const ours = upstream
  .replace(/ \[\(gogoproto[^\]]*\]/g, "")
  .replace(/\s*option \(gogoproto[^;]*;/g, "")
  .replace(/import weak[^;]*;/, "");

describe("compareProtoShapes", () => {
  it("finds no difference between a file and its copy without custom options", () => {
    expect(ours).not.toContain("gogoproto");
    const result = compare(ours);
    expect(result.differences).toEqual([]);
    expect(result.extras).toEqual([]);
  });

  it("resolves nested and relative type names to full names", () => {
    const shapes = shapesOf(parseProtoSources([{ path: "u.proto", text: upstream }]));
    const thing = shapes.get("demo.v1.Thing");
    expect(thing?.kind).toBe("message");
    if (thing?.kind !== "message") return;
    expect(thing.fields.get("parts")).toMatchObject({
      type: "demo.v1.Thing.Part",
      label: "repeated",
    });
    expect(thing.fields.get("kind")?.type).toBe("demo.v1.Kind");
    expect(thing.fields.get("created_at")?.type).toBe("google.protobuf.Timestamp");
    expect(thing.fields.get("labels")).toMatchObject({ mapKey: "string", type: "string" });
    expect(thing.fields.get("text")?.oneof).toBe("value");
  });

  it("names a field whose number changed", () => {
    const result = compare(ours.replace("Kind kind = 2;", "Kind kind = 9;"));
    expect(result.differences).toEqual(["demo.v1.Thing.kind: number 9 in ours, 2 upstream"]);
  });

  it("names a field whose type, label, map key or oneof changed", () => {
    expect(
      compare(ours.replace("string name = 1;\n  Kind", "bytes name = 1;\n  Kind")).differences,
    ).toEqual(["demo.v1.Thing.name: type bytes in ours, string upstream"]);
    expect(compare(ours.replace("repeated Part parts", "Part parts")).differences).toEqual([
      "demo.v1.Thing.parts: label singular in ours, repeated upstream",
    ]);
    expect(compare(ours.replace("map<string, string>", "map<int64, string>")).differences).toEqual([
      "demo.v1.Thing.labels: mapKey int64 in ours, string upstream",
    ]);
    expect(compare(ours.replace("oneof value {", "oneof other {")).differences.sort()).toEqual([
      "demo.v1.Thing.count: oneof other in ours, value upstream",
      "demo.v1.Thing.text: oneof other in ours, value upstream",
    ]);
    expect(compare(ours.replace("Kind kind = 2;", "optional Kind kind = 2;")).differences).toEqual([
      "demo.v1.Thing.kind: label optional in ours, singular upstream",
    ]);
  });

  it("names a field referencing a message of another name", () => {
    const result = compare(
      `${ours}\nmessage Other { int32 size = 1; }`.replace(
        "repeated Part parts",
        "repeated Other parts",
      ),
    );
    expect(result.differences).toEqual([
      "demo.v1.Thing.parts: type demo.v1.Other in ours, demo.v1.Thing.Part upstream",
    ]);
    expect(result.extras).toEqual(["message demo.v1.Other"]);
  });

  it("reports a renamed field as a clash on its number", () => {
    const result = compare(ours.replace("Kind kind = 2;", "Kind sort = 2;"));
    expect(result.differences).toEqual([
      "demo.v1.Thing.kind: field 2 missing in ours",
      "demo.v1.Thing.sort: number 2 is kind upstream",
    ]);
  });

  it("names changed enum values and method signatures", () => {
    expect(compare(ours.replace("BIG = 1;", "BIG = 2;")).differences).toEqual([
      "demo.v1.Kind.BIG: 2 in ours, 1 upstream",
    ]);
    expect(compare(ours.replace("returns (stream Thing)", "returns (Thing)")).differences).toEqual([
      "demo.v1.Things.Watch: responseStream false in ours, true upstream",
    ]);
    expect(
      compare(ours.replace("rpc Get(GetRequest)", "rpc Get(stream GetRequest)")).differences,
    ).toEqual(["demo.v1.Things.Get: requestStream true in ours, false upstream"]);
    expect(compare(ours.replace("returns (Thing);", "returns (GetRequest);")).differences).toEqual([
      "demo.v1.Things.Get: responseType demo.v1.GetRequest in ours, demo.v1.Thing upstream",
    ]);
  });

  it("reports what only ours has as extras and what we lack as missing", () => {
    const result = compare(
      ours
        .replace("message Unused { string x = 1; }", "")
        .replace("BIG = 1;", "BIG = 1;\n  HUGE = 2;")
        .replace(
          "message GetRequest { string name = 1; }",
          "message GetRequest { string name = 1; bool all = 2; }",
        ),
    );
    expect(result.differences).toEqual([]);
    expect(result.extras).toEqual([
      "enum value demo.v1.Kind.HUGE = 2",
      "field demo.v1.GetRequest.all = 2",
    ]);
    expect(result.missing).toEqual(["message demo.v1.Unused"]);
  });

  it("counts a missing method or enum value as a difference", () => {
    expect(compare(ours.replace(/\s*rpc Watch[^;]*;/, "")).differences).toEqual([
      "demo.v1.Things.Watch: method missing in ours",
    ]);
    expect(compare(ours.replace(/\s*BIG = 1;/, "")).differences).toEqual([
      "demo.v1.Kind.BIG: missing in ours, 1 upstream",
    ]);
  });

  it("rejects a file that does not parse, naming it", () => {
    expect(() => parseProtoSources([{ path: "broken.proto", text: "message {" }])).toThrow(
      /broken\.proto/,
    );
  });
});
