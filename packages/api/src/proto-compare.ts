// Compares the wire-relevant shape of two sets of .proto files: full names, field numbers,
// field types, labels, oneofs, enum values, and service methods. Used by the compatibility
// test against the .proto files containerd ships; not part of the published API.
import { isFieldSet } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldDescriptorProtoSchema,
  type FileDescriptorProto,
} from "@bufbuild/protobuf/wkt";
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

export interface CompareOptions {
  /**
   * Services we define only in part (CRI's RuntimeService): their methods we lack are reported
   * as missing, not as differences. The methods we do define must still be identical.
   */
  readonly partialServices?: ReadonlySet<string>;
}

export interface ProtoComparison {
  /** Differences in definitions both sides have: each one breaks wire compatibility. */
  readonly differences: string[];
  /** Definitions, fields, enum values and methods only ours has (newer upstream versions). */
  readonly extras: string[];
  /**
   * Definitions upstream has, in packages we define, that we do not define, and methods of
   * partial services we do not define.
   */
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

const scalarNames: ReadonlyMap<FieldDescriptorProto_Type, string> = new Map([
  [FieldDescriptorProto_Type.DOUBLE, "double"],
  [FieldDescriptorProto_Type.FLOAT, "float"],
  [FieldDescriptorProto_Type.INT64, "int64"],
  [FieldDescriptorProto_Type.UINT64, "uint64"],
  [FieldDescriptorProto_Type.INT32, "int32"],
  [FieldDescriptorProto_Type.FIXED64, "fixed64"],
  [FieldDescriptorProto_Type.FIXED32, "fixed32"],
  [FieldDescriptorProto_Type.BOOL, "bool"],
  [FieldDescriptorProto_Type.STRING, "string"],
  [FieldDescriptorProto_Type.BYTES, "bytes"],
  [FieldDescriptorProto_Type.UINT32, "uint32"],
  [FieldDescriptorProto_Type.SFIXED32, "sfixed32"],
  [FieldDescriptorProto_Type.SFIXED64, "sfixed64"],
  [FieldDescriptorProto_Type.SINT32, "sint32"],
  [FieldDescriptorProto_Type.SINT64, "sint64"],
]);

/**
 * Extracts the same shapes from compiled descriptors (`google.protobuf.FileDescriptorProto`),
 * as protoc-gen-es embeds them in generated code and Go programs embed them in their binaries.
 * Map entry messages are folded into their map fields, as in .proto syntax.
 */
export function shapesOfDescriptors(files: readonly FileDescriptorProto[]): ProtoShapes {
  const shapes: ProtoShapes = new Map();
  const visitEnum = (prefix: string, descriptor: EnumDescriptorProto): void => {
    const fullName = `${prefix}.${descriptor.name}`;
    shapes.set(fullName, {
      kind: "enum",
      fullName,
      values: new Map(descriptor.value.map((value) => [value.name, value.number])),
    });
  };
  const visitMessage = (prefix: string, descriptor: DescriptorProto): void => {
    const fullName = `${prefix}.${descriptor.name}`;
    const mapEntries = new Map<string, DescriptorProto>();
    for (const nested of descriptor.nestedType) {
      if (nested.options?.mapEntry === true) {
        mapEntries.set(`${fullName}.${nested.name}`, nested);
      } else {
        visitMessage(fullName, nested);
      }
    }
    for (const nested of descriptor.enumType) {
      visitEnum(fullName, nested);
    }
    const fields = new Map<string, FieldShape>();
    for (const field of descriptor.field) {
      const entry = mapEntries.get(trimDot(field.typeName));
      const oneof =
        isFieldSet(field, FieldDescriptorProtoSchema.field.oneofIndex) &&
        field.proto3Optional !== true
          ? descriptor.oneofDecl[field.oneofIndex]?.name
          : undefined;
      const key = entry?.field.find((entryField) => entryField.number === 1);
      const value = entry?.field.find((entryField) => entryField.number === 2);
      fields.set(field.name, {
        name: field.name,
        number: field.number,
        label:
          field.label === FieldDescriptorProto_Label.REPEATED
            ? "repeated"
            : field.proto3Optional === true
              ? "optional"
              : "singular",
        type: descriptorTypeName(value ?? field),
        mapKey: key === undefined ? undefined : descriptorTypeName(key),
        oneof,
      });
    }
    shapes.set(fullName, { kind: "message", fullName, fields });
  };
  for (const file of files) {
    const prefix = file.package;
    for (const message of file.messageType) {
      visitMessage(prefix, message);
    }
    for (const descriptor of file.enumType) {
      visitEnum(prefix, descriptor);
    }
    for (const service of file.service) {
      const fullName = `${prefix}.${service.name}`;
      const methods = new Map<string, MethodShape>();
      for (const method of service.method) {
        methods.set(method.name, {
          name: method.name,
          requestType: trimDot(method.inputType),
          responseType: trimDot(method.outputType),
          requestStream: method.clientStreaming === true,
          responseStream: method.serverStreaming === true,
        });
      }
      shapes.set(fullName, { kind: "service", fullName, methods });
    }
  }
  return shapes;
}

function descriptorTypeName(field: FieldDescriptorProto): string {
  return scalarNames.get(field.type) ?? trimDot(field.typeName);
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
export function compareProtoShapes(
  ours: ProtoShapes,
  upstream: ProtoShapes,
  options: CompareOptions = {},
): ProtoComparison {
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
      const partial = options.partialServices?.has(name) === true;
      compareServices(mine, theirs, { differences, extras, missing, partial });
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
  report: { differences: string[]; extras: string[]; missing: string[]; partial: boolean },
): void {
  const { differences, extras, missing, partial } = report;
  for (const [methodName, theirMethod] of theirs.methods) {
    const where = `${theirs.fullName}.${methodName}`;
    const myMethod = mine.methods.get(methodName);
    if (myMethod === undefined) {
      if (partial) {
        missing.push(`method ${where}`);
      } else {
        differences.push(`${where}: method missing in ours`);
      }
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
