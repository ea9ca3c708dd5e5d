// Compares the wire-relevant shape of two sets of .proto files: full names, field numbers,
// field types, labels, oneofs, enum values, and service methods. Used by the compatibility
// test against the .proto files containerd ships; not part of the published API.
import protobuf from "protobufjs";

export interface ProtoSource {
  /** Name used in messages, e.g. the file's path. */
  readonly path: string;
  readonly text: string;
}

export interface FieldShape {
  readonly name: string;
  readonly number: number;
  /** `repeated`, `optional` (proto3 explicit presence) or `singular`. */
  readonly label: "repeated" | "optional" | "singular";
  /** Scalar name (`string`, `int64`, ...) or the full name of a message or enum. */
  readonly type: string;
  /** Key scalar of a map field; `undefined` otherwise. */
  readonly mapKey: string | undefined;
  /** Name of the real (non-synthetic) oneof the field belongs to. */
  readonly oneof: string | undefined;
}

export interface MessageShape {
  readonly kind: "message";
  readonly fullName: string;
  readonly fields: ReadonlyMap<string, FieldShape>;
}

export interface EnumShape {
  readonly kind: "enum";
  readonly fullName: string;
  readonly values: ReadonlyMap<string, number>;
}

export interface MethodShape {
  readonly name: string;
  readonly requestType: string;
  readonly responseType: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}

export interface ServiceShape {
  readonly kind: "service";
  readonly fullName: string;
  readonly methods: ReadonlyMap<string, MethodShape>;
}

export type DefinitionShape = MessageShape | EnumShape | ServiceShape;

/** Every message, enum and service of a set of files, by full name (no leading dot). */
export type ProtoShapes = Map<string, DefinitionShape>;

export interface ProtoComparison {
  /** Differences in definitions both sides have: each one breaks wire compatibility. */
  readonly differences: string[];
  /** Definitions, fields, enum values and methods only ours has (newer upstream versions). */
  readonly extras: string[];
  /** Definitions upstream has, in packages we define, that we do not define. */
  readonly missing: string[];
}

const wellKnownFiles = [
  "google/protobuf/any.proto",
  "google/protobuf/duration.proto",
  "google/protobuf/empty.proto",
  "google/protobuf/field_mask.proto",
  "google/protobuf/struct.proto",
  "google/protobuf/timestamp.proto",
  "google/protobuf/wrappers.proto",
];

/**
 * Parses .proto sources into one protobufjs root without following their imports (names are
 * resolved among the given files and the well-known types). Custom options such as gogoproto
 * are parsed and ignored.
 */
export function parseProtoSources(sources: readonly ProtoSource[]): protobuf.Root {
  const root = new protobuf.Root();
  for (const name of wellKnownFiles) {
    const json = protobuf.common.get(name);
    if (json?.nested !== undefined) {
      root.addJSON(json.nested);
    }
  }
  for (const source of sources) {
    try {
      protobuf.parse(source.text, root, { keepCase: true });
    } catch (error) {
      throw new Error(`cannot parse ${source.path}`, { cause: error });
    }
  }
  return root;
}

/** Extracts the wire-relevant shape of every definition in a parsed root. */
export function shapesOf(root: protobuf.Root): ProtoShapes {
  const shapes: ProtoShapes = new Map();
  const visit = (namespace: protobuf.NamespaceBase): void => {
    for (const nested of namespace.nestedArray) {
      if (nested instanceof protobuf.Type) {
        shapes.set(trimDot(nested.fullName), messageShape(nested));
      } else if (nested instanceof protobuf.Enum) {
        shapes.set(trimDot(nested.fullName), {
          kind: "enum",
          fullName: trimDot(nested.fullName),
          values: new Map(Object.entries(nested.values)),
        });
      } else if (nested instanceof protobuf.Service) {
        shapes.set(trimDot(nested.fullName), serviceShape(nested));
      }
      if (nested instanceof protobuf.Namespace) {
        visit(nested);
      }
    }
  };
  visit(root);
  return shapes;
}

function messageShape(type: protobuf.Type): MessageShape {
  const fields = new Map<string, FieldShape>();
  for (const field of type.fieldsArray) {
    const oneof = field.partOf;
    const synthetic = oneof !== null && oneof.name === `_${field.name}` && oneof.oneof.length === 1;
    const isMap = field instanceof protobuf.MapField;
    fields.set(field.name, {
      name: field.name,
      number: field.id,
      label: field.repeated || isMap ? "repeated" : synthetic ? "optional" : "singular",
      type: resolveTypeName(type, field.type),
      mapKey: isMap ? field.keyType : undefined,
      oneof: oneof !== null && !synthetic ? oneof.name : undefined,
    });
  }
  return { kind: "message", fullName: trimDot(type.fullName), fields };
}

function serviceShape(service: protobuf.Service): ServiceShape {
  const methods = new Map<string, MethodShape>();
  for (const method of service.methodsArray) {
    methods.set(method.name, {
      name: method.name,
      requestType: resolveTypeName(service, method.requestType),
      responseType: resolveTypeName(service, method.responseType),
      requestStream: method.requestStream === true,
      responseStream: method.responseStream === true,
    });
  }
  return { kind: "service", fullName: trimDot(service.fullName), methods };
}

const scalarTypes = new Set([
  "double",
  "float",
  "int32",
  "int64",
  "uint32",
  "uint64",
  "sint32",
  "sint64",
  "fixed32",
  "fixed64",
  "sfixed32",
  "sfixed64",
  "bool",
  "string",
  "bytes",
]);

/** A type reference as written, resolved with protobuf's scoping rules to a full name. */
function resolveTypeName(scope: protobuf.ReflectionObject, name: string): string {
  if (scalarTypes.has(name)) {
    return name;
  }
  const parent = scope instanceof protobuf.Namespace ? scope : scope.parent;
  const found = parent?.lookup(name, [protobuf.Type, protobuf.Enum]);
  // An unresolvable name is kept as written, marked, so that it never equals a resolved one.
  return found ? trimDot(found.fullName) : `unresolved:${name}`;
}

function trimDot(name: string): string {
  return name.startsWith(".") ? name.slice(1) : name;
}

function packageOf(shape: DefinitionShape, all: ProtoShapes): string {
  // The package is the longest prefix of the full name that is not itself a definition.
  const parts = shape.fullName.split(".");
  let end = parts.length - 1;
  while (end > 0 && all.has(parts.slice(0, end).join("."))) {
    end -= 1;
  }
  return parts.slice(0, end).join(".");
}

/**
 * Compares ours with upstream. Everything upstream has that we also define must be identical
 * on the wire; what only we have is reported as an extra.
 */
export function compareProtoShapes(ours: ProtoShapes, upstream: ProtoShapes): ProtoComparison {
  const differences: string[] = [];
  const extras: string[] = [];
  const missing: string[] = [];
  const ourPackages = new Set([...ours.values()].map((shape) => packageOf(shape, ours)));

  for (const [name, theirs] of upstream) {
    if (!ours.has(name) && ourPackages.has(packageOf(theirs, upstream))) {
      missing.push(`${theirs.kind} ${name}`);
    }
  }
  for (const [name, mine] of ours) {
    const theirs = upstream.get(name);
    if (theirs === undefined) {
      extras.push(`${mine.kind} ${name}`);
      continue;
    }
    if (mine.kind !== theirs.kind) {
      differences.push(`${name}: ${mine.kind} in ours, ${theirs.kind} upstream`);
      continue;
    }
    if (mine.kind === "message" && theirs.kind === "message") {
      compareMessages(mine, theirs, differences, extras);
    } else if (mine.kind === "enum" && theirs.kind === "enum") {
      compareEnums(mine, theirs, differences, extras);
    } else if (mine.kind === "service" && theirs.kind === "service") {
      compareServices(mine, theirs, differences, extras);
    }
  }
  return { differences, extras, missing };
}

function compareMessages(
  mine: MessageShape,
  theirs: MessageShape,
  differences: string[],
  extras: string[],
): void {
  for (const [fieldName, theirField] of theirs.fields) {
    const where = `${theirs.fullName}.${fieldName}`;
    const myField = mine.fields.get(fieldName);
    if (myField === undefined) {
      differences.push(`${where}: field ${theirField.number} missing in ours`);
      continue;
    }
    for (const key of ["number", "type", "label", "mapKey", "oneof"] as const) {
      if (myField[key] !== theirField[key]) {
        differences.push(
          `${where}: ${key} ${String(myField[key])} in ours, ${String(theirField[key])} upstream`,
        );
      }
    }
  }
  for (const [fieldName, myField] of mine.fields) {
    if (theirs.fields.has(fieldName)) {
      continue;
    }
    const clash = [...theirs.fields.values()].find((field) => field.number === myField.number);
    if (clash !== undefined) {
      differences.push(
        `${mine.fullName}.${fieldName}: number ${myField.number} is ${clash.name} upstream`,
      );
    } else {
      extras.push(`field ${mine.fullName}.${fieldName} = ${myField.number}`);
    }
  }
}

function compareEnums(
  mine: EnumShape,
  theirs: EnumShape,
  differences: string[],
  extras: string[],
): void {
  for (const [valueName, number] of theirs.values) {
    const myNumber = mine.values.get(valueName);
    if (myNumber !== number) {
      differences.push(
        `${theirs.fullName}.${valueName}: ${myNumber === undefined ? "missing" : myNumber} in ours, ${number} upstream`,
      );
    }
  }
  for (const [valueName, number] of mine.values) {
    if (!theirs.values.has(valueName)) {
      extras.push(`enum value ${mine.fullName}.${valueName} = ${number}`);
    }
  }
}

function compareServices(
  mine: ServiceShape,
  theirs: ServiceShape,
  differences: string[],
  extras: string[],
): void {
  for (const [methodName, theirMethod] of theirs.methods) {
    const where = `${theirs.fullName}.${methodName}`;
    const myMethod = mine.methods.get(methodName);
    if (myMethod === undefined) {
      differences.push(`${where}: method missing in ours`);
      continue;
    }
    for (const key of ["requestType", "responseType", "requestStream", "responseStream"] as const) {
      if (myMethod[key] !== theirMethod[key]) {
        differences.push(
          `${where}: ${key} ${String(myMethod[key])} in ours, ${String(theirMethod[key])} upstream`,
        );
      }
    }
  }
  for (const methodName of mine.methods.keys()) {
    if (!theirs.methods.has(methodName)) {
      extras.push(`method ${mine.fullName}.${methodName}`);
    }
  }
}
